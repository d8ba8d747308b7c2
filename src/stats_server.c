/*
 * stats_server.c - GET /stats, /metrics, /livez (/healthz), /readyz over
 * libmicrohttpd; see stats_server.h.
 *
 * How: libmicrohttpd runs its own polling threads (a small pool) and calls
 * handle() for every request. A request never touches the database: it copies
 * the cached queue snapshot under `lock`, releases it, and renders the
 * ev_stats_t counters (lock-free) around that copy. One refresher thread,
 * created here, owns the server's ev_db_t and refreshes the cache at most
 * once per refresh interval; it holds `lock` only to publish results and to
 * wait for the next refresh, never while talking to Postgres. Its session has
 * connect_timeout, statement_timeout and TCP keepalives, so a dead or hung
 * database turns into a failed refresh (and /readyz 503) instead of a stuck
 * thread.
 *
 * Threads: the main thread calls start/stop; libmicrohttpd threads run
 * handle(); the refresher thread (ev_thread_create) runs refresher(). Both
 * kinds of thread start with the termination signals and SIGPIPE blocked, so
 * SIGTERM/SIGINT reach only the signal thread.
 *
 * Lock order: srv->lock is a leaf lock; nothing is called while holding it
 * except pthread condition primitives.
 */
#include "ev/stats_server.h"

#include "ev/dashboard.h"
#include "ev/db.h"
#include "ev/error.h"
#include "ev/httpguard.h"
#include "ev/queue.h"
#include "ev/spend.h"
#include "ev/threads.h"
#include "ev/util.h"
#include "ev/webhook.h"

#include <json-c/json.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* The refresher re-reads the (possibly fake) clock at least this often while
 * waiting, so a test that advances a fake clock sees the next refresh soon. */
#define WAIT_SLICE_US 250000
#define MHD_THREADS 2
/* Slow clients: many slots, few per address, and every connection cut after
 * CONNECTION_DEADLINE_MS whatever it sends (httpguard.h), so a probe always
 * finds a slot within that time. */
#define MHD_CONNECTION_LIMIT 512
#define MHD_PER_IP_LIMIT 32
#define MHD_CONNECTION_TIMEOUT_S 5
#define CONNECTION_DEADLINE_MS 5000

struct ev_stats_server {
    /* Immutable after start. */
    ev_stats_t *stats;
    const ev_clock_t *clock;
    struct ev_spend *spend;             /* thread-safe; may be NULL */
    bool (*providers_ready)(void *ctx); /* immutable; may be NULL */
    void *providers_ctx;                /* immutable */
    char *conninfo;                     /* may hold a password: wiped on free */
    struct ev_dashboard *dashboard;     /* thread-safe; may be NULL */
    int64_t refresh_interval_us;
    int64_t ready_max_age_us;
    int port;
    struct MHD_Daemon *daemon;
    ev_httpguard_t *guard;
    ev_thread_t refresher;

    _Atomic uint64_t db_queries;
    _Atomic uint64_t refreshes;
    _Atomic uint64_t refresh_failures;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled on stop; waits use CLOCK_MONOTONIC */
    /* Guarded by lock. */
    bool stopping;
    bool have_counts;         /* counts were read at least once */
    ev_queue_counts_t counts; /* the last counts read */
    int64_t counts_at_us;     /* clock time they were read */
    bool last_ok;             /* the last refresh succeeded */
};

/* ---- The cached database snapshot. ---- */

typedef struct cache_view {
    bool have_counts;
    ev_queue_counts_t counts;
    double age_s;
    bool ready;
} cache_view_t;

static void cache_read(ev_stats_server_t *srv, cache_view_t *v)
{
    int64_t now = ev_clock_now_us(srv->clock);
    pthread_mutex_lock(&srv->lock);
    v->have_counts = srv->have_counts;
    v->counts = srv->counts;
    int64_t age = srv->have_counts ? now - srv->counts_at_us : 0;
    v->ready = srv->last_ok && age <= srv->ready_max_age_us;
    pthread_mutex_unlock(&srv->lock);
    v->age_s = age > 0 ? (double)age / 1e6 : 0.0;
}

/* Whether some provider can answer every check (true when nobody said). */
static bool providers_ready(ev_stats_server_t *srv)
{
    return !srv->providers_ready || srv->providers_ready(srv->providers_ctx);
}

