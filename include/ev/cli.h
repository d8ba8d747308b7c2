/*
 * cli.h - the commands of the `event-validator` binary (SPEC §2).
 *
 * src/main.c turns argv into one of these calls; everything a command does
 * lives here so it can be tested. Each command takes the loaded configuration
 * and, on failure, returns a negative EV_E* code with ONE line in `err` that
 * names the problem ("event 42 does not exist", "cannot read /x.pdf: No such
 * file or directory", "database unreachable: ..."); main prefixes it with the
 * program name and exits 1. Nothing is ever half-written: every command that
 * writes does so in one transaction.
 *
 * Commands run on the calling (main) thread; ev_cli_serve starts the worker
 * pool and must be called after curl_global_init() and
 * ev_signals_block_all(), before any other thread exists.
 */
#ifndef EV_CLI_H
#define EV_CLI_H

#include "ev/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* `migrate`: applies pending migrations; *applied (may be NULL) receives how
 * many were applied now. EV_EDBCONN, EV_EDB or EV_EVERSION on failure. */
int ev_cli_migrate(const ev_config_t *cfg, int *applied, char *err, size_t errlen);

/*
 * `healthcheck`: asks the local stats server (STATS_ADDR, wildcard meaning
 * loopback, and STATS_PORT) GET /livez, or /readyz when `ready`, within
 * timeout_ms (<= 0: 2 s). Returns 0 on a 200; EV_EHTTP for another status or
 * no answer, EV_ETIMEOUT when the answer took too long, EV_EINVAL when STATS_PORT is
 * 0. For container health checks: needs no database and no shell tools.
 * Call after curl_global_init(), before any thread.
 */
int ev_cli_healthcheck(const ev_config_t *cfg, bool ready, int timeout_ms, char *err,
                       size_t errlen);

typedef struct ev_cli_event_args {
    const char *name;  /* required, non-empty */
    const char *theme; /* required, non-empty */
    const char *rules; /* NULL: none */
    bool require_pdf;
    bool require_image;
    const char *budget_usd; /* decimal USD the event may spend in all; NULL: no budget */
} ev_cli_event_args_t;

/* `event add`: creates an event; *id receives its id. EV_EEXIST when the name
 * is taken, EV_EDBCONN, EV_EDB. */
int ev_cli_event_add(const ev_config_t *cfg, const ev_cli_event_args_t *args, int64_t *id,
                     char *err, size_t errlen);

typedef struct ev_cli_submit_args {
    int64_t event_id;
    const char *title;         /* required, non-empty */
    const char *description;   /* NULL: none */
    const char *pdf;           /* path or NULL */
    const char *const *images; /* nimages paths */
    size_t nimages;
    int priority;
} ev_cli_submit_args_t;

/*
 * `submit`: reads every file fully into memory (each size checked against
 * PDF_MAX_BYTES / IMAGE_MAX_BYTES before reading, the count against
 * MAX_IMAGES), then stores the submission and its files as bytea in one
 * transaction; *id receives the new submission's id. Refused before anything
 * is written: EV_EIO (missing/unreadable file), EV_ETOOBIG (oversized),
 * EV_ELIMIT (too many images), EV_ENOTFOUND (unknown event); also
 * EV_EDBCONN, EV_EDB.
 */
int ev_cli_submit(const ev_config_t *cfg, const ev_cli_submit_args_t *args, int64_t *id, char *err,
                  size_t errlen);

/*
 * `show`: *json receives one JSON object (one line, caller frees with free())
 * with id, event_id, title, description, priority, status, attempts,
 * last_error, created_at, updated_at and `checks`, an object keyed by check
 * name holding verdict, score, reason, provider, model, http_attempts,
 * latency_ms, tokens_in, tokens_out, cached. EV_ENOTFOUND for an unknown id.
 */
int ev_cli_show(const ev_config_t *cfg, int64_t id, char **json, char *err, size_t errlen);

/* `token create`: prints nothing itself; *token (caller frees, wipe after
 * printing) and *id receive the new token. See ev_tokens_create. */
int ev_cli_token_create(const ev_config_t *cfg, const char *name, bool admin, int64_t event_id,
                        char **token, int64_t *id, char *err, size_t errlen);
/* `token list`: *text receives the table (caller frees). */
int ev_cli_token_list(const ev_config_t *cfg, char **text, char *err, size_t errlen);
/* `token revoke ID`: EV_ENOTFOUND when no such token. */
int ev_cli_token_revoke(const ev_config_t *cfg, int64_t id, char *err, size_t errlen);

/* `webhooks list [--failed]`: *text receives the table (caller frees). */
int ev_cli_webhooks_list(const ev_config_t *cfg, bool failed_only, char **text, char *err,
                         size_t errlen);
/* `webhooks retry ID`: sends a failed delivery again. EV_ENOTFOUND when no
 * such delivery is failed or pending. */
int ev_cli_webhooks_retry(const ev_config_t *cfg, int64_t id, char *err, size_t errlen);

/*
 * `status`: the cluster as the database sees it, for an operator: replicas
 * (alive or not, version, heartbeat age), lease owners that are not
 * registered (replicas of an older version), queue counts, and per provider
 * the shared state and the limits in force (rate in force and ceiling, daily
 * count and cap, breaker, pause, disabled). *text (caller frees) is that
 * report as lines of text, or one JSON object when `json` is true.
 * EV_EDBCONN, EV_EDB, or EV_EVERSION when the database is not migrated.
 */
int ev_cli_status(const ev_config_t *cfg, bool json, char **text, char *err, size_t errlen);

typedef struct ev_cli_serve_args {
    bool drain;   /* exit once nothing is outstanding */
    int grace_ms; /* in-flight time allowed after SIGTERM; < 0: pool default */
} ev_cli_serve_args_t;

/*
 * `serve`: refuses to start (EV_EUNAVAIL) when no provider has a key; logs
 * the effective configuration; runs the pipeline in the worker pool until
 * SIGTERM/SIGINT, or until the queue is drained in drain mode; then stops
 * gracefully and returns 0. Starts and stops the signal thread itself.
 */
int ev_cli_serve(const ev_config_t *cfg, const ev_cli_serve_args_t *args, char *err, size_t errlen);

/*
 * `providers check`: asks every configured provider about every configured
 * model (metadata endpoints only: no generation quota is spent). *text gets
 * the table (caller frees); *ok is true when every check (theme, pdf, image)
 * has a model known to answer it. Returns 0, or EV_EUNAVAIL when no provider
 * has a key (err says so).
 */
int ev_cli_providers_check(const ev_config_t *cfg, char **text, bool *ok, char *err, size_t errlen);

#endif
