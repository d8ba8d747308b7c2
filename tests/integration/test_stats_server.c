/*
 * test_stats_server.c - the stats HTTP server against a real Postgres
 * (DATABASE_URL, see tests/support/pgtest.h) and real HTTP (libcurl):
 * every endpoint, status codes, the SPEC §7 document, `promtool check
 * metrics`, readiness with a reachable, an unreachable and a hung database,
 * and a scrape storm that must not reach the database.
 *
 * The server's clock is a fake clock, so "one refresh interval passed" is
 * something the test decides, never something it sleeps for.
 */
#include "ev/clock.h"
#include "ev/error.h"
#include "ev/stats.h"
#include "ev/stats_server.h"
#include "ev/threads.h"
#include "pgtest.h"

#include <CUnit/Basic.h>
#include <stdatomic.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "runner.h"

#define INTERVAL_MS 2000

static char *db_url;
static ev_fake_clock_t *fc;
static ev_stats_t *stats;
static ev_stats_server_t *srv;

/* ---- HTTP client. ---- */

typedef struct reply {
    long status;
    char *body;
    size_t len;
    char content_type[128];
    char allow[128];
    bool ok; /* the transfer itself worked */
} reply_t;

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    reply_t *r = ud;
    size_t add = size * n;
    char *grown = realloc(r->body, r->len + add + 1);
    if (!grown)
        return 0;
    r->body = grown;
    memcpy(r->body + r->len, data, add);
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    reply_t *r = ud;
    size_t len = size * n;
    if (len > 6 && strncasecmp(data, "Allow:", 6) == 0)
        snprintf(r->allow, sizeof(r->allow), "%.*s", (int)(len - 6), data + 6);
    return len;
}

static void reply_free(reply_t *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* One request with an existing handle (NULL: a fresh one). method is GET,
 * HEAD, POST or anything custom. */
static reply_t request(CURL *h, const char *method, int port, const char *path)
{
    reply_t r;
    memset(&r, 0, sizeof(r));
    bool own = h == NULL;
    if (own)
        h = curl_easy_init();
    CU_ASSERT_FATAL(h != NULL);
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
    /* A generous bound that only a handler stuck on the database would hit. */
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 15L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "x=1");
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode cc = curl_easy_perform(h);
    r.ok = cc == CURLE_OK;
    if (!r.ok)
        fprintf(stderr, "\n  %s %s: %s\n", method, path, curl_easy_strerror(cc));
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    char *ct = NULL;
    if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
        snprintf(r.content_type, sizeof(r.content_type), "%s", ct);
    if (own)
        curl_easy_cleanup(h);
    return r;
}

static reply_t get(const char *path)
{
    return request(NULL, "GET", ev_stats_server_port(srv), path);
}

/* ---- Helpers. ---- */