bool ev_stats_server_ready(ev_stats_server_t *srv)
{
    cache_view_t v;
    cache_read(srv, &v);
    return v.ready && providers_ready(srv);
}

uint64_t ev_stats_server_db_queries(const ev_stats_server_t *srv)
{
    return atomic_load(&srv->db_queries);
}

uint64_t ev_stats_server_refreshes(const ev_stats_server_t *srv)
{
    return atomic_load(&srv->refreshes);
}

int ev_stats_server_port(const ev_stats_server_t *srv)
{
    return srv->port;
}

/* ---- The refresher thread. ---- */

/* One refresh: (re)connects when needed and reads the counts. The
 * connection is dropped after a connection-level failure so that the next
 * attempt starts clean. */
static int refresh_once(ev_stats_server_t *srv, ev_db_t **db, ev_queue_counts_t *counts)
{
    int rc;
    char err[256];

    if (!*db) {
        rc = ev_db_connect(db, srv->conninfo, err, sizeof(err));
        if (rc < 0)
            goto out;
    } else {
        rc = ev_db_ensure(*db);
        if (rc < 0)
            goto out;
    }
    atomic_fetch_add(&srv->db_queries, 1);
    rc = ev_queue_counts(*db, counts);
    if (rc == 0)
        rc = ev_webhook_counts(*db, &counts->webhooks_pending, &counts->webhooks_failed);
out:
    if (rc == EV_EDBCONN && *db) {
        ev_db_free(*db);
        *db = NULL;
    }
    return rc;
}

/* Waits on srv->cond for at most `us` microseconds of real time. Called with
 * srv->lock held. */
static void wait_locked(ev_stats_server_t *srv, int64_t us)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (us % 1000000) * 1000;
    ts.tv_sec += (time_t)(us / 1000000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    pthread_cond_timedwait(&srv->cond, &srv->lock, &ts);
}

static void *refresher(void *arg)
{
    ev_stats_server_t *srv = arg;
    ev_db_t *db = NULL;
    int64_t next_due = ev_clock_now_us(srv->clock);

    pthread_mutex_lock(&srv->lock);
    while (!srv->stopping) {
        int64_t now = ev_clock_now_us(srv->clock);
        if (now < next_due) {
            wait_locked(srv, EV_MIN(next_due - now, (int64_t)WAIT_SLICE_US));
            continue;
        }
        /* Scheduling from the start of the attempt bounds the query rate to
         * one per interval however long each attempt takes. */
        next_due = now + srv->refresh_interval_us;
        pthread_mutex_unlock(&srv->lock);

        ev_queue_counts_t counts;
        memset(&counts, 0, sizeof(counts));
        int rc = refresh_once(srv, &db, &counts);
        int64_t done = ev_clock_now_us(srv->clock);

        pthread_mutex_lock(&srv->lock);
        if (rc == 0) {
            srv->counts = counts;
            srv->counts_at_us = done;
            srv->have_counts = true;
        }
        srv->last_ok = rc == 0;
        if (rc < 0)
            atomic_fetch_add(&srv->refresh_failures, 1);
        atomic_fetch_add(&srv->refreshes, 1);
    }
    pthread_mutex_unlock(&srv->lock);
    ev_db_free(db);
    return NULL;
}

/* ---- HTTP. ---- */

static enum MHD_Result send_buffer(struct MHD_Connection *c, unsigned status, const char *type,
                                   void *data, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(data);
        return MHD_NO;
    }
    enum MHD_Result ret = MHD_YES;
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type) != MHD_YES ||
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
        (status == MHD_HTTP_METHOD_NOT_ALLOWED &&
         MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES))
        ret = MHD_NO;
    if (ret == MHD_YES)
        ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return send_buffer(c, status, "text/plain; charset=utf-8", (void *)text, strlen(text),
                       MHD_RESPMEM_PERSISTENT);
}

/* Adds a member, taking ownership of v; false on failure. */
static bool json_add(json_object *o, const char *key, json_object *v)
{
    if (!v || json_object_object_add(o, key, v) != 0) {
        json_object_put(v);
        return false;
    }
    return true;
}

