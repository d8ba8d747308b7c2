/*
 * test_http.c - the libcurl wrapper against a small in-process HTTP server
 * (libmicrohttpd on a loopback port): the key travels only in its header,
 * connections are reused, response headers are captured lower-cased, big
 * bodies are refused, and timeouts, refused connections and shutdown aborts
 * come back as their own error codes.
 */
#include "ev/error.h"
#include "ev/http.h"
#include "ev/secret.h"

#include <CUnit/Basic.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "runner.h"

#define KEY "http-test-key-abcdefghijklmnopqrstuvw"

static struct MHD_Daemon *daemon_;
static int port;
static atomic_int connections;

/* What the server saw last; guarded by mu. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static char seen_url[512];
static char seen_key[128];
static bool seen_expect;
static bool seen_key_arg;
static size_t seen_body_len;
static bool hang_entered;
static bool hang_release;

typedef struct conn_state {
    size_t len;
} conn_state_t;

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add(&connections, 1);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *body,
                             size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Retry-After", "2.5");
    MHD_add_response_header(r, "X-RateLimit-Remaining-Tokens", "  29157 ");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    conn_state_t *st = *con_cls;
    if (!st) {
        st = calloc(1, sizeof(*st));
        *con_cls = st;
        return MHD_YES;
    }
    if (*upload_size) {
        st->len += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    const char *k = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-goog-api-key");
    pthread_mutex_lock(&mu);
    snprintf(seen_url, sizeof(seen_url), "%s", url);
    snprintf(seen_key, sizeof(seen_key), "%s", k ? k : "");
    seen_expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect") != NULL;
    seen_key_arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "key") != NULL;
    seen_body_len = st->len;
    pthread_mutex_unlock(&mu);

    if (strcmp(url, "/big") == 0) {
        size_t n = 256 * 1024;
        char *big = malloc(n);
        memset(big, 'x', n);
        enum MHD_Result r = reply(c, 200, big, n);
        free(big);
        return r;
    }
    if (strcmp(url, "/hang") == 0) {
        /* Bounded: a broken test cannot hang forever. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 20;
        pthread_mutex_lock(&mu);
        hang_entered = true;
        pthread_cond_broadcast(&cond);
        while (!hang_release) {
            if (pthread_cond_timedwait(&cond, &mu, &until) != 0)
                break;
        }
        pthread_mutex_unlock(&mu);
        return reply(c, 200, "{}", 2);
    }
    if (strcmp(url, "/status/503") == 0)
        return reply(c, 503, "", 0);
    return reply(c, 200, "{\"ok\": true}", 12);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    free(*con_cls);
    *con_cls = NULL;
}

static char *url_for(const char *path)
{
    static char buf[128];
    snprintf(buf, sizeof(buf), "http://127.0.0.1:%d%s", port, path);
    return buf;
}

static ev_secret_t *key;

static ev_http_request_t request(const char *path, const char *body)
{
    ev_http_request_t r = {.url = url_for(path),
                           .body = body,
                           .body_len = strlen(body),
                           .secret = key,
                           .secret_prefix = "x-goog-api-key: ",
                           .timeout_ms = 10000,
                           .connect_timeout_ms = 5000};
    return r;
}

static void test_post_headers_and_keepalive(void)
{
    ev_http_t *h = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_http_new(&h), 0);
    int before = atomic_load(&connections);
    const char *extra[] = {"X-Test: 1"};
    ev_http_request_t rq = request("/v1beta/models/m:generateContent", "{\"a\": 1}");
    rq.headers = extra;
    rq.header_count = 1;
    ev_http_response_t resp;
    CU_ASSERT_EQUAL_FATAL(ev_http_post(h, &rq, &resp), 0);
    CU_ASSERT_EQUAL(resp.status, 200);
    CU_ASSERT_STRING_EQUAL(resp.body, "{\"ok\": true}");
    CU_ASSERT_EQUAL(resp.body_len, 12);
    CU_ASSERT_STRING_EQUAL(resp.error, "");
    CU_ASSERT(resp.elapsed_ms >= 0);
    /* Headers are captured with lower-case names and trimmed values. */
    CU_ASSERT_STRING_EQUAL(ev_http_response_header(&resp, "retry-after"), "2.5");
    CU_ASSERT_STRING_EQUAL(ev_http_response_header(&resp, "Retry-After"), "2.5");
    CU_ASSERT_STRING_EQUAL(ev_http_response_header(&resp, "x-ratelimit-remaining-tokens"), "29157");
    bool lower = true;
    for (size_t i = 0; i < resp.header_count; i++) {
        for (const char *p = resp.headers[i].name; *p; p++)
            lower = lower && !(*p >= 'A' && *p <= 'Z');
    }
    CU_ASSERT_TRUE(lower);
    ev_http_response_free(&resp);

    pthread_mutex_lock(&mu);
    CU_ASSERT_STRING_EQUAL(seen_key, KEY); /* the key is in its header ... */
    CU_ASSERT_FALSE(seen_key_arg);         /* ... never in the URL */
    CU_ASSERT_PTR_NULL(strstr(seen_url, KEY));
    CU_ASSERT_FALSE(seen_expect);
    CU_ASSERT_EQUAL(seen_body_len, 8);
    pthread_mutex_unlock(&mu);

    /* A second request on the same handle reuses the connection. */
    rq = request("/again", "{}");
    CU_ASSERT_EQUAL(ev_http_post(h, &rq, &resp), 0);
    CU_ASSERT_EQUAL(resp.status, 200);
    ev_http_response_free(&resp);
    CU_ASSERT_EQUAL(atomic_load(&connections) - before, 1);

    /* Non-2xx is still a response; an empty body is an empty string. */
    rq = request("/status/503", "{}");
    CU_ASSERT_EQUAL(ev_http_post(h, &rq, &resp), 0);
    CU_ASSERT_EQUAL(resp.status, 503);
    CU_ASSERT_PTR_NOT_NULL(resp.body);
    CU_ASSERT_EQUAL(resp.body_len, 0);
    ev_http_response_free(&resp);

    /* A large request body goes through without a 100-continue stall. */
    size_t n = 2 * 1024 * 1024;
    char *big = malloc(n + 1);
    memset(big, 'a', n);
    big[n] = '\0';
    rq = request("/upload", big);
    CU_ASSERT_EQUAL(ev_http_post(h, &rq, &resp), 0);
    CU_ASSERT_EQUAL(resp.status, 200);
    ev_http_response_free(&resp);
    free(big);
    pthread_mutex_lock(&mu);
    CU_ASSERT_EQUAL(seen_body_len, n);
    CU_ASSERT_FALSE(seen_expect);
    pthread_mutex_unlock(&mu);
    ev_http_free(h);
}