/* Waits (real time, generous bound) until the server finished `n` refreshes. */
static bool wait_refreshes(ev_stats_server_t *s, uint64_t n)
{
    for (int i = 0; i < 2000; i++) {
        if (ev_stats_server_refreshes(s) >= n)
            return true;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

static int start_server(ev_stats_server_t **out, const char *url, int connect_timeout_s)
{
    ev_stats_server_options_t o = EV_STATS_SERVER_OPTIONS_INIT;
    o.addr = "127.0.0.1";
    o.port = 0;
    o.database_url = url;
    o.refresh_interval_ms = INTERVAL_MS;
    o.connect_timeout_s = connect_timeout_s;
    o.clock = ev_fake_clock_get(fc);
    char err[256] = "";
    int rc = ev_stats_server_start(out, stats, &o, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "\n  stats server start: %s\n", err);
    return rc;
}

/* A TCP port on 127.0.0.1 where nothing listens (bound, then released). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    CU_ASSERT_FATAL(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CU_ASSERT_FATAL(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static json_object *jget(json_object *root, const char *path)
{
    char part[64];
    json_object *cur = root;
    const char *p = path;
    while (*p) {
        size_t n = strcspn(p, ".");
        snprintf(part, sizeof(part), "%.*s", (int)n, p);
        json_object *next = NULL;
        if (!cur || !json_object_object_get_ex(cur, part, &next))
            return NULL;
        cur = next;
        p += n;
        if (*p == '.')
            p++;
    }
    return cur;
}

static const struct {
    const char *path;
    json_type type;
} spec_keys[] = {
    {"uptime_s", json_type_int},
    {"version", json_type_string},
    {"workers.configured", json_type_int},
    {"workers.busy", json_type_int},
    {"queue.pending", json_type_int},
    {"queue.processing", json_type_int},
    {"queue.validated", json_type_int},
    {"queue.rejected", json_type_int},
    {"queue.needs_review", json_type_int},
    {"queue.failed", json_type_int},
    {"fallbacks", json_type_int},
    {"budget.limit", json_type_int},
    {"budget.exhausted", json_type_int},
    {"budget.calls_per_submission_avg", json_type_double},
    {"submissions.processed", json_type_int},
    {"submissions.per_minute", json_type_int},
};

static const struct {
    const char *key;
    json_type type;
} provider_keys[] = {
    {"breaker", json_type_string},        {"error_rate", json_type_double},
    {"in_flight", json_type_int},         {"max_concurrent", json_type_int},
    {"rpm_limit", json_type_double},      {"calls", json_type_int},
    {"successes", json_type_int},         {"errors", json_type_int},
    {"rate_limited", json_type_int},      {"retries", json_type_int},
    {"latency_ms.p50", json_type_double}, {"latency_ms.p95", json_type_double},
    {"latency_ms.p99", json_type_double}, {"tokens_in", json_type_int},
    {"tokens_out", json_type_int},
};

static void check_every_key(json_object *j)
{
    for (size_t i = 0; i < sizeof(spec_keys) / sizeof(spec_keys[0]); i++) {
        json_object *o = jget(j, spec_keys[i].path);
        if (!o || !json_object_is_type(o, spec_keys[i].type))
            fprintf(stderr, "\n  /stats: %s missing or of the wrong type\n", spec_keys[i].path);
        CU_ASSERT(o != NULL && json_object_is_type(o, spec_keys[i].type));
    }
    const char *providers[] = {"gemini", "groq"};
    for (size_t p = 0; p < 2; p++) {
        for (size_t i = 0; i < sizeof(provider_keys) / sizeof(provider_keys[0]); i++) {
            char path[128];
            snprintf(path, sizeof(path), "providers.%s.%s", providers[p], provider_keys[i].key);
            json_object *o = jget(j, path);
            if (!o || !json_object_is_type(o, provider_keys[i].type))
                fprintf(stderr, "\n  /stats: %s missing or of the wrong type\n", path);
            CU_ASSERT(o != NULL && json_object_is_type(o, provider_keys[i].type));
        }
    }
}

static int64_t jint(json_object *j, const char *path)
{
    json_object *o = jget(j, path);
    return o && json_object_is_type(o, json_type_int) ? json_object_get_int64(o) : -1;
}

/* Feeds `text` to `promtool check metrics` on stdin. Returns its exit
 * status, or -1 when promtool is not installed. */
static int promtool_check(const char *text, size_t len)
{
    const char *promtool = "/usr/bin/promtool";
    if (access(promtool, X_OK) != 0)
        return -1;
    char path[] = "/tmp/ev-metrics-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, text, len) == (ssize_t)len);
    CU_ASSERT_FATAL(lseek(fd, 0, SEEK_SET) == 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        dup2(fd, 0);
        execl(promtool, "promtool", "check", "metrics", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    close(fd);
    unlink(path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void check_promtool(const reply_t *r)
{
    int rc = promtool_check(r->body, r->len);
    if (rc < 0) {
        fprintf(stderr, "\n  promtool is not installed: `promtool check metrics` skipped\n");
        CU_ASSERT(getenv("CI") == NULL); /* in CI it must be there */
        return;
    }
    if (rc != 0)
        fprintf(stderr, "\n  promtool rejected /metrics:\n%s\n", r->body);
    CU_ASSERT_EQUAL(rc, 0);
}

/* ---- Tests. ---- */

static void test_endpoints(void)
{
    CU_ASSERT_FATAL(wait_refreshes(srv, 1));

    reply_t r = get("/healthz");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);

    r = get("/livez");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);

    r = get("/readyz");
    CU_ASSERT(r.ok && r.status == 200);
    CU_ASSERT(ev_stats_server_ready(srv));
    reply_free(&r);

    r = get("/stats");
    CU_ASSERT(r.ok && r.status == 200);
    CU_ASSERT(strncmp(r.content_type, "application/json", 16) == 0);
    json_object *j = r.body ? json_tokener_parse(r.body) : NULL;
    CU_ASSERT_FATAL(j != NULL);
    check_every_key(j);
    /* The counts are the database's, the counters are the stats object's. */
    CU_ASSERT_EQUAL(jint(j, "queue.pending"), 3);
    CU_ASSERT_EQUAL(jint(j, "queue.processing"), 1);
    CU_ASSERT_EQUAL(jint(j, "queue.validated"), 2);
    CU_ASSERT_EQUAL(jint(j, "queue.rejected"), 1);
    CU_ASSERT_EQUAL(jint(j, "queue.needs_review"), 0);
    CU_ASSERT_EQUAL(jint(j, "queue.failed"), 0);
    CU_ASSERT_EQUAL(jint(j, "providers.gemini.calls"), 2);
    CU_ASSERT_EQUAL(jint(j, "workers.configured"), 6);
    CU_ASSERT(json_object_get_boolean(jget(j, "ready")));
    json_object_put(j);
    reply_free(&r);

    r = get("/metrics");
    CU_ASSERT(r.ok && r.status == 200);
    CU_ASSERT(strstr(r.content_type, "text/plain") != NULL &&
              strstr(r.content_type, "version=0.0.4") != NULL);
    CU_ASSERT(r.body &&
              strstr(r.body, "\nevent_validator_queue_submissions{status=\"pending\"} 3\n"));
    CU_ASSERT(r.body && strstr(r.body, "\nevent_validator_database_ready 1\n"));
    if (r.body)
        check_promtool(&r);
    reply_free(&r);

    /* HEAD works where GET does; the body is left out. */
    r = request(NULL, "HEAD", ev_stats_server_port(srv), "/stats");
    CU_ASSERT(r.ok && r.status == 200 && r.len == 0);
    reply_free(&r);
    /* A query string does not change the route. */
    r = get("/metrics?format=text");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);
}

static void test_errors(void)
{
    reply_t r = get("/nope");
    CU_ASSERT(r.ok && r.status == 404);
    reply_free(&r);
    r = get("/");
    CU_ASSERT(r.ok && r.status == 404);
    reply_free(&r);
    r = get("/stats/");
    CU_ASSERT(r.ok && r.status == 404);
    reply_free(&r);

    r = request(NULL, "POST", ev_stats_server_port(srv), "/stats");
    CU_ASSERT(r.ok && r.status == 405);
    CU_ASSERT(strstr(r.allow, "GET") != NULL);
    reply_free(&r);
    r = request(NULL, "DELETE", ev_stats_server_port(srv), "/metrics");
    CU_ASSERT(r.ok && r.status == 405);
    CU_ASSERT(strstr(r.allow, "GET") != NULL);
    reply_free(&r);

    /* The server still answers after those. */
    r = get("/healthz");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);
}

#define STORM_THREADS 8
#define STORM_REQUESTS 25

static void *storm(void *arg)
{
    int *failures = arg;
    const char *paths[] = {"/stats", "/metrics", "/readyz"};
    CURL *h = curl_easy_init();
    if (!h) {
        (*failures)++;
        return NULL;
    }
    for (int i = 0; i < STORM_REQUESTS; i++) {
        reply_t r = request(h, "GET", ev_stats_server_port(srv), paths[i % 3]);
        if (!r.ok || r.status != 200)
            (*failures)++;
        reply_free(&r);
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* Runs STORM_THREADS x STORM_REQUESTS concurrent scrapes; returns failures. */
static int run_storm(void)
{
    pthread_t t[STORM_THREADS];
    int failures[STORM_THREADS] = {0};
    for (int i = 0; i < STORM_THREADS; i++)
        CU_ASSERT_FATAL(pthread_create(&t[i], NULL, storm, &failures[i]) == 0);
    int total = 0;
    for (int i = 0; i < STORM_THREADS; i++) {
        pthread_join(t[i], NULL);
        total += failures[i];
    }
    return total;
}

static void test_scrape_storm(void)
{
    CU_ASSERT_FATAL(wait_refreshes(srv, 1));
    uint64_t q0 = ev_stats_server_db_queries(srv);
    uint64_t r0 = ev_stats_server_refreshes(srv);
    CU_ASSERT(q0 >= 1);

    /* No time passes on the server's clock: 200 scrapes, zero queries. */
    CU_ASSERT_EQUAL(run_storm(), 0);
    CU_ASSERT_EQUAL(ev_stats_server_db_queries(srv), q0);

    /* A row arrives; the cache shows it only after the next interval. */
    CU_ASSERT_FATAL(ev_pgtest_exec(db_url, "insert into submissions (event_id, title) "
                                           "select id, 'late' from events limit 1") == 0);
    reply_t r = get("/stats");
    json_object *j = r.body ? json_tokener_parse(r.body) : NULL;
    CU_ASSERT(jint(j, "queue.pending") == 3);
    json_object_put(j);
    reply_free(&r);

    /* One interval passes: exactly one more query, whatever the load. */
    ev_fake_clock_advance(fc, (int64_t)INTERVAL_MS * 1000);
    CU_ASSERT_FATAL(wait_refreshes(srv, r0 + 1));
    CU_ASSERT_EQUAL(run_storm(), 0);
    CU_ASSERT_EQUAL(ev_stats_server_db_queries(srv), q0 + 1);
    r = get("/stats");
    j = r.body ? json_tokener_parse(r.body) : NULL;
    CU_ASSERT(jint(j, "queue.pending") == 4);
    json_object_put(j);
    reply_free(&r);

    /* Half an interval is not an interval. */
    ev_fake_clock_advance(fc, (int64_t)INTERVAL_MS * 1000 / 2);
    CU_ASSERT_EQUAL(run_storm(), 0);
    CU_ASSERT_EQUAL(ev_stats_server_db_queries(srv), q0 + 1);
}

/* ---- Slow clients. ---- */

#define SLOW_CLIENTS 130

typedef struct slowloris {
    int port;
    const char *src; /* the clients' address */
    int n;           /* how many, at most SLOW_CLIENTS */
    atomic_bool stop;
    atomic_int open;   /* sockets connected and not yet closed by the server */
    atomic_int closed; /* sockets the server closed while they were still sending */
} slowloris_t;

/* A client that sends one header line, never the blank line. */
static int slow_connect(const char *from, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    inet_pton(AF_INET, from, &src.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    dst.sin_port = htons((uint16_t)port);
    if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 ||
        send(fd, "GET /stats HTTP/1.1\r\nHost: x\r\n", 30, MSG_NOSIGNAL) != 30) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Keeps SLOW_CLIENTS connections sending a header line every second,
 * reconnecting whatever the server closes. */
static void *slowloris(void *arg)
{
    slowloris_t *sl = arg;
    int fds[SLOW_CLIENTS];
    for (int i = 0; i < SLOW_CLIENTS; i++)
        fds[i] = -1;
    while (!atomic_load(&sl->stop)) {
        int open = 0;
        for (int i = 0; i < sl->n; i++) {
            char b;
            if (fds[i] >= 0 && (send(fds[i], "X-Slow: 1\r\n", 11, MSG_NOSIGNAL) != 11 ||
                                recv(fds[i], &b, 1, MSG_DONTWAIT) == 0)) {
                close(fds[i]);
                fds[i] = -1;
                atomic_fetch_add(&sl->closed, 1);
            }
            if (fds[i] < 0)
                fds[i] = slow_connect(sl->src, sl->port);
            open += fds[i] >= 0;
        }
        atomic_store(&sl->open, open);
        for (int t = 0; t < 10 && !atomic_load(&sl->stop); t++)
            usleep(100 * 1000);
    }
    for (int i = 0; i < SLOW_CLIENTS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return NULL;
}

/*
 * 130 connections from another address sending a header line every second
 * (what kept /healthz from answering): every probe still answers.
 */
static void test_slow_clients(void)
{
    slowloris_t sl = {.port = ev_stats_server_port(srv), .src = "127.0.0.2", .n = SLOW_CLIENTS};
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, slowloris, &sl) == 0);
    /* Wait (generous bound) until the attack holds connections. */
    for (int i = 0; i < 200 && atomic_load(&sl.open) == 0; i++)
        usleep(50 * 1000);
    CU_ASSERT(atomic_load(&sl.open) > 0);
    for (int i = 0; i < 12; i++) {
        reply_t r = get("/livez");
        CU_ASSERT_TRUE(r.ok);
        CU_ASSERT_EQUAL(r.status, 200);
        reply_free(&r);
        usleep(500 * 1000);
    }
    atomic_store(&sl.stop, true);
    pthread_join(th, NULL);
}

/* Clients that keep sending are not idle, yet the deadline cuts them all
 * (within a generous bound): a slot is never held for as long as one trickles. */
static void test_slow_clients_are_cut(void)
{
    slowloris_t sl = {.port = ev_stats_server_port(srv), .src = "127.0.0.1", .n = 20};
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, slowloris, &sl) == 0);
    for (int i = 0; i < 1200 && atomic_load(&sl.closed) < 20; i++)
        usleep(50 * 1000);
    CU_ASSERT(atomic_load(&sl.closed) >= 20);
    atomic_store(&sl.stop, true);
    pthread_join(th, NULL);
}

static void test_reconnects(void)
{
    CU_ASSERT_FATAL(wait_refreshes(srv, 1));
    uint64_t r0 = ev_stats_server_refreshes(srv);
    uint64_t q0 = ev_stats_server_db_queries(srv);

    /* An operator (or a failover) kills the server's session. */
    int64_t killed = 0;
    CU_ASSERT_FATAL(ev_pgtest_query_i64(db_url,
                                        "select count(*) from (select pid from pg_stat_activity "
                                        "where application_name = 'event-validator-stats' "
                                        "and datname = current_database() "
                                        "and pid <> pg_backend_pid() offset 0) t "
                                        "where pg_terminate_backend(t.pid)",
                                        &killed) == 0);
    CU_ASSERT_EQUAL(killed, 1);

    /* Within two intervals the server has noticed and reconnected on its own:
     * it is ready again and reports fresh counts, with one query per interval. */
    ev_fake_clock_advance(fc, (int64_t)INTERVAL_MS * 1000);
    CU_ASSERT_FATAL(wait_refreshes(srv, r0 + 1));
    ev_fake_clock_advance(fc, (int64_t)INTERVAL_MS * 1000);
    CU_ASSERT_FATAL(wait_refreshes(srv, r0 + 2));
    CU_ASSERT(ev_stats_server_ready(srv));
    CU_ASSERT(ev_stats_server_db_queries(srv) <= q0 + 2);
    reply_t r = get("/readyz");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);
}

/* After SIGTERM the process drains: /readyz turns 503 at once so load
 * balancers stop sending work, while /livez still answers 200. */
static void test_readyz_draining(void)
{
    CU_ASSERT_FATAL(wait_refreshes(srv, 1));
    reply_t r = get("/readyz");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);
    ev_shutdown_request(SIGTERM);
    r = get("/readyz");
    CU_ASSERT(r.ok && r.status == 503 && r.body && strstr(r.body, "draining"));
    reply_free(&r);
    r = get("/livez");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);
    ev_shutdown_reset();
}