static enum MHD_Result serve_stats(ev_stats_server_t *srv, struct MHD_Connection *c)
{
    cache_view_t cv;
    json_object *root = NULL;
    json_object *queue = NULL;
    enum MHD_Result ret = MHD_NO;

    cache_read(srv, &cv);
    if (ev_stats_snapshot_json(&root, srv->stats, cv.have_counts ? &cv.counts : NULL) < 0)
        goto out;
    /* The server knows how fresh the counts are and whether it is ready. */
    bool ok = json_object_object_get_ex(root, "queue", &queue);
    if (ok && cv.have_counts) {
        char text[32];
        snprintf(text, sizeof(text), "%.3f", cv.age_s);
        ok = json_add(queue, "age_s", json_object_new_double_s(cv.age_s, text));
    } else if (ok) {
        ok = json_object_object_add(queue, "age_s", NULL) == 0;
    }
    if (ok)
        ok = json_add(root, "ready", json_object_new_boolean(cv.ready));
    if (ok && srv->spend)
        ev_spend_json_add(srv->spend, root);
    if (!ok)
        goto out;
    size_t len = 0;
    const char *text = json_object_to_json_string_length(root, JSON_C_TO_STRING_PLAIN, &len);
    if (!text)
        goto out;
    ret = send_buffer(c, MHD_HTTP_OK, "application/json", (void *)text, len, MHD_RESPMEM_MUST_COPY);
out:
    json_object_put(root);
    return ret;
}

static enum MHD_Result serve_metrics(ev_stats_server_t *srv, struct MHD_Connection *c)
{
    cache_view_t cv;
    ev_stats_buf_t b = {0};

    cache_read(srv, &cv);
    ev_stats_render_prometheus(srv->stats, cv.have_counts ? &cv.counts : NULL, &b);
    ev_stats_buf_printf(&b,
                        "# HELP event_validator_database_ready 1 while the database is reachable "
                        "(what /readyz reports).\n"
                        "# TYPE event_validator_database_ready gauge\n"
                        "event_validator_database_ready %d\n",
                        cv.ready ? 1 : 0);
    ev_stats_buf_printf(&b, "# HELP event_validator_queue_age_seconds Age of the queue counts.\n"
                            "# TYPE event_validator_queue_age_seconds gauge\n");
    if (cv.have_counts)
        ev_stats_buf_printf(&b, "event_validator_queue_age_seconds %.3f\n", cv.age_s);
    ev_stats_buf_printf(&b,
                        "# HELP event_validator_stats_db_queries_total Queue-count queries made "
                        "by the stats server.\n"
                        "# TYPE event_validator_stats_db_queries_total counter\n"
                        "event_validator_stats_db_queries_total %llu\n"
                        "# HELP event_validator_stats_db_refresh_failures_total Failed "
                        "queue-count refreshes.\n"
                        "# TYPE event_validator_stats_db_refresh_failures_total counter\n"
                        "event_validator_stats_db_refresh_failures_total %llu\n",
                        (unsigned long long)atomic_load(&srv->db_queries),
                        (unsigned long long)atomic_load(&srv->refresh_failures));
    if (srv->spend)
        ev_spend_render_prometheus(srv->spend, &b);
    /* MHD frees the buffer with free() once sent (or on failure here). */
    return send_buffer(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len,
                       MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **req_cls)
{
    ev_stats_server_t *srv = cls;
    enum { R_STATS, R_METRICS, R_HEALTHZ, R_READYZ, R_NONE } route = R_NONE;

    if (srv->dashboard && strncmp(url, "/dashboard", 10) == 0 &&
        (url[10] == '\0' || url[10] == '/'))
        return ev_dashboard_handle(srv->dashboard, c, url, method);

    if (strcmp(url, "/stats") == 0)
        route = R_STATS;
    else if (strcmp(url, "/metrics") == 0)
        route = R_METRICS;
    else if (strcmp(url, "/livez") == 0 || strcmp(url, "/healthz") == 0)
        route = R_HEALTHZ;
    else if (strcmp(url, "/readyz") == 0)
        route = R_READYZ;

    /* Answering on the first call means a request body, if any, is never
     * read: MHD discards it and closes the connection after the reply. */
    if (route == R_NONE)
        return send_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return send_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");

    switch (route) {
    case R_STATS:
        return serve_stats(srv, c);
    case R_METRICS:
        return serve_metrics(srv, c);
    case R_HEALTHZ:
        return send_text(c, MHD_HTTP_OK, "ok\n");
    case R_READYZ:
        /* Draining after SIGTERM: load balancers stop sending work first. */
        if (ev_shutdown_requested())
            return send_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "draining\n");
        if (ev_stats_server_ready(srv))
            return send_text(c, MHD_HTTP_OK, "ready\n");
        if (!providers_ready(srv))
            return send_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                             "no LLM provider can answer every check (see the log)\n");
        return send_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "database unreachable\n");
    case R_NONE:
        break;
    }
    return MHD_NO;
}