static void test_body_cap(void)
{
    ev_http_t *h = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_http_new(&h), 0);
    ev_http_request_t rq = request("/big", "{}");
    rq.max_response_bytes = 64 * 1024;
    ev_http_response_t resp;
    CU_ASSERT_EQUAL(ev_http_post(h, &rq, &resp), EV_ETOOBIG);
    CU_ASSERT(resp.body_len <= 64 * 1024);
    CU_ASSERT_PTR_NOT_NULL(strstr(resp.error, "too large"));
    ev_http_response_free(&resp);
    /* Exactly enough room is fine; the handle is still usable. */
    rq.max_response_bytes = 256 * 1024;
    CU_ASSERT_EQUAL(ev_http_post(h, &rq, &resp), 0);
    CU_ASSERT_EQUAL(resp.body_len, 256 * 1024);
    ev_http_response_free(&resp);
    ev_http_free(h);
}

static void test_connect_failure(void)
{
    ev_http_t *h = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_http_new(&h), 0);
    /* Port 1 on loopback: nothing listens there, the connect is refused. */
    ev_http_request_t rq = request("/", "{}");
    rq.url = "http://127.0.0.1:1/v1/chat/completions";
    ev_http_response_t resp;
    CU_ASSERT_EQUAL(ev_http_post(h, &rq, &resp), EV_EHTTP);
    CU_ASSERT_EQUAL(resp.status, 0);
    CU_ASSERT_NOT_EQUAL(resp.error[0], '\0');
    CU_ASSERT_FALSE(ev_secret_appears_in(key, resp.error, strlen(resp.error)));
    ev_http_response_free(&resp);
    rq.url = "ftp://127.0.0.1/x";
    CU_ASSERT_EQUAL(ev_http_post(h, &rq, &resp), EV_ECONFIG);
    ev_http_response_free(&resp);
    rq.url = "not a url at all";
    CU_ASSERT(ev_http_post(h, &rq, &resp) < 0);
    ev_http_response_free(&resp);
    rq.url = url_for("/");
    rq.timeout_ms = 0;
    CU_ASSERT_EQUAL(ev_http_post(h, &rq, &resp), EV_EINVAL);
    ev_http_response_free(&resp);
    ev_http_free(h);
}