static void test_unreachable_database(void)
{
    char url[128];
    snprintf(url, sizeof(url), "postgresql://postgres@127.0.0.1:%d/postgres", closed_port());
    ev_stats_server_t *bad = NULL;
    CU_ASSERT_FATAL(start_server(&bad, url, 2) == 0);
    CU_ASSERT_FATAL(wait_refreshes(bad, 1));

    int port = ev_stats_server_port(bad);
    reply_t r = request(NULL, "GET", port, "/readyz");
    CU_ASSERT(r.ok && r.status == 503);
    reply_free(&r);
    CU_ASSERT(!ev_stats_server_ready(bad));
    CU_ASSERT_EQUAL(ev_stats_server_db_queries(bad), 0);

    r = request(NULL, "GET", port, "/healthz");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);

    /* /stats still answers: every key present, the unknown counts are null. */
    r = request(NULL, "GET", port, "/stats");
    CU_ASSERT(r.ok && r.status == 200);
    json_object *j = r.body ? json_tokener_parse(r.body) : NULL;
    CU_ASSERT_FATAL(j != NULL);
    json_object *q = jget(j, "queue");
    CU_ASSERT(q && json_object_object_get_ex(q, "pending", NULL) && !jget(j, "queue.pending"));
    CU_ASSERT(jget(j, "ready") && !json_object_get_boolean(jget(j, "ready")));
    CU_ASSERT(jint(j, "uptime_s") >= 0);
    json_object_put(j);
    reply_free(&r);

    r = request(NULL, "GET", port, "/metrics");
    CU_ASSERT(r.ok && r.status == 200);
    CU_ASSERT(r.body && strstr(r.body, "\nevent_validator_database_ready 0\n"));
    if (r.body)
        check_promtool(&r);
    reply_free(&r);
    ev_stats_server_stop(bad);
}