/* ---- Start and stop. ---- */

/* Appends `key='value'` (conninfo quoting) to b. */
static void conninfo_add(ev_stats_buf_t *b, const char *key, const char *value)
{
    ev_stats_buf_printf(b, "%s%s='", b->len ? " " : "", key);
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '\'')
            ev_stats_buf_printf(b, "\\%c", *p);
        else
            ev_stats_buf_printf(b, "%c", *p);
    }
    ev_stats_buf_printf(b, "'");
}

/* Rewrites the database URL as a conninfo string with the server's own
 * timeouts added where the URL does not set them. NULL if libpq cannot
 * parse the URL. */
static char *build_conninfo(const char *url, int connect_timeout_s, int query_timeout_ms)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &errmsg);
    if (!opts) {
        PQfreemem(errmsg);
        return NULL;
    }
    ev_stats_buf_t b = {0};
    bool has_options = false;
    const char *defaults[][2] = {
        {"connect_timeout", NULL},    {"application_name", "event-validator-stats"},
        {"keepalives", "1"},          {"keepalives_idle", "10"},
        {"keepalives_interval", "5"}, {"keepalives_count", "3"}};
    bool seen[EV_ARRAY_LEN(defaults)] = {false};
    char timeout[32], statement[64];
    snprintf(timeout, sizeof(timeout), "%d", connect_timeout_s);
    snprintf(statement, sizeof(statement), "-c statement_timeout=%d", query_timeout_ms);
    defaults[0][1] = timeout;

    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        for (size_t i = 0; i < EV_ARRAY_LEN(defaults); i++)
            if (strcmp(o->keyword, defaults[i][0]) == 0)
                seen[i] = true;
        if (strcmp(o->keyword, "options") == 0) {
            /* A later -c wins, so ours bounds only the server's own query. */
            char *both = ev_asprintf("%s %s", o->val, statement);
            conninfo_add(&b, "options", both);
            free(both);
            has_options = true;
            continue;
        }
        conninfo_add(&b, o->keyword, o->val);
    }
    for (size_t i = 0; i < EV_ARRAY_LEN(defaults); i++)
        if (!seen[i])
            conninfo_add(&b, defaults[i][0], defaults[i][1]);
    if (!has_options)
        conninfo_add(&b, "options", statement);
    PQconninfoFree(opts);
    return b.data;
}

static void wipe_free(char *s)
{
    if (!s)
        return;
    volatile char *v = s;
    while (*v)
        *v++ = '\0';
    free(s);
}

static void server_free(ev_stats_server_t *srv)
{
    if (!srv)
        return;
    /* After MHD_stop_daemon: no connection is left for the guard. */
    ev_httpguard_free(srv->guard);
    pthread_cond_destroy(&srv->cond);
    pthread_mutex_destroy(&srv->lock);
    wipe_free(srv->conninfo);
    free(srv);
}

