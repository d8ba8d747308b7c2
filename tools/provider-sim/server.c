/*
 * server.c - the simulator's HTTP side, on libmicrohttpd.
 *
 * What: routes /gemini/... and /groq/... to the provider handlers, serves the
 * control API (/control/...) and /healthz, collects request bodies, counts
 * requests in flight, and implements the two kinds of waiting a handler does:
 * an interruptible latency sleep and a hang that lasts until the client
 * leaves, hang_ms passes, or the server stops.
 *
 * How: MHD runs one thread per connection (plus its listening thread), so a
 * handler sleeping for its latency blocks only its own client and the sim
 * holds as many concurrent requests as the client opens (up to
 * max_connections). Bodies are kept up to the provider's limit; bytes beyond
 * it are counted and dropped, and a Content-Length far above the limit is
 * refused before the body is read. Stopping sets a flag and broadcasts a
 * condition variable that every sleep and hang waits on, so MHD_stop_daemon
 * can join every connection thread promptly.
 *
 * Threads: the MHD listening thread and one thread per connection call in.
 * Shared state: the providers (their own locks, see provider.c) and the stop
 * flag/condition here (`stop_mu` guards nothing but the wait; `stopping` is
 * atomic). Lock order: stop_mu is never held together with a provider lock.
 * One server per process (the stop state is process-wide).
 */
#include "sim.h"

#include "ev/error.h"
#include "ev/log.h"
#include "ev/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define CONTROL_MAX_BODY (1 << 20)

static pthread_mutex_t stop_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cv;
static pthread_once_t stop_once = PTHREAD_ONCE_INIT;
static atomic_bool stopping;

static void stop_init(void)
{
    pthread_condattr_t attr;
    EV_ASSERT(pthread_condattr_init(&attr) == 0);
    EV_ASSERT(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0);
    EV_ASSERT(pthread_cond_init(&stop_cv, &attr) == 0);
    pthread_condattr_destroy(&attr);
}

bool sim_server_stopping(void)
{
    return atomic_load(&stopping);
}

/* Wait on the stop condition until `deadline_us` (monotonic) or stop. */
static void wait_until(int64_t deadline_us)
{
    struct timespec ts = {.tv_sec = deadline_us / 1000000,
                          .tv_nsec = (deadline_us % 1000000) * 1000};
    pthread_mutex_lock(&stop_mu);
    while (!atomic_load(&stopping) && sim_now_us() < deadline_us)
        if (pthread_cond_timedwait(&stop_cv, &stop_mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&stop_mu);
}

bool sim_server_sleep_ms(int64_t ms)
{
    pthread_once(&stop_once, stop_init);
    if (ms > 0)
        wait_until(sim_now_us() + ms * 1000);
    return !atomic_load(&stopping);
}

/* Keep the client waiting. Returns true when the reply should now be sent
 * (hang_ms passed), false when the client left or the server is stopping. */
static bool hang(struct MHD_Connection *c, int64_t hang_ms)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci ? ci->connect_fd : -1;
    int64_t deadline = hang_ms > 0 ? sim_now_us() + hang_ms * 1000 : INT64_MAX;
    while (!atomic_load(&stopping)) {
        int64_t left = deadline - sim_now_us();
        if (left <= 0)
            return true;
        int64_t step = EV_MIN(left, 100000);
        if (fd < 0) {
            wait_until(sim_now_us() + step);
            continue;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN | POLLRDHUP};
        int n = poll(&pfd, 1, (int)((step + 999) / 1000));
        if (n < 0 && errno != EINTR)
            return false;
        if (n <= 0)
            continue;
        if (pfd.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL))
            return false;
        char b;
        ssize_t got = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return false;
        /* The client sent more (a pipelined request): keep waiting, gently. */
        wait_until(sim_now_us() + step);
    }
    return false;
}

/* --------------------------------------------------------------- server */

typedef enum { ROUTE_OTHER = 0, ROUTE_GEMINI, ROUTE_GROQ, ROUTE_OPENAI, ROUTE_CONTROL } route_t;

struct sim_server {
    struct MHD_Daemon *daemon;
    sim_provider_t *prov; /* array of SIM_NPROV, owned by the caller */
    int port;
    int64_t started_us;
};

/* One request in progress; lives from the first callback to completion. */
typedef struct conn_req {
    route_t route;
    sim_provider_t *prov; /* for API routes */
    char *buf;
    size_t len, cap;
    size_t limit; /* bytes kept */
    size_t total; /* bytes received */
    bool too_big;
    bool early;
} conn_req_t;

static void append(conn_req_t *r, const char *data, size_t n)
{
    r->total += n;
    if (r->too_big || r->len + n > r->limit) {
        r->too_big = true;
        return;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 16384;
        while (cap < r->len + n + 1)
            cap *= 2;
        r->buf = ev_realloc(r->buf, cap);
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, n);
    r->len += n;
    r->buf[r->len] = '\0';
}