static atomic_bool providers_ok;

static bool providers_ready(void *ctx)
{
    return atomic_load((atomic_bool *)ctx);
}

/* With the database fine, /readyz still answers 503 while no LLM provider
 * can answer every check, and 200 again once one can. */
static void test_ready_needs_a_provider(void)
{
    ev_stats_server_options_t o = EV_STATS_SERVER_OPTIONS_INIT;
    o.addr = "127.0.0.1";
    o.port = 0;
    o.database_url = db_url;
    o.refresh_interval_ms = INTERVAL_MS;
    o.clock = ev_fake_clock_get(fc);
    o.providers_ready = providers_ready;
    o.providers_ctx = &providers_ok;
    atomic_store(&providers_ok, false);
    ev_stats_server_t *s = NULL;
    char err[256] = "";
    CU_ASSERT_FATAL(ev_stats_server_start(&s, stats, &o, err, sizeof(err)) == 0);
    CU_ASSERT_FATAL(wait_refreshes(s, 1));
    int port = ev_stats_server_port(s);
    reply_t r = request(NULL, "GET", port, "/readyz");
    CU_ASSERT(r.ok && r.status == 503);
    CU_ASSERT(r.body && strstr(r.body, "no LLM provider"));
    reply_free(&r);
    atomic_store(&providers_ok, true);
    r = request(NULL, "GET", port, "/readyz");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);
    ev_stats_server_stop(s);
}