int ev_stats_server_start(ev_stats_server_t **out, ev_stats_t *stats,
                          const ev_stats_server_options_t *opts, char *err, size_t errlen)
{
    int rc = 0;
    ev_stats_server_t *srv = NULL;
    struct addrinfo *ai = NULL;
    sigset_t block, saved;
    bool masked = false;

    *out = NULL;
    if (!stats || !opts || !opts->database_url || opts->port < 0 || opts->port > 65535 ||
        opts->refresh_interval_ms <= 0 || opts->connect_timeout_s <= 0 ||
        opts->query_timeout_ms <= 0 || opts->ready_max_age_ms < 0) {
        ev_set_error(err, errlen, "stats server: invalid options");
        rc = EV_EINVAL;
        goto out;
    }

    srv = ev_calloc(1, sizeof(*srv));
    srv->stats = stats;
    srv->clock = opts->clock ? opts->clock : ev_clock_system();
    srv->spend = opts->spend;
    srv->providers_ready = opts->providers_ready;
    srv->providers_ctx = opts->providers_ctx;
    srv->dashboard = opts->dashboard;
    srv->refresh_interval_us = (int64_t)opts->refresh_interval_ms * 1000;
    srv->ready_max_age_us = opts->ready_max_age_ms
                                ? (int64_t)opts->ready_max_age_ms * 1000
                                : EV_MAX(3 * srv->refresh_interval_us, (int64_t)5000000);
    EV_ASSERT(pthread_mutex_init(&srv->lock, NULL) == 0);
    pthread_condattr_t ca;
    EV_ASSERT(pthread_condattr_init(&ca) == 0);
    EV_ASSERT(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0);
    EV_ASSERT(pthread_cond_init(&srv->cond, &ca) == 0);
    pthread_condattr_destroy(&ca);

    srv->conninfo =
        build_conninfo(opts->database_url, opts->connect_timeout_s, opts->query_timeout_ms);
    if (!srv->conninfo) {
        ev_set_error(err, errlen,
                     "stats server: the database URL is not a valid libpq URI or "
                     "conninfo string");
        rc = EV_EINVAL;
        goto out;
    }

    const char *addr = opts->addr && *opts->addr ? opts->addr : "0.0.0.0";
    char port[16];
    snprintf(port, sizeof(port), "%d", opts->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int gai = getaddrinfo(addr, port, &hints, &ai);
    if (gai != 0 || !ai) {
        ev_set_error(err, errlen, "stats server: cannot resolve address '%s': %s", addr,
                     gai_strerror(gai));
        rc = EV_EINVAL;
        goto out;
    }

    /* libmicrohttpd's threads inherit the creating thread's signal mask; block
     * what ev_thread_create blocks for the threads it creates. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGPIPE);
    EV_ASSERT(pthread_sigmask(SIG_BLOCK, &block, &saved) == 0);
    masked = true;

    /* No MHD_OPTION_LISTENING_ADDRESS_REUSE: it means SO_REUSEPORT, which
     * would let a second process silently share the port. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    rc = ev_httpguard_new(&srv->guard, CONNECTION_DEADLINE_MS);
    if (rc < 0) {
        ev_set_error(err, errlen, "stats server: cannot start the connection guard");
        goto out;
    }
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)opts->port, NULL, NULL, handle, srv, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)MHD_THREADS, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)MHD_CONNECTION_LIMIT, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)MHD_PER_IP_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)MHD_CONNECTION_TIMEOUT_S, MHD_OPTION_NOTIFY_CONNECTION, ev_httpguard_notify,
        srv->guard, MHD_OPTION_END);
    if (!srv->daemon) {
        ev_set_error(err, errlen, "stats server: cannot listen on %s port %d", addr, opts->port);
        rc = EV_EIO;
        goto out;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : opts->port;

    rc = ev_thread_create(&srv->refresher, "ev-stats-db", refresher, srv);
    if (rc < 0) {
        ev_set_error(err, errlen, "stats server: cannot create the refresher thread");
        goto out;
    }

out:
    if (masked)
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (ai)
        freeaddrinfo(ai);
    if (rc < 0 && srv) {
        if (srv->daemon)
            MHD_stop_daemon(srv->daemon);
        server_free(srv);
        srv = NULL;
    }
    *out = srv;
    return rc;
}

void ev_stats_server_stop(ev_stats_server_t *srv)
{
    if (!srv)
        return;
    /* No request can run after this returns, so the cache can go next. */
    if (srv->daemon)
        MHD_stop_daemon(srv->daemon);
    if (srv->refresher.started) {
        pthread_mutex_lock(&srv->lock);
        srv->stopping = true;
        pthread_cond_broadcast(&srv->cond);
        pthread_mutex_unlock(&srv->lock);
        ev_thread_join(&srv->refresher, NULL);
    }
    server_free(srv);
}