static void release_hang(void)
{
    pthread_mutex_lock(&mu);
    hang_release = true;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&mu);
}

static void arm_hang(void)
{
    pthread_mutex_lock(&mu);
    hang_entered = false;
    hang_release = false;
    pthread_mutex_unlock(&mu);
}

static void test_timeout(void)
{
    arm_hang();
    ev_http_t *h = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_http_new(&h), 0);
    ev_http_request_t rq = request("/hang", "{}");
    rq.timeout_ms = 300;
    ev_http_response_t resp;
    CU_ASSERT_EQUAL(ev_http_post(h, &rq, &resp), EV_ETIMEOUT);
    CU_ASSERT(resp.elapsed_ms >= 250);
    ev_http_response_free(&resp);
    release_hang();
    ev_http_free(h);
}

static atomic_bool stop_flag;

static void *stopper(void *arg)
{
    /* Set stop once the server holds the request. */
    pthread_mutex_lock(&mu);
    while (!hang_entered)
        pthread_cond_wait(&cond, &mu);
    pthread_mutex_unlock(&mu);
    atomic_store(&stop_flag, true);
    return NULL;
}

static void test_stop_aborts(void)
{
    arm_hang();
    atomic_store(&stop_flag, false);
    pthread_t t;
    pthread_create(&t, NULL, stopper, NULL);
    ev_http_t *h = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_http_new(&h), 0);
    ev_http_request_t rq = request("/hang", "{}");
    rq.timeout_ms = 15000;
    rq.stop = &stop_flag;
    ev_http_response_t resp;
    CU_ASSERT_EQUAL(ev_http_post(h, &rq, &resp), EV_ESHUTDOWN);
    ev_http_response_free(&resp);
    pthread_join(t, NULL);
    release_hang();
    /* Already stopped: nothing is sent. */
    CU_ASSERT_EQUAL(ev_http_post(h, &rq, &resp), EV_ESHUTDOWN);
    ev_http_response_free(&resp);
    ev_http_free(h);
}

static int init_suite(void)
{
    if (ev_http_global_init() != 0 || ev_secret_new(&key, KEY) != 0)
        return 1;
    daemon_ = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0,
        NULL, NULL, handler, NULL, MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (!daemon_)
        return 1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
    port = info ? info->port : 0;
    return port == 0;
}

static int clean_suite(void)
{
    release_hang();
    if (daemon_)
        MHD_stop_daemon(daemon_);
    ev_secret_free(key);
    ev_http_global_cleanup();
    return 0;
}

static const ev_test_t http_tests[] = {
    {"POST, headers, keep-alive", test_post_headers_and_keepalive},
    {"response body cap", test_body_cap},
    {"connect failure and bad URLs", test_connect_failure},
    {"total timeout", test_timeout},
    {"stop aborts a transfer", test_stop_aborts},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"http", init_suite, clean_suite, http_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