static void test_hung_database(void)
{
    /* A listener that never accepts: the kernel completes the handshake, and
     * libpq then waits for an answer that never comes. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    CU_ASSERT_FATAL(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CU_ASSERT_FATAL(listen(lfd, 8) == 0);
    CU_ASSERT_FATAL(getsockname(lfd, (struct sockaddr *)&a, &alen) == 0);
    char url[160];
    snprintf(url, sizeof(url), "postgresql://postgres@127.0.0.1:%d/postgres?sslmode=disable",
             ntohs(a.sin_port));

    ev_stats_server_t *hung = NULL;
    CU_ASSERT_FATAL(start_server(&hung, url, 60) == 0);
    /* The refresher's connection is waiting in the listen queue. */
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    CU_ASSERT_FATAL(poll(&pfd, 1, 20000) == 1);

    int port = ev_stats_server_port(hung);
    reply_t r = request(NULL, "GET", port, "/healthz");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);
    r = request(NULL, "GET", port, "/readyz");
    CU_ASSERT(r.ok && r.status == 503);
    reply_free(&r);
    r = request(NULL, "GET", port, "/stats");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);
    r = request(NULL, "GET", port, "/metrics");
    CU_ASSERT(r.ok && r.status == 200);
    reply_free(&r);
    /* All of that was answered while the refresh was still stuck. */
    CU_ASSERT_EQUAL(ev_stats_server_refreshes(hung), 0);

    /* Closing the listener resets the pending connection: the refresh fails. */
    close(lfd);
    CU_ASSERT(wait_refreshes(hung, 1));
    CU_ASSERT(!ev_stats_server_ready(hung));
    ev_stats_server_stop(hung);
}