static enum MHD_Result send_reply(struct MHD_Connection *c, sim_reply_t *rep)
{
    struct MHD_Response *resp;
    if (rep->len == 0) {
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer(rep->len, rep->body, MHD_RESPMEM_MUST_FREE);
        if (resp)
            rep->body = NULL; /* MHD frees it now */
    }
    if (!resp)
        return MHD_NO;
    if (rep->content_type[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rep->content_type);
    for (int i = 0; i < rep->nheaders; i++)
        MHD_add_response_header(resp, rep->hname[i], rep->hvalue[i]);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)rep->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result has_key_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    (void)value;
    if (strcmp(key, "key") == 0) {
        *(bool *)cls = true;
        return MHD_NO;
    }
    return MHD_YES;
}

static enum MHD_Result serve_api(sim_server_t *srv, struct MHD_Connection *c, conn_req_t *r,
                                 const char *url, const char *method)
{
    sim_provider_t *p = r->prov;
    sim_request_t rq = {0};
    rq.method = method;
    /* Groq's handler expects /openai/v1/...: Groq's URLs carry a /groq
     * prefix, the OpenAI-compatible endpoint's do not. */
    rq.path = url + (r->route == ROUTE_GEMINI ? strlen("/gemini")
                     : r->route == ROUTE_GROQ ? strlen("/groq")
                                              : 0);
    rq.content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    rq.goog_api_key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-goog-api-key");
    rq.authorization =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, has_key_arg, &rq.key_in_query);
    rq.body = r->buf ? r->buf : "";
    rq.body_len = r->len;
    rq.total_len = r->total;
    rq.too_big = r->too_big;
    rq.early = r->early;

    if (strcmp(method, "GET") == 0) {
        /* Model metadata: no quota, no fault, not a generation request. */
        sim_reply_t meta = {0};
        atomic_fetch_add_explicit(&p->model_checks, 1, memory_order_relaxed);
        if (r->route == ROUTE_GEMINI)
            sim_gemini_models(p, &rq, &meta);
        else
            sim_groq_models(p, &rq, &meta);
        enum MHD_Result mret = send_reply(c, &meta);
        sim_reply_free(&meta);
        (void)srv;
        return mret;
    }
    atomic_fetch_add_explicit(&p->requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->bytes_in, (int64_t)r->total, memory_order_relaxed);
    sim_provider_enter(p);
    int64_t t0 = sim_now_us();
    sim_reply_t rep = {0};
    if (r->route == ROUTE_GEMINI)
        sim_gemini_handle(p, &rq, &rep);
    else
        sim_groq_handle(p, &rq, &rep);
    bool send = rep.action == SIM_REPLY_SEND;
    if (rep.action == SIM_REPLY_HANG)
        send = hang(c, rep.hang_ms);
    sim_provider_leave(p);
    enum MHD_Result ret = MHD_NO;
    if (send) {
        atomic_fetch_add_explicit(&p->bytes_out, (int64_t)rep.len, memory_order_relaxed);
        ev_log(EV_LOG_DEBUG, "%s %s%s -> %d in %lld ms", method, p->name, rq.path, rep.status,
               (long long)((sim_now_us() - t0) / 1000));
        ret = send_reply(c, &rep);
    }
    (void)srv;
    sim_reply_free(&rep);
    return ret;
}

static void control_error(sim_reply_t *rep, int status, const char *msg)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(msg));
    sim_reply_json(rep, status, o, false);
}

static sim_provider_t *provider_named(sim_server_t *srv, const char *name)
{
    for (int i = 0; i < SIM_NPROV; i++)
        if (strcmp(srv->prov[i].name, name) == 0)
            return &srv->prov[i];
    return NULL;
}

