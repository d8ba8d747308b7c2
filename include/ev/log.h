/*
 * log.h - structured JSON-lines logging on stderr.
 *
 * One line per call: {"ts":"...","level":"info","msg":"...", <context>}.
 * Context is thread-local (submission id, check, provider, attempt) and is
 * added to every line the thread logs while it is set. Extra fields for a
 * single line go through ev_log_kv(). Helper modules (limiter, breaker,
 * parsers) never log: they return codes and their caller decides.
 * Never pass secrets or file contents. Thread-safe: each line is written with
 * one write(2) call.
 */
#ifndef EV_LOG_H
#define EV_LOG_H

#include <stdint.h>

typedef enum {
    EV_LOG_DEBUG = 0,
    EV_LOG_INFO,
    EV_LOG_WARN,
    EV_LOG_ERROR,
    EV_LOG_OFF
} ev_log_level_t;

/* Set the minimum level (process-wide; call from main before threads). */
void ev_log_set_level(ev_log_level_t level);
ev_log_level_t ev_log_get_level(void);
/* Parse "debug|info|warn|error|off"; returns 0 or EV_EINVAL. */
int ev_log_parse_level(ev_log_level_t *out, const char *s);
/* Redirect output to fd (default 2). For tests. */
void ev_log_set_fd(int fd);
/* Every later line carries "replica": id (NULL or "": none). Call from main
 * before any thread starts. Lines always carry "service" and "version". */
void ev_log_set_replica(const char *id);

void ev_log(ev_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like ev_log with extra string fields: pairs of (key, value), NULL-terminated.
 * Values are JSON-escaped; keys must be plain identifiers. */
void ev_log_kv(ev_log_level_t level, const char *msg, ...) __attribute__((sentinel));

/* Thread-local context. Pass 0/NULL/-1 to clear a field. Strings are copied. */
void ev_log_ctx_submission(int64_t submission_id);
void ev_log_ctx_check(const char *check);
void ev_log_ctx_provider(const char *provider);
void ev_log_ctx_attempt(int attempt);
void ev_log_ctx_worker(int worker);
void ev_log_ctx_clear(void);

#endif