static void test_bad_options(void)
{
    ev_stats_server_t *s = (ev_stats_server_t *)&s;
    ev_stats_server_options_t o = EV_STATS_SERVER_OPTIONS_INIT;
    char err[256] = "";

    o.addr = "127.0.0.1";
    o.port = 0;
    o.database_url = "postgresql://user:hunter2@[bad";
    CU_ASSERT_EQUAL(ev_stats_server_start(&s, stats, &o, err, sizeof(err)), EV_EINVAL);
    CU_ASSERT(s == NULL);
    CU_ASSERT(err[0] != '\0' && strstr(err, "hunter2") == NULL);

    o.database_url = db_url;
    o.refresh_interval_ms = 0;
    CU_ASSERT_EQUAL(ev_stats_server_start(&s, stats, &o, err, sizeof(err)), EV_EINVAL);
    CU_ASSERT(s == NULL);

    /* The port the main server holds cannot be bound twice. */
    o.refresh_interval_ms = INTERVAL_MS;
    o.port = ev_stats_server_port(srv);
    o.clock = ev_fake_clock_get(fc);
    CU_ASSERT_EQUAL(ev_stats_server_start(&s, stats, &o, err, sizeof(err)), EV_EIO);
    CU_ASSERT(s == NULL);
    CU_ASSERT(strstr(err, "127.0.0.1") != NULL);

    ev_stats_server_stop(NULL);
}

