/*
 * test_api.c - the organisers' API end to end: the real `event-validator
 * serve` (real Postgres, provider-sim, real HTTP through libcurl) and a
 * webhook receiver run by this test.
 *
 * Upload -> verdict -> webhook received, its Standard Webhooks signature
 * checked here; idempotent retries; 401/403/404/405/409/413/415/422/429;
 * nothing stored by a refused upload; a receiver that is down and comes
 * back (delivered), also across a SIGTERM restart and a kill -9 of serve
 * between the final status and the delivery.
 *
 * Needs Postgres (DATABASE_URL) and EV_BUILD_DIR (set by CTest).
 */
#include "ev/error.h"
#include "ev/hash.h"
#include "ev/provider.h"
#include "ev/tokens.h"
#include "ev/webhook.h"
#include "pgtest.h"
#include "simctl.h"

#include <CUnit/Basic.h>
#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "runner.h"

#define BOUND_MS 30000

static char *url;     /* the test database */
static simctl_t *sim; /* provider-sim */
static char tmpdir[64], updir[96];
static pid_t serve_pid = -1;
static int serve_runs;
static char serve_log[160];
static char api[64]; /* http://127.0.0.1:PORT */
static char *admin;  /* admin token */
static int64_t event_id;
static char *secret; /* the event's webhook secret */