static enum MHD_Result serve_control(sim_server_t *srv, struct MHD_Connection *c, conn_req_t *r,
                                     const char *url, const char *method)
{
    sim_reply_t rep = {0};
    const char *what = strncmp(url, "/control/", 9) == 0 ? url + 9 : "";
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    if (r->too_big) {
        control_error(&rep, 413, "control body too large");
    } else if (strcmp(url, "/healthz") == 0 && get) {
        sim_reply_text(&rep, 200, "text/plain", "ok\n");
    } else if (strcmp(what, "stats") == 0 && get) {
        json_object *o = json_object_new_object();
        char up[32];
        snprintf(up, sizeof(up), "%.3f", (double)(sim_now_us() - srv->started_us) / 1e6);
        json_object_object_add(o, "uptime_s", json_object_new_double_s(strtod(up, NULL), up));
        for (int i = 0; i < SIM_NPROV; i++)
            json_object_object_add(o, srv->prov[i].name, sim_provider_stats(&srv->prov[i]));
        sim_reply_json(&rep, 200, o, false);
    } else if (strcmp(what, "reset") == 0 && post) {
        const char *keep = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "keep_settings");
        bool restore = !(keep && strcmp(keep, "0") != 0);
        for (int i = 0; i < SIM_NPROV; i++)
            sim_provider_reset(&srv->prov[i], restore);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "reset", json_object_new_boolean(1));
        json_object_object_add(o, "settings_restored", json_object_new_boolean(restore));
        sim_reply_json(&rep, 200, o, false);
    } else if (strcmp(what, "reset_peak") == 0 && post) {
        for (int i = 0; i < SIM_NPROV; i++)
            sim_provider_reset_peak(&srv->prov[i]);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "reset_peak", json_object_new_boolean(1));
        sim_reply_json(&rep, 200, o, false);
    } else if (provider_named(srv, what) && (get || post)) {
        sim_provider_t *p = provider_named(srv, what);
        char err[SIM_REASON_MAX] = "";
        int rc = 0;
        if (post) {
            json_object *body = sim_json_parse(r->buf ? r->buf : "", r->len, err, sizeof(err));
            rc = body ? sim_provider_configure(p, body, err, sizeof(err)) : EV_EINVAL;
            json_object_put(body);
        }
        if (rc < 0) {
            control_error(&rep, 400, err);
        } else {
            sim_settings_t s;
            sim_provider_snapshot(p, &s);
            sim_reply_json(&rep, 200, sim_settings_to_json(&s, p->id), false);
            if (post)
                ev_log(EV_LOG_INFO, "%s settings changed: %.*s", p->name, (int)EV_MIN(r->len, 400),
                       r->buf ? r->buf : "");
        }
    } else {
        control_error(&rep, 404,
                      "unknown control endpoint: use GET /control/stats, GET|POST "
                      "/control/{gemini|groq|openai}, POST /control/reset, GET /healthz");
    }
    enum MHD_Result ret = send_reply(c, &rep);
    sim_reply_free(&rep);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    sim_server_t *srv = cls;
    conn_req_t *r = *con_cls;
    (void)version;
    if (!r) {
        r = ev_calloc(1, sizeof(*r));
        *con_cls = r;
        if (strncmp(url, "/gemini/", 8) == 0 || strcmp(url, "/gemini") == 0) {
            r->route = ROUTE_GEMINI;
            r->prov = &srv->prov[SIM_GEMINI];
        } else if (strncmp(url, "/groq/", 6) == 0 || strcmp(url, "/groq") == 0) {
            r->route = ROUTE_GROQ;
            r->prov = &srv->prov[SIM_GROQ];
        } else if (strncmp(url, "/openai/", 8) == 0) {
            r->route = ROUTE_OPENAI;
            r->prov = &srv->prov[SIM_OPENAI];
        } else {
            r->route = ROUTE_CONTROL;
        }
        r->limit = CONTROL_MAX_BODY;
        if (r->prov) {
            sim_settings_t s;
            sim_provider_snapshot(r->prov, &s);
            r->limit = (size_t)s.max_body_bytes;
            /* A declared size the provider's front end would refuse unread:
             * Groq above its limit, Gemini far above it (between the two,
             * Gemini reads the body and answers a JSON 400). */
            size_t refuse = r->route == ROUTE_GEMINI ? 2 * r->limit : r->limit;
            const char *cl =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl) {
                unsigned long long n = strtoull(cl, NULL, 10);
                if (n > refuse) {
                    r->early = true;
                    r->total = (size_t)n;
                }
            }
        }
        if (!r->early)
            return MHD_YES;
    } else if (*upload_size > 0) {
        append(r, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->route == ROUTE_CONTROL)
        return serve_control(srv, c, r, url, method);
    return serve_api(srv, c, r, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    (void)cls;
    (void)c;
    (void)code;
    conn_req_t *r = *con_cls;
    if (r) {
        free(r->buf);
        free(r);
    }
    *con_cls = NULL;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    ev_log(EV_LOG_DEBUG, "microhttpd: %s", buf);
}
#pragma GCC diagnostic pop

int sim_server_start(sim_server_t **out, const sim_server_options_t *opt, sim_provider_t *providers)
{
    *out = NULL;
    pthread_once(&stop_once, stop_init);
    atomic_store(&stopping, false);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)opt->port);
    if (opt->port < 0 || opt->port > 65535 || inet_pton(AF_INET, opt->addr, &sa.sin_addr) != 1)
        return EV_EINVAL;
    sim_server_t *srv = ev_calloc(1, sizeof(*srv));
    srv->prov = providers;
    srv->started_us = sim_now_us();
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    srv->daemon =
        MHD_start_daemon(flags, (uint16_t)opt->port, NULL, NULL, on_request, srv,
                         /* The logger first, so MHD never prints with its own. */
                         MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv, MHD_OPTION_SOCK_ADDR, &sa,
                         MHD_OPTION_CONNECTION_LIMIT, opt->max_connections,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_NOTIFY_COMPLETED,
                         on_completed, srv, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
                         MHD_OPTION_THREAD_STACK_SIZE, (size_t)(1 << 20), MHD_OPTION_END);
    if (!srv->daemon) {
        free(srv);
        return EV_EIO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : opt->port;
    *out = srv;
    return 0;
}

int sim_server_port(const sim_server_t *srv)
{
    return srv->port;
}

void sim_server_stop(sim_server_t *srv)
{
    if (!srv)
        return;
    pthread_mutex_lock(&stop_mu);
    atomic_store(&stopping, true);
    pthread_cond_broadcast(&stop_cv);
    pthread_mutex_unlock(&stop_mu);
    MHD_stop_daemon(srv->daemon);
    free(srv);
}