/* ---- Suite setup. ---- */

static int suite_init(void)
{
    if (ev_pgtest_create_db(&db_url) < 0)
        return 1;
    if (ev_pgtest_exec(
            db_url,
            "insert into events (name, theme) values ('stats-test', 'anything');"
            "insert into submissions (event_id, title, status) "
            "select id, t.title, t.status from events, (values "
            "('a','pending'),('b','pending'),('c','pending'),('d','processing'),"
            "('e','validated'),('f','validated'),('g','rejected')) as t(title, status)") < 0)
        return 1;
    if (ev_fake_clock_new(&fc, 5000000, 1700000000000000) < 0)
        return 1;
    ev_stats_options_t so = EV_STATS_OPTIONS_INIT;
    so.clock = ev_fake_clock_get(fc);
    so.workers_configured = 6;
    so.budget_limit = 5;
    if (ev_stats_new(&stats, &so) < 0)
        return 1;
    ev_stats_record_call(stats, EV_PROVIDER_GEMINI, EV_STATS_OUTCOME_OK, 1800, 900, 40);
    ev_stats_record_call(stats, EV_PROVIDER_GEMINI, EV_STATS_OUTCOME_RATE_LIMITED, 120, 0, 0);
    ev_stats_record_submission(stats, EV_STATS_STATUS_VALIDATED, 2);
    return start_server(&srv, db_url, 5) < 0;
}

static int suite_clean(void)
{
    ev_stats_server_stop(srv);
    ev_stats_free(stats);
    ev_fake_clock_free(fc);
    ev_pgtest_drop_db(db_url);
    return 0;
}

static const ev_test_t stats_server_tests[] = {
    {"slow clients cannot starve the probes", test_slow_clients},
    {"slow clients are cut at the deadline", test_slow_clients_are_cut},
    {"every endpoint against a real database", test_endpoints},
    {"404 for unknown paths, 405 with Allow for other methods", test_errors},
    {"a scrape storm costs at most one query per interval", test_scrape_storm},
    {"reconnects after its session was killed", test_reconnects},
    {"unreachable database: /readyz 503, the rest still answers", test_unreachable_database},
    {"draining after SIGTERM: /readyz 503, /livez 200", test_readyz_draining},
    {"/readyz 503 while no provider can answer every check", test_ready_needs_a_provider},
    {"hung database: every endpoint still answers", test_hung_database},
    {"bad options are refused without echoing secrets", test_bad_options},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"stats_server", suite_init, suite_clean, stats_server_tests, NULL, NULL},
    EV_SUITE_END,
};

int main(int argc, char **argv)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 2;
    int rc = ev_test_run(argc, argv, suites);
    curl_global_cleanup();
    return rc;
}
