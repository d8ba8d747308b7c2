/*
 * stats_server.h - the operators' HTTP endpoint (SPEC §7).
 *
 *   GET /stats    JSON snapshot (ev_stats_snapshot_json) with the queue
 *                 counts, plus queue.age_s and ready
 *   GET /metrics  the same in Prometheus text format 0.0.4
 *   GET /livez    200 while the process runs (liveness; /healthz is the
 *                 same, kept for existing probes)
 *   GET /readyz   200 while the database is reachable and some LLM provider
 *                 can answer every check, else 503
 * HEAD is accepted wherever GET is; any other method on those paths is answered
 * 405 with an Allow header; any other path is answered 404.
 *
 * The server runs on libmicrohttpd's own threads, never on a worker thread.
 * It owns one database connection, used only by its own refresher thread,
 * which reads the queue counts at most once per refresh interval into a
 * cached snapshot; requests only ever read that cache, so a scrape storm
 * costs the database nothing and a hung database cannot stall a request.
 * Readiness means the last refresh succeeded and is not older than
 * ready_max_age_ms.
 */
#ifndef EV_STATS_SERVER_H
#define EV_STATS_SERVER_H

#include "ev/clock.h"
#include "ev/stats.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ev_stats_server ev_stats_server_t;

typedef struct ev_stats_server_options {
    const char *addr;         /* STATS_ADDR: numeric IPv4/IPv6 address or host name;
                                 NULL or "" = all IPv4 interfaces */
    int port;                 /* STATS_PORT; 0 = an ephemeral port (see _port()) */
    const char *database_url; /* libpq URI or conninfo; required */
    int refresh_interval_ms;  /* minimum time between two queue-count queries */
    int ready_max_age_ms;     /* readiness lapses when the last successful refresh is
                                 older than this; 0 = 3 x refresh interval, at least 5 s */
    int connect_timeout_s;    /* libpq connect_timeout unless the URL sets one */
    int query_timeout_ms;     /* statement_timeout of the server's own session */
    const ev_clock_t *clock;  /* schedules refreshes and ages; NULL = system clock */
    struct ev_spend *spend;   /* spend figures for /stats and /metrics; NULL: none */
    /* NULL, or whether some LLM provider can answer every check: while it
     * says false, /readyz answers 503. Called on a server thread. */
    bool (*providers_ready)(void *ctx);
    void *providers_ctx;
    struct ev_dashboard *dashboard; /* serves /dashboard...; NULL: 404 */
} ev_stats_server_options_t;

#define EV_STATS_SERVER_OPTIONS_INIT                                                               \
    {                                                                                              \
        "0.0.0.0", 8080, NULL, 2000, 0, 3, 5000, NULL, NULL, NULL, NULL, NULL                      \
    }

/*
 * Binds and starts serving; the first database refresh begins at once in
 * the background (requests before it completes see unknown queue counts and
 * /readyz answers 503). stats must outlive the server. Call from the main
 * thread: the server's threads are created with every signal blocked.
 * Returns 0 with *out set, EV_EINVAL for bad options (err explains; a bad
 * database URL is reported without echoing it), EV_EIO when the address
 * cannot be bound (err names it). *out is NULL on failure.
 */
int ev_stats_server_start(ev_stats_server_t **out, ev_stats_t *stats,
                          const ev_stats_server_options_t *opts, char *err, size_t errlen);

/* Stops serving (in-flight requests finish), stops the refresher (waiting at
 * most for a running query, bounded by the connect and query timeouts),
 * closes the database connection and frees the server. Accepts NULL. */
void ev_stats_server_stop(ev_stats_server_t *srv);

/* The TCP port actually bound (useful with port 0). */
int ev_stats_server_port(const ev_stats_server_t *srv);

/* Queue-count queries sent to the database so far (any thread). */
uint64_t ev_stats_server_db_queries(const ev_stats_server_t *srv);

/* Refresh attempts finished so far, successful or not (any thread). */
uint64_t ev_stats_server_refreshes(const ev_stats_server_t *srv);

/* What /readyz would answer now: true for 200 (any thread). */
bool ev_stats_server_ready(ev_stats_server_t *srv);

#endif