static const unsigned char png[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
    0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00,
    0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78,
    0xda, 0x63, 0x64, 0xf8, 0xcf, 0x50, 0x0f, 0x00, 0x03, 0x86, 0x01, 0x80, 0x5a, 0x34,
    0x7d, 0x6b, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
/* An empty ZIP archive: what libmagic calls application/zip. */
static const unsigned char zip[22] = {'P', 'K', 0x05, 0x06};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t sql_i64(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int64_t sql_i64(const char *fmt, ...)
{
    char q[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof(q), fmt, ap);
    va_end(ap);
    int64_t v = -1;
    if (ev_pgtest_query_i64(url, q, &v) != 0)
        return -1;
    return v;
}

/* ---- The webhook receiver. ---- */

typedef struct hook {
    char id[64], ts[32], sig[128];
    char *body;
} hook_t;

static struct {
    pthread_mutex_t lock;
    struct MHD_Daemon *d;
    int port;
    hook_t hooks[256]; /* guarded by lock */
    int n;
} rx = {.lock = PTHREAD_MUTEX_INITIALIZER};

typedef struct rxreq {
    char *body;
    size_t len;
} rxreq_t;

static enum MHD_Result rx_handle(void *cls, struct MHD_Connection *c, const char *u,
                                 const char *method, const char *v, const char *data, size_t *size,
                                 void **rc)
{
    (void)cls, (void)u, (void)method, (void)v;
    rxreq_t *r = *rc;
    if (!r) {
        *rc = calloc(1, sizeof(rxreq_t));
        return MHD_YES;
    }
    if (*size) {
        r->body = realloc(r->body, r->len + *size + 1);
        memcpy(r->body + r->len, data, *size);
        r->len += *size;
        r->body[r->len] = '\0';
        *size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&rx.lock);
    if (rx.n < 256) {
        hook_t *h = &rx.hooks[rx.n++];
        const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-id");
        const char *ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-timestamp");
        const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-signature");
        snprintf(h->id, sizeof(h->id), "%s", id ? id : "");
        snprintf(h->ts, sizeof(h->ts), "%s", ts ? ts : "");
        snprintf(h->sig, sizeof(h->sig), "%s", sig ? sig : "");
        h->body = r->body ? strdup(r->body) : strdup("");
    }
    pthread_mutex_unlock(&rx.lock);
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(c, 204, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void rx_done(void *cls, struct MHD_Connection *c, void **rc,
                    enum MHD_RequestTerminationCode t)
{
    (void)cls, (void)c, (void)t;
    rxreq_t *r = *rc;
    if (r) {
        free(r->body);
        free(r);
    }
}

/* Starts the receiver (on its first port again after a stop). */
static int rx_start(void)
{
    rx.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, (uint16_t)rx.port, NULL,
                            NULL, rx_handle, NULL, MHD_OPTION_NOTIFY_COMPLETED, rx_done, NULL,
                            MHD_OPTION_END);
    if (!rx.d) {
        fprintf(stderr, "cannot start the webhook receiver on port %d\n", rx.port);
        return -1;
    }
    rx.port = MHD_get_daemon_info(rx.d, MHD_DAEMON_INFO_BIND_PORT)->port;
    return 0;
}

static void rx_stop(void)
{
    if (rx.d)
        MHD_stop_daemon(rx.d);
    rx.d = NULL;
}

static int rx_count(void)
{
    pthread_mutex_lock(&rx.lock);
    int n = rx.n;
    pthread_mutex_unlock(&rx.lock);
    return n;
}

/* Waits for a webhook about submission `sid`; copies it into *out. */
static bool rx_wait(int64_t sid, hook_t *out)
{
    char needle[64];
    snprintf(needle, sizeof(needle), "\"submission\":{\"id\":%" PRId64 ",", sid);
    for (int64_t end = mono_ms() + BOUND_MS; mono_ms() < end; sleep_ms(20)) {
        pthread_mutex_lock(&rx.lock);
        for (int i = 0; i < rx.n; i++) {
            if (strstr(rx.hooks[i].body, needle)) {
                *out = rx.hooks[i];
                out->body = strdup(rx.hooks[i].body);
                pthread_mutex_unlock(&rx.lock);
                return true;
            }
        }
        pthread_mutex_unlock(&rx.lock);
    }
    return false;
}

/* ---- HTTP client. ---- */

typedef struct resp {
    long status;
    char body[65536];
    size_t len;
    char retry_after[32], www_auth[128], replayed[16];
} resp_t;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    resp_t *r = ud;
    size_t k = sz * n, room = sizeof(r->body) - 1 - r->len;
    memcpy(r->body + r->len, p, k < room ? k : room);
    r->len += k < room ? k : room;
    r->body[r->len] = '\0';
    return k;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    resp_t *r = ud;
    size_t k = sz * n;
    struct {
        const char *name;
        char *dst;
        size_t cap;
    } want[] = {{"retry-after:", r->retry_after, sizeof(r->retry_after)},
                {"www-authenticate:", r->www_auth, sizeof(r->www_auth)},
                {"idempotent-replayed:", r->replayed, sizeof(r->replayed)}};
    for (size_t i = 0; i < 3; i++) {
        size_t m = strlen(want[i].name);
        if (k > m && strncasecmp(p, want[i].name, m) == 0) {
            size_t v = k - m;
            while (v && (p[m + v - 1] == '\r' || p[m + v - 1] == '\n'))
                v--;
            while (v && p[m] == ' ')
                m++, v--;
            snprintf(want[i].dst, want[i].cap, "%.*s", (int)v, p + m);
        }
    }
    return k;
}

typedef struct part {
    const char *name, *filename;
    const void *data;
    size_t len; /* data NULL: a text field of strlen(filename) */
} part_t;

/* One request. token NULL: no Authorization. parts: multipart fields ending
 * with a NULL name; json: a JSON body; both NULL: no body. */
static void call(resp_t *r, const char *method, const char *path, const char *token,
                 const char *idem, const part_t *parts, const char *json)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    curl_mime *mime = NULL;
    char u[256], auth[256], key[300];
    memset(r, 0, sizeof(*r));
    snprintf(u, sizeof(u), "%s%s", api, path);
    curl_easy_setopt(c, CURLOPT_URL, u);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (idem) {
        snprintf(key, sizeof(key), "Idempotency-Key: %s", idem);
        h = curl_slist_append(h, key);
    }
    if (parts) {
        mime = curl_mime_init(c);
        for (const part_t *p = parts; p->name; p++) {
            curl_mimepart *mp = curl_mime_addpart(mime);
            curl_mime_name(mp, p->name);
            if (p->data) {
                curl_mime_data(mp, p->data, p->len);
                curl_mime_filename(mp, p->filename);
            } else {
                curl_mime_data(mp, p->filename, CURL_ZERO_TERMINATED);
            }
        }
        curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    } else if (json) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)BOUND_MS);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK)
        fprintf(stderr, "curl %s %s: %s\n", method, path, curl_easy_strerror(cc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_mime_free(mime);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

/* An integer member of the response body (-1 when absent). */
static int64_t body_i64(const resp_t *r, const char *key)
{
    json_object *o = json_tokener_parse(r->body), *v = NULL;
    int64_t n = o && json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : -1;
    json_object_put(o);
    return n;
}

static bool error_code_is(const resp_t *r, const char *code)
{
    char want[80];
    snprintf(want, sizeof(want), "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    return strncmp(r->body, want, strlen(want)) == 0;
}

/* ---- serve. ---- */

/* The port in the current serve log after `prefix` (waits for it), or -1. */
static int log_port(const char *prefix)
{
    for (int64_t end = mono_ms() + BOUND_MS; mono_ms() < end; sleep_ms(20)) {
        FILE *f = fopen(serve_log, "r");
        char line[2048];
        int port = -1;
        while (f && fgets(line, sizeof(line), f)) {
            const char *p = strstr(line, prefix);
            if (p)
                port = (int)strtol(p + strlen(prefix), NULL, 10);
        }
        if (f)
            fclose(f);
        if (port > 0)
            return port;
    }
    return -1;
}

static int serve_start(void)
{
    char log[160], env_s[32][200];
    char *env[33];
    int n = 0;
#define ENV(...) snprintf(env_s[n], sizeof(env_s[n]), __VA_ARGS__), env[n] = env_s[n], n++
    ENV("DATABASE_URL=%s", url);
    ENV("GEMINI_API_KEY=%s", SIMCTL_GEMINI_KEY);
    ENV("GEMINI_BASE_URL=%s", simctl_gemini_url(sim));
    ENV("GROQ_API_KEY=%s", SIMCTL_GROQ_KEY);
    ENV("GROQ_BASE_URL=%s", simctl_groq_url(sim));
    ENV("UPLOAD_DIR=%s", updir);
    ENV("API_ADDR=127.0.0.1");
    ENV("API_PORT=0");
    ENV("STATS_ADDR=127.0.0.1");
    ENV("STATS_PORT=0");
    ENV("WEBHOOK_ALLOW_PRIVATE=true");
    ENV("WEBHOOK_RETRY_BASE_MS=100");
    ENV("WEBHOOK_RETRY_MAX_MS=300");
    ENV("IMAGE_MAX_BYTES=64K");
    ENV("API_UPLOADS_PER_MINUTE=1");
    ENV("API_UPLOAD_BURST=40");
    ENV("DEFAULT_MAX_WORKERS=2");
    ENV("WORKER_STAGGER_MS=0");
    ENV("STAGGER_MIN_MS=0");
    ENV("STAGGER_MAX_MS=0");
    ENV("LOG_LEVEL=info");
    ENV("API_IDLE_TIMEOUT_S=2");
#undef ENV
    env[n] = NULL;
    char bin[256];
    snprintf(bin, sizeof(bin), "%s/event-validator", getenv("EV_BUILD_DIR"));
    snprintf(log, sizeof(log), "%s/serve%d.err", tmpdir, ++serve_runs);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char *argv[] = {bin, "serve", NULL};
    int rc = posix_spawn(&serve_pid, bin, &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    /* The API port comes from the log line that announces it. */
    snprintf(serve_log, sizeof(serve_log), "%s", log);
    int port = log_port("API listening on 127.0.0.1:");
    api[0] = '\0';
    if (port > 0)
        snprintf(api, sizeof(api), "http://127.0.0.1:%d", port);
    if (!api[0])
        fprintf(stderr, "serve did not announce its API port (see %s)\n", log);
    return api[0] ? 0 : -1;
}

static int serve_stop(int sig)
{
    int status = -1;
    if (serve_pid <= 0)
        return -1;
    kill(serve_pid, sig);
    for (int64_t end = mono_ms() + BOUND_MS; mono_ms() < end; sleep_ms(20))
        if (waitpid(serve_pid, &status, WNOHANG) == serve_pid)
            break;
    serve_pid = -1;
    return status;
}

/* ---- Suite. ---- */

static int suite_init(void)
{
    char err[256];
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ev-api-XXXXXX");
    if (!mkdtemp(tmpdir) || ev_pgtest_create_db(&url) != 0 || simctl_start(&sim, NULL) != 0)
        return -1;
    snprintf(updir, sizeof(updir), "%s/uploads", tmpdir);
    if (mkdir(updir, 0700) != 0)
        return -1;
    ev_db_t *db = NULL;
    int64_t id = 0;
    if (ev_pgtest_connect(&db, url) != 0)
        return -1;
    int rc = ev_tokens_create(db, "test admin", true, 0, &admin, &id, err, sizeof(err));
    ev_db_free(db);
    if (rc != 0)
        return -1;
    return rx_start() == 0 && serve_start() == 0 ? 0 : -1;
}

/* Removes dir and everything below it (only files and directories). */
static void rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char p[512];
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (e->d_type == DT_DIR)
            rmtree(p);
        else
            unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* Files beneath UPLOAD_DIR/api, temporary ones included. */
static int stored_files(void)
{
    char p[160];
    int n = 0;
    snprintf(p, sizeof(p), "%s/api", updir);
    DIR *d = opendir(p);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += e->d_name[0] != '.' || strncmp(e->d_name, ".tmp-", 5) == 0;
    if (d)
        closedir(d);
    return n;
}

static int suite_clean(void)
{
    serve_stop(SIGTERM);
    rx_stop();
    for (int i = 0; i < rx.n; i++)
        free(rx.hooks[i].body);
    simctl_free(sim);
    ev_pgtest_drop_db(url);
    free(admin);
    free(secret);
    rmtree(tmpdir);
    return 0;
}

/* ---- Tests. ---- */

static const part_t image_only[] = {{"title", "Street trees", NULL, 0},
                                    {"image", "tree.png", png, sizeof(png)},
                                    {NULL, NULL, NULL, 0}};

/* The event every upload test uses, with the receiver as its webhook;
 * made once, by whichever test runs first (a filter may run one alone). */
static void ensure_event(void)
{
    resp_t r;
    if (event_id > 0)
        return;
    call(&r, "POST", "/v1/events", admin, NULL, NULL,
         "{\"name\":\"Green city\",\"theme\":\"sustainable cities\",\"require_image\":true,"
         "\"webhook_url\":\"http://127.0.0.1:1/placeholder\"}");
    CU_ASSERT_EQUAL_FATAL(r.status, 201);
    event_id = body_i64(&r, "id");
    CU_ASSERT_TRUE(event_id > 0);
    json_object *o = json_tokener_parse(r.body), *v = NULL;
    CU_ASSERT_TRUE(json_object_object_get_ex(o, "webhook_secret", &v));
    secret = strdup(json_object_get_string(v));
    json_object_put(o);
    CU_ASSERT_EQUAL(strncmp(secret, "whsec_", 6), 0);
    /* The receiver's port is only known now. */
    char q[256];
    snprintf(q, sizeof(q),
             "UPDATE events SET webhook_url = 'http://127.0.0.1:%d/hook' WHERE id = %" PRId64,
             rx.port, event_id);
    CU_ASSERT_EQUAL(ev_pgtest_exec(url, q), 0);
}

static void test_events_and_auth(void)
{
    resp_t r;
    call(&r, "POST", "/v1/events", NULL, NULL, NULL, "{}");
    CU_ASSERT_EQUAL(r.status, 401);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.www_auth, "Bearer"));
    CU_ASSERT_TRUE(error_code_is(&r, "unauthorized"));
    call(&r, "GET", "/v1/events/1", "ev_1_0000", NULL, NULL, NULL);
    CU_ASSERT_EQUAL(r.status, 401);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.www_auth, "invalid_token"));

    ensure_event();
    char q[256];
    /* The secret is shown once: GET never returns it. */
    snprintf(q, sizeof(q), "/v1/events/%" PRId64, event_id);
    call(&r, "GET", q, admin, NULL, NULL, NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_PTR_NULL(strstr(r.body, "whsec_"));

    call(&r, "POST", "/v1/events", admin, NULL, NULL, "{\"name\":\"Green city\",\"theme\":\"x\"}");
    CU_ASSERT_EQUAL(r.status, 409);
    call(&r, "POST", "/v1/events", admin, NULL, NULL, "{\"name\":");
    CU_ASSERT_EQUAL(r.status, 400);
    char *huge = malloc(70 * 1024);
    memset(huge, ' ', 70 * 1024 - 1);
    huge[70 * 1024 - 1] = '\0';
    huge[0] = '{';
    huge[70 * 1024 - 2] = '}';
    call(&r, "POST", "/v1/events", admin, NULL, NULL, huge);
    CU_ASSERT_EQUAL(r.status, 413);
    CU_ASSERT_TRUE(error_code_is(&r, "body_too_large"));
    free(huge);
    call(&r, "POST", "/v1/events", admin, NULL, NULL, "{\"name\":\"n\",\"theme\":\"t\",\"x\":1}");
    CU_ASSERT_EQUAL(r.status, 422);
    CU_ASSERT_TRUE(error_code_is(&r, "unknown_field"));
    call(&r, "POST", "/v1/events", admin, NULL, NULL,
         "{\"name\":\"n\",\"theme\":\"t\",\"webhook_url\":\"ftp://x\"}");
    CU_ASSERT_EQUAL(r.status, 422);
    call(&r, "DELETE", q, admin, NULL, NULL, NULL);
    CU_ASSERT_EQUAL(r.status, 405);
    call(&r, "GET", "/v1/nothing", admin, NULL, NULL, NULL);
    CU_ASSERT_EQUAL(r.status, 404);

    /* Another event's token: that event's resources do not exist for it,
     * and it may not create events. */
    call(&r, "POST", "/v1/events", admin, NULL, NULL, "{\"name\":\"Other\",\"theme\":\"t\"}");
    CU_ASSERT_EQUAL_FATAL(r.status, 201);
    int64_t other = body_i64(&r, "id");
    ev_db_t *db = NULL;
    char *tok = NULL, err[128];
    int64_t tid;
    CU_ASSERT_EQUAL_FATAL(ev_pgtest_connect(&db, url), 0);
    CU_ASSERT_EQUAL_FATAL(ev_tokens_create(db, "other", false, other, &tok, &tid, err, 128), 0);
    ev_db_free(db);
    call(&r, "GET", q, tok, NULL, NULL, NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    snprintf(q, sizeof(q), "/v1/events/%" PRId64 "/submissions", event_id);
    call(&r, "POST", q, tok, NULL, image_only, NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    call(&r, "GET", q, tok, NULL, NULL, NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    call(&r, "POST", "/v1/events", tok, NULL, NULL, "{\"name\":\"Mine\",\"theme\":\"t\"}");
    CU_ASSERT_EQUAL(r.status, 403);
    /* Its own event is fine. */
    snprintf(q, sizeof(q), "/v1/events/%" PRId64, other);
    call(&r, "GET", q, tok, NULL, NULL, NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    free(tok);
}

static int64_t upload(const part_t *parts, const char *idem, resp_t *r)
{
    char path[96];
    ensure_event();
    snprintf(path, sizeof(path), "/v1/events/%" PRId64 "/submissions", event_id);
    call(r, "POST", path, admin, idem, parts, NULL);
    return r->status == 202 ? body_i64(r, "id") : -1;
}

/* Checks a received webhook the way a receiver must. */
static void verify_hook(const hook_t *h, int64_t sid, const char *status)
{
    char *expect = NULL;
    int64_t ts = strtoll(h->ts, NULL, 10);
    CU_ASSERT_EQUAL(strncmp(h->id, "whd_", 4), 0);
    CU_ASSERT_TRUE(llabs((long long)(ts - time(NULL))) < 300);
    CU_ASSERT_EQUAL_FATAL(ev_webhook_sign(secret, h->id, ts, h->body, strlen(h->body), &expect), 0);
    CU_ASSERT_STRING_EQUAL(h->sig, expect);
    free(expect);
    json_object *o = json_tokener_parse(h->body), *v = NULL, *sub = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_TRUE(json_object_object_get_ex(o, "type", &v));
    CU_ASSERT_STRING_EQUAL(json_object_get_string(v), "submission.finished");
    CU_ASSERT_TRUE(json_object_object_get_ex(o, "submission", &sub));
    CU_ASSERT_TRUE(json_object_object_get_ex(sub, "id", &v));
    CU_ASSERT_EQUAL(json_object_get_int64(v), sid);
    CU_ASSERT_TRUE(json_object_object_get_ex(sub, "status", &v));
    CU_ASSERT_STRING_EQUAL(json_object_get_string(v), status);
    json_object_put(o);
}

static void test_upload_verdict_webhook(void)
{
    resp_t r;
    hook_t h;
    char path[96];
    int64_t sid = upload(image_only, NULL, &r);
    CU_ASSERT_TRUE_FATAL(sid > 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"title\":\"Street trees\""));
    snprintf(path, sizeof(path), "/v1/submissions/%" PRId64, sid);
    bool done = false;
    for (int64_t end = mono_ms() + BOUND_MS; !done && mono_ms() < end; sleep_ms(50)) {
        call(&r, "GET", path, admin, NULL, NULL, NULL);
        done = strstr(r.body, "\"status\":\"validated\"") != NULL;
    }
    CU_ASSERT_TRUE(done);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"image\":{\"verdict\":\"pass\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"provider\":\"gemini\""));
    CU_ASSERT_TRUE_FATAL(rx_wait(sid, &h));
    verify_hook(&h, sid, "validated");
    /* A tampered body no longer matches the signature. */
    char *bad = NULL;
    h.body[strlen(h.body) - 2] ^= 1;
    CU_ASSERT_EQUAL(
        ev_webhook_sign(secret, h.id, strtoll(h.ts, NULL, 10), h.body, strlen(h.body), &bad), 0);
    CU_ASSERT_STRING_NOT_EQUAL(h.sig, bad);
    free(bad);
    free(h.body);
    CU_ASSERT_EQUAL(sql_i64("SELECT count(*) FROM webhook_deliveries WHERE submission_id = %" PRId64
                            " AND status = 'delivered'",
                            sid),
                    1);
    /* Listed, by status and by keyset. */
    snprintf(path, sizeof(path), "/v1/events/%" PRId64 "/submissions?status=validated&limit=1",
             event_id);
    call(&r, "GET", path, admin, NULL, NULL, NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"status\":\"validated\""));
    snprintf(path, sizeof(path), "/v1/events/%" PRId64 "/submissions?after=%" PRId64, event_id,
             sid);
    call(&r, "GET", path, admin, NULL, NULL, NULL);
    CU_ASSERT_STRING_EQUAL(r.body, "{\"submissions\":[],\"next_after\":null}");
}

static void test_idempotent_retry(void)
{
    resp_t r;
    const part_t a[] = {{"title", "Idempotent", NULL, 0},
                        {"image", "a.png", png, sizeof(png)},
                        {NULL, NULL, NULL, 0}};
    const part_t b[] = {{"title", "Idempotent, edited", NULL, 0},
                        {"image", "a.png", png, sizeof(png)},
                        {NULL, NULL, NULL, 0}};
    int files = stored_files();
    int64_t first = upload(a, "order-42", &r);
    CU_ASSERT_TRUE_FATAL(first > 0);
    CU_ASSERT_STRING_EQUAL(r.replayed, "false");
    int64_t again = upload(a, "order-42", &r);
    CU_ASSERT_EQUAL(again, first);
    CU_ASSERT_STRING_EQUAL(r.replayed, "true");
    CU_ASSERT_EQUAL(upload(b, "order-42", &r), -1);
    CU_ASSERT_EQUAL(r.status, 409);
    CU_ASSERT_TRUE(error_code_is(&r, "idempotency_conflict"));
    CU_ASSERT_EQUAL(sql_i64("SELECT count(*) FROM submissions WHERE title LIKE 'Idempotent%%'"), 1);
    /* The replay and the conflict kept none of their files. */
    CU_ASSERT_EQUAL(stored_files(), files + 1);
    /* Another key is another submission. */
    CU_ASSERT_TRUE(upload(a, "order-43", &r) > first);
}

static void test_refused_uploads_store_nothing(void)
{
    ensure_event();
    resp_t r;
    char path[96], big[100 * 1024];
    memcpy(big, png, sizeof(png));
    memset(big + sizeof(png), 7, sizeof(big) - sizeof(png));
    int64_t subs = sql_i64("SELECT count(*) FROM submissions");
    int files = stored_files();
    snprintf(path, sizeof(path), "/v1/events/%" PRId64 "/submissions", event_id);

    call(&r, "POST", path, admin, NULL, NULL, "{\"title\":\"json\"}");
    CU_ASSERT_EQUAL(r.status, 415);
    const part_t too_big[] = {
        {"title", "Big", NULL, 0}, {"image", "big.png", big, sizeof(big)}, {NULL, NULL, NULL, 0}};
    upload(too_big, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 413);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "IMAGE_MAX_BYTES"));
    const part_t lying[] = {{"title", "Slides", NULL, 0},
                            {"pdf", "slides.pdf", zip, sizeof(zip)},
                            {NULL, NULL, NULL, 0}};
    upload(lying, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 422);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"message\":\"declared PDF is a ZIP archive\""));
    const part_t untitled[] = {{"image", "a.png", png, sizeof(png)}, {NULL, NULL, NULL, 0}};
    upload(untitled, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 422);
    CU_ASSERT_TRUE(error_code_is(&r, "missing_title"));
    const part_t unknown[] = {
        {"title", "t", NULL, 0}, {"colour", "red", NULL, 0}, {NULL, NULL, NULL, 0}};
    upload(unknown, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 422);
    CU_ASSERT_TRUE(error_code_is(&r, "unknown_field"));
    part_t many[8] = {{"title", "Many", NULL, 0}, {NULL, NULL, NULL, 0}};
    for (int i = 1; i < 7; i++)
        many[i] = (part_t){"image", "a.png", png, sizeof(png)};
    upload(many, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 422);
    CU_ASSERT_TRUE(error_code_is(&r, "too_many_images"));
    const part_t two_pdfs[] = {{"title", "t", NULL, 0},
                               {"pdf", "a.pdf", "%PDF-1.4\n", 9},
                               {"pdf", "b.pdf", "%PDF-1.4\n", 9},
                               {NULL, NULL, NULL, 0}};
    upload(two_pdfs, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 422);
    const part_t bad_priority[] = {
        {"title", "t", NULL, 0}, {"priority", "high", NULL, 0}, {NULL, NULL, NULL, 0}};
    upload(bad_priority, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 422);

    CU_ASSERT_EQUAL(sql_i64("SELECT count(*) FROM submissions"), subs);
    CU_ASSERT_EQUAL(stored_files(), files);
}

static void test_rate_limit(void)
{
    ensure_event();
    resp_t r;
    ev_db_t *db = NULL;
    char *tok = NULL, err[128], path[96];
    int64_t tid;
    CU_ASSERT_EQUAL_FATAL(ev_pgtest_connect(&db, url), 0);
    CU_ASSERT_EQUAL_FATAL(ev_tokens_create(db, "busy", false, event_id, &tok, &tid, err, 128), 0);
    ev_db_free(db);
    snprintf(path, sizeof(path), "/v1/events/%" PRId64 "/submissions", event_id);
    /* The burst (40) is spent by uploads that are refused anyway. */
    const part_t untitled[] = {{"description", "no title", NULL, 0}, {NULL, NULL, NULL, 0}};
    for (int i = 0; i < 40; i++) {
        call(&r, "POST", path, tok, NULL, untitled, NULL);
        CU_ASSERT_EQUAL(r.status, 422);
    }
    call(&r, "POST", path, tok, NULL, image_only, NULL);
    CU_ASSERT_EQUAL(r.status, 429);
    CU_ASSERT_TRUE(error_code_is(&r, "rate_limited"));
    CU_ASSERT_TRUE(strtol(r.retry_after, NULL, 10) >= 1 && strtol(r.retry_after, NULL, 10) <= 60);
    /* Reading is not limited; the admin token has its own allowance. */
    call(&r, "GET", path, tok, NULL, NULL, NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(upload(image_only, NULL, &r) > 0);
    free(tok);
}

/* A client that starts an upload and goes silent: its temporary file is
 * deleted when the idle timeout (2 s here) closes the connection, and while
 * it hangs other requests are served. */
static void test_abandoned_upload(void)
{
    resp_t r;
    ensure_event();
    int files = stored_files();
    int64_t subs = sql_i64("SELECT count(*) FROM submissions");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_port = htons((uint16_t)strtol(strrchr(api, ':') + 1, NULL, 10));
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CU_ASSERT_EQUAL_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char head[1024], pad[4096];
    int n = snprintf(head, sizeof(head),
                     "POST /v1/events/%" PRId64 "/submissions HTTP/1.1\r\nHost: t\r\n"
                     "Authorization: Bearer %s\r\n"
                     "Content-Type: multipart/form-data; boundary=XyZ\r\n"
                     "Content-Length: 60000\r\n\r\n"
                     "--XyZ\r\nContent-Disposition: form-data; name=\"image\"; "
                     "filename=\"slow.png\"\r\nContent-Type: image/png\r\n\r\n",
                     event_id, admin);
    memset(pad, 'x', sizeof(pad));
    CU_ASSERT_EQUAL(write(fd, head, (size_t)n), n);
    CU_ASSERT_EQUAL(write(fd, png, sizeof(png)), (ssize_t)sizeof(png));
    CU_ASSERT_EQUAL(write(fd, pad, sizeof(pad)), (ssize_t)sizeof(pad));
    bool started = false;
    for (int64_t end = mono_ms() + BOUND_MS; !started && mono_ms() < end; sleep_ms(20))
        started = stored_files() > files;
    CU_ASSERT_TRUE(started);
    call(&r, "GET", "/v1/events/1/submissions?limit=1", admin, NULL, NULL, NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    bool gone = false;
    for (int64_t end = mono_ms() + BOUND_MS; !gone && mono_ms() < end; sleep_ms(50))
        gone = stored_files() == files;
    CU_ASSERT_TRUE(gone);
    CU_ASSERT_EQUAL(sql_i64("SELECT count(*) FROM submissions"), subs);
    close(fd);
}

/* Waits until the submission's delivery has failed at least `n` times. */
static bool wait_failed_attempts(int64_t sid, int n)
{
    for (int64_t end = mono_ms() + BOUND_MS; mono_ms() < end; sleep_ms(50))
        if (sql_i64("SELECT coalesce(max(attempts), 0) FROM webhook_deliveries WHERE"
                    " submission_id = %" PRId64 " AND status = 'pending' AND last_error IS NOT"
                    " NULL",
                    sid) >= n)
            return true;
    return false;
}

static void test_receiver_down_then_up(void)
{
    resp_t r;
    hook_t h;

    /* Down while the verdict is reached: retried, delivered once it is back. */
    rx_stop();
    int64_t sid = upload(image_only, NULL, &r);
    CU_ASSERT_TRUE_FATAL(sid > 0);
    CU_ASSERT_TRUE(wait_failed_attempts(sid, 2));
    CU_ASSERT_EQUAL_FATAL(rx_start(), 0);
    CU_ASSERT_TRUE(rx_wait(sid, &h));
    verify_hook(&h, sid, "validated");
    free(h.body);

    /* Down across a graceful restart of serve. */
    rx_stop();
    sid = upload(image_only, NULL, &r);
    CU_ASSERT_TRUE_FATAL(sid > 0);
    CU_ASSERT_TRUE(wait_failed_attempts(sid, 1));
    int status = serve_stop(SIGTERM);
    CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_EQUAL_FATAL(rx_start(), 0);
    CU_ASSERT_EQUAL_FATAL(serve_start(), 0);
    CU_ASSERT_TRUE(rx_wait(sid, &h));
    verify_hook(&h, sid, "validated");
    free(h.body);
}

/* kill -9 after the final status is committed and before the webhook is
 * delivered: the outbox row, written in the status's transaction, is sent
 * by the next process. */
static void test_kill9_between_verdict_and_delivery(void)
{
    resp_t r;
    hook_t h;
    rx_stop();
    int before = rx_count();
    int64_t sid = upload(image_only, NULL, &r);
    CU_ASSERT_TRUE_FATAL(sid > 0);
    CU_ASSERT_TRUE(wait_failed_attempts(sid, 1));
    CU_ASSERT_EQUAL(sql_i64("SELECT count(*) FROM submissions WHERE id = %" PRId64
                            " AND status = 'validated'",
                            sid),
                    1);
    int status = serve_stop(SIGKILL);
    CU_ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CU_ASSERT_EQUAL(rx_count(), before);
    CU_ASSERT_EQUAL_FATAL(rx_start(), 0);
    CU_ASSERT_EQUAL_FATAL(serve_start(), 0);
    CU_ASSERT_TRUE(rx_wait(sid, &h));
    verify_hook(&h, sid, "validated");
    free(h.body);
}

/* Runs `event-validator ARGS...` against the test database; its stdout goes
 * to *out (caller frees). Returns the exit status, -1 when it did not run. */
static int run_cli(char **out, const char *const *args)
{
    char bin[256], path[160], db[600];
    char *argv[8];
    int n = 0, status = -1;
    snprintf(bin, sizeof(bin), "%s/event-validator", getenv("EV_BUILD_DIR"));
    snprintf(path, sizeof(path), "%s/cli.out", tmpdir);
    snprintf(db, sizeof(db), "DATABASE_URL=%s", url);
    char *env[] = {db, NULL};
    argv[n++] = bin;
    for (int i = 0; args[i] && n < 7; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    int rc = posix_spawn(&pid, bin, &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    FILE *f = fopen(path, "r");
    *out = calloc(1, 65536);
    if (f) {
        size_t got = fread(*out, 1, 65535, f);
        (*out)[got] = '\0';
        fclose(f);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A delivery that outlived WEBHOOK_MAX_AGE_S is failed; operators see it in
 * `webhooks list --failed` and /stats and send it again with `webhooks
 * retry`. */
static void test_failed_delivery_retried_by_operator(void)
{
    resp_t r;
    hook_t h;
    char *out = NULL, stats[96], id_s[24];
    rx_stop();
    int64_t sid = upload(image_only, NULL, &r);
    CU_ASSERT_TRUE_FATAL(sid > 0);
    CU_ASSERT_TRUE(wait_failed_attempts(sid, 1));
    char q[256];
    snprintf(q, sizeof(q),
             "UPDATE webhook_deliveries SET created_at = now() - interval '2 days'"
             " WHERE submission_id = %" PRId64,
             sid);
    CU_ASSERT_EQUAL(ev_pgtest_exec(url, q), 0);
    int64_t did = -1;
    for (int64_t end = mono_ms() + BOUND_MS; did < 0 && mono_ms() < end; sleep_ms(50))
        did = sql_i64("SELECT coalesce(max(id), -1) FROM webhook_deliveries WHERE submission_id = "
                      "%" PRId64 " AND status = 'failed'",
                      sid);
    CU_ASSERT_TRUE_FATAL(did > 0);
    snprintf(id_s, sizeof(id_s), "%" PRId64, did);

    CU_ASSERT_EQUAL(run_cli(&out, (const char *const[]){"webhooks", "list", "--failed", NULL}), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "failed"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "connect"));
    free(out);
    snprintf(stats, sizeof(stats), "http://127.0.0.1:%d/stats",
             log_port("stats server listening on 127.0.0.1:"));
    bool seen = false;
    for (int64_t end = mono_ms() + BOUND_MS; !seen && mono_ms() < end; sleep_ms(200)) {
        snprintf(api, sizeof(api), "%.*s", (int)(strlen(stats) - 6), stats);
        call(&r, "GET", "/stats", NULL, NULL, NULL, NULL);
        seen = strstr(r.body, "\"webhooks\":{\"pending\":0,\"failed\":1}") != NULL;
    }
    CU_ASSERT_TRUE(seen);
    snprintf(api, sizeof(api), "http://127.0.0.1:%d", log_port("API listening on 127.0.0.1:"));

    CU_ASSERT_EQUAL_FATAL(rx_start(), 0);
    CU_ASSERT_EQUAL(run_cli(&out, (const char *const[]){"webhooks", "retry", id_s, NULL}), 0);
    free(out);
    CU_ASSERT_TRUE(rx_wait(sid, &h));
    verify_hook(&h, sid, "validated");
    free(h.body);
    CU_ASSERT_EQUAL(run_cli(&out, (const char *const[]){"webhooks", "retry", "999999", NULL}), 1);
    free(out);
}

/* The example of the Standard Webhooks specification. */
static void test_signature_known_answer(void)
{
    char *sig = NULL;
    const char *body = "{\"test\": 2432232314}";
    CU_ASSERT_EQUAL(ev_webhook_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                                    "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body),
                                    &sig),
                    0);
    CU_ASSERT_STRING_EQUAL(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    free(sig);
    CU_ASSERT_EQUAL(ev_webhook_sign("whsec_!!!", "m", 1, "", 0, &sig), EV_EINVAL);
}

static void test_webhook_targets(void)
{
    char why[200];
    const char *refused[] = {"http://127.0.0.1/x",   "http://localhost:8080/",
                             "http://10.1.2.3/",     "http://169.254.169.254/latest",
                             "http://[::1]/",        "http://[fe80::1]/",
                             "http://192.168.0.10/", "http://[::ffff:127.0.0.1]/",
                             "http://0.0.0.0/",      "http://172.20.0.1/"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(*refused); i++) {
        CU_ASSERT_EQUAL(ev_webhook_url_check(refused[i], false, why, sizeof(why)), EV_EINVAL);
        CU_ASSERT_EQUAL(ev_webhook_url_check(refused[i], true, why, sizeof(why)), 0);
    }
    CU_ASSERT_EQUAL(ev_webhook_url_check("https://hooks.example.org/ev", false, why, 200), 0);
    CU_ASSERT_EQUAL(ev_webhook_url_check("http://8.8.8.8/", false, why, 200), 0);
    CU_ASSERT_EQUAL(ev_webhook_url_check("ftp://example.org/", true, why, 200), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_webhook_url_check("http://u:p@example.org/", true, why, 200), EV_EINVAL);
}

/*
 * Three senders (as three replicas would run them) on one outbox of 150
 * deliveries, the receiver up: every delivery arrives exactly once (a row
 * sent by two senders would arrive twice), and each is marked delivered.
 */
static void test_senders_under_contention(void)
{
    char *db_url = NULL;
    ev_webhook_sender_t *senders[3] = {NULL, NULL, NULL};
    CU_ASSERT_EQUAL_FATAL(ev_pgtest_create_db(&db_url), 0);
    CU_ASSERT_EQUAL_FATAL(rx_start(), 0);
    pthread_mutex_lock(&rx.lock);
    int before = rx.n;
    pthread_mutex_unlock(&rx.lock);
    char q[512];
    snprintf(q, sizeof(q),
             "INSERT INTO events (name, theme, webhook_url, webhook_secret) VALUES ('c', 't',"
             " 'http://127.0.0.1:%d/hook', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');"
             "INSERT INTO submissions (event_id, title, status) SELECT id, 'sub ' || g,"
             " 'processing' FROM events, generate_series(1, 150) g;"
             "UPDATE submissions SET status = 'validated'",
             rx.port);
    CU_ASSERT_EQUAL_FATAL(ev_pgtest_exec(db_url, q), 0);
    ev_webhook_options_t o = EV_WEBHOOK_OPTIONS_INIT;
    o.database_url = db_url;
    o.allow_private = true;
    o.retry_base_ms = 100;
    o.retry_max_ms = 300;
    o.poll_ms = 100;
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL_FATAL(ev_webhook_sender_start(&senders[i], &o), 0);
    int64_t delivered = 0;
    for (int64_t end = mono_ms() + BOUND_MS; delivered < 150 && mono_ms() < end; sleep_ms(50))
        ev_pgtest_query_i64(db_url,
                            "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'",
                            &delivered);
    uint64_t sent = 0;
    for (int i = 0; i < 3; i++) {
        sent += ev_webhook_sender_delivered(senders[i]);
        ev_webhook_sender_stop(senders[i]);
    }
    CU_ASSERT_EQUAL(delivered, 150);
    CU_ASSERT_EQUAL(sent, 150);
    pthread_mutex_lock(&rx.lock);
    int got = rx.n - before, dup = 0;
    for (int i = before; i < rx.n; i++)
        for (int j = before; j < i; j++)
            dup += strcmp(rx.hooks[i].id, rx.hooks[j].id) == 0;
    for (int i = before; i < rx.n; i++)
        free(rx.hooks[i].body);
    rx.n = before;
    pthread_mutex_unlock(&rx.lock);
    CU_ASSERT_EQUAL(got, 150);
    CU_ASSERT_EQUAL(dup, 0);
    rx_stop();
    ev_pgtest_drop_db(db_url);
}

static const ev_test_t api_tests[] = {
    {"events and authentication", test_events_and_auth},
    {"upload, verdict, signed webhook", test_upload_verdict_webhook},
    {"idempotent retry", test_idempotent_retry},
    {"refused uploads store nothing", test_refused_uploads_store_nothing},
    {"per-token rate limit", test_rate_limit},
    {"abandoned upload times out, nothing kept", test_abandoned_upload},
    {"receiver down then up, across a restart", test_receiver_down_then_up},
    {"kill -9 between verdict and delivery", test_kill9_between_verdict_and_delivery},
    {"failed delivery retried by an operator", test_failed_delivery_retried_by_operator},
    EV_TEST_END,
};

static const ev_test_t pure_tests[] = {
    {"Standard Webhooks signature", test_signature_known_answer},
    {"webhook targets", test_webhook_targets},
    EV_TEST_END,
};

static const ev_test_t outbox_tests[] = {
    {"three senders, 150 deliveries, each once", test_senders_under_contention},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"webhook", NULL, NULL, pure_tests, NULL, NULL},
    {"outbox", NULL, NULL, outbox_tests, NULL, NULL},
    {"api", suite_init, suite_clean, api_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
