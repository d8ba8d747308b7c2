/*
 * http.c - libcurl easy-handle wrapper; see http.h.
 *
 * How: one CURL easy handle per ev_http_t. Every ev_http_post() resets the
 * handle's options (curl_easy_reset keeps the connection cache and the TLS
 * session cache, so keep-alive and session reuse survive), sets them again,
 * performs the transfer and classifies curl's result into an EV_E* code. The
 * body is collected up to a cap; response headers are collected lower-cased
 * and restarted on every status line so only the final response's headers
 * remain. The auth header is built from the ev_secret_t, copied by
 * curl_slist_append, and both copies are wiped before being freed.
 *
 * Threads: an ev_http_t belongs to the one worker thread that created it; no
 * state is shared between handles except libcurl's global init, done once.
 * No locks.
 */
#include "ev/http.h"

#include "ev/clock.h"
#include "ev/error.h"
#include "ev/util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct ev_http {
    CURL *curl;
};

/* Per-transfer state handed to the callbacks. */
typedef struct xfer {
    ev_http_response_t *resp;
    size_t cap; /* allocated size of resp->body */
    size_t max; /* body cap */
    bool too_big;
    bool stopped;
    const atomic_bool *stop;
    const ev_http_request_t *req;
} xfer_t;

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_rc = 0;

static void global_init_once(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : EV_EHTTP;
}

int ev_http_global_init(void)
{
    pthread_once(&global_once, global_init_once);
    return global_rc;
}

void ev_http_global_cleanup(void)
{
    curl_global_cleanup();
}

int ev_http_new(ev_http_t **out)
{
    *out = NULL;
    int rc = ev_http_global_init();
    if (rc < 0)
        return rc;
    CURL *c = curl_easy_init();
    if (!c)
        return EV_EHTTP;
    ev_http_t *h = ev_calloc(1, sizeof(*h));
    h->curl = c;
    *out = h;
    return 0;
}

void ev_http_free(ev_http_t *h)
{
    if (!h)
        return;
    curl_easy_cleanup(h->curl);
    free(h);
}

void ev_http_response_init(ev_http_response_t *resp)
{
    memset(resp, 0, sizeof(*resp));
}

static void free_headers(ev_http_response_t *resp)
{
    for (size_t i = 0; i < resp->header_count; i++) {
        free(resp->headers[i].name);
        free(resp->headers[i].value);
    }
    free(resp->headers);
    resp->headers = NULL;
    resp->header_count = 0;
}

void ev_http_response_free(ev_http_response_t *resp)
{
    if (!resp)
        return;
    free(resp->body);
    free_headers(resp);
    ev_http_response_init(resp);
}

const char *ev_http_response_header(const ev_http_response_t *resp, const char *name)
{
    if (!resp || !name)
        return NULL;
    for (size_t i = 0; i < resp->header_count; i++) {
        if (strcasecmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    }
    return NULL;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void ev_http_response_add_header(ev_http_response_t *resp, const char *name, size_t name_len,
                                 const char *value, size_t value_len)
{
    if (resp->header_count >= EV_HTTP_MAX_HEADERS)
        return;
    while (name_len > 0 && is_space(name[name_len - 1]))
        name_len--;
    while (value_len > 0 && is_space(*value)) {
        value++;
        value_len--;
    }
    while (value_len > 0 && is_space(value[value_len - 1]))
        value_len--;
    if (name_len == 0)
        return;
    /* Growing one slot at a time is fine: a response has a few dozen headers. */
    resp->headers = ev_realloc(resp->headers, (resp->header_count + 1) * sizeof(*resp->headers));
    char *n = ev_malloc(name_len + 1);
    for (size_t i = 0; i < name_len; i++)
        n[i] = (char)tolower((unsigned char)name[i]);
    n[name_len] = '\0';
    char *v = ev_malloc(value_len + 1);
    if (value_len)
        memcpy(v, value, value_len);
    v[value_len] = '\0';
    resp->headers[resp->header_count].name = n;
    resp->headers[resp->header_count].value = v;
    resp->header_count++;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    xfer_t *x = userdata;
    size_t n = size * nmemb;
    /* A new status line starts a new response (100 Continue, proxies): keep
     * only the final response's headers. */
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        free_headers(x->resp);
        return n;
    }
    const char *colon = memchr(data, ':', n);
    if (colon && colon != data)
        ev_http_response_add_header(x->resp, data, (size_t)(colon - data), colon + 1,
                                    n - (size_t)(colon - data) - 1);
    return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    xfer_t *x = userdata;
    size_t n = size * nmemb;
    ev_http_response_t *r = x->resp;
    if (n > x->max - r->body_len) {
        x->too_big = true;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    if (r->body_len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        if (cap > x->max + 1)
            cap = x->max + 1;
        r->body = ev_realloc(r->body, cap);
        x->cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return n;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    xfer_t *x = userdata;
    if (x->stop && atomic_load(x->stop)) {
        x->stopped = true;
        return 1; /* aborts with CURLE_ABORTED_BY_CALLBACK */
    }
    return 0;
}

/* Asks the request's allow_addr before curl connects anywhere. */
static curl_socket_t on_open_socket(void *userdata, curlsocktype purpose,
                                    struct curl_sockaddr *address)
{
    xfer_t *x = userdata;
    (void)purpose;
    if (!x->req->allow_addr(&address->addr, x->req->allow_ctx))
        return CURL_SOCKET_BAD;
    return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

static void wipe(char *p)
{
    volatile char *v = p;
    while (*v)
        *v++ = 0;
}

/* Frees a header list after wiping every entry (one of them holds the key). */
static void free_slist_wiped(struct curl_slist *list)
{
    for (struct curl_slist *l = list; l; l = l->next) {
        if (l->data)
            wipe(l->data);
    }
    curl_slist_free_all(list);
}

static int classify(CURLcode cc, const xfer_t *x)
{
    if (x->too_big || cc == CURLE_FILESIZE_EXCEEDED)
        return EV_ETOOBIG;
    if (x->stopped || cc == CURLE_ABORTED_BY_CALLBACK)
        return EV_ESHUTDOWN;
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        return EV_ETIMEOUT;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return EV_ECONFIG;
    case CURLE_OUT_OF_MEMORY:
        return EV_ENOMEM;
    default:
        return EV_EHTTP;
    }
}

#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        if (cc == CURLE_OK)                                                                        \
            cc = curl_easy_setopt(c, opt, val);                                                    \
    } while (0)

/* One transfer: a POST of req->body, or a GET (post false) that sends no body. */
static int perform(ev_http_t *h, const ev_http_request_t *req, ev_http_response_t *resp, bool post)
{
    ev_http_response_init(resp);
    if (!h || !req || !req->url || (!req->body && req->body_len) || req->timeout_ms <= 0) {
        snprintf(resp->error, sizeof(resp->error), "invalid HTTP request");
        return EV_EINVAL;
    }
    int rc = 0;
    struct curl_slist *hdrs = NULL;
    char *auth = NULL;
    CURL *c = h->curl;
    xfer_t x = {.resp = resp,
                .max = req->max_response_bytes ? req->max_response_bytes
                                               : EV_HTTP_MAX_RESPONSE_DEFAULT,
                .stop = req->stop,
                .req = req};

    if (req->stop && atomic_load(req->stop)) {
        snprintf(resp->error, sizeof(resp->error), "aborted before sending");
        rc = EV_ESHUTDOWN;
        goto out;
    }

    /* Build the header list; curl copies each line. Expect: disables the
     * 100-continue round trip curl adds to large POSTs. */
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = hdrs ? curl_slist_append(hdrs, "Expect:") : NULL;
    for (size_t i = 0; hdrs && i < req->header_count; i++)
        hdrs = curl_slist_append(hdrs, req->headers[i]);
    if (hdrs && req->secret) {
        auth = ev_secret_header(req->secret, req->secret_prefix ? req->secret_prefix : "");
        struct curl_slist *n = curl_slist_append(hdrs, auth);
        if (!n) {
            free_slist_wiped(hdrs);
            hdrs = NULL;
        } else {
            hdrs = n;
        }
        ev_secret_header_free(auth);
        auth = NULL;
    }
    if (!hdrs) {
        snprintf(resp->error, sizeof(resp->error), "out of memory building headers");
        rc = EV_ENOMEM;
        goto out;
    }

    long timeout = req->timeout_ms;
    long connect_timeout = req->connect_timeout_ms > 0 && req->connect_timeout_ms < req->timeout_ms
                               ? req->connect_timeout_ms
                               : req->timeout_ms;

    /* Reset clears every option of the previous call but keeps the live
     * connections and the TLS session cache. */
    curl_easy_reset(c);
    CURLcode cc = CURLE_OK;
    SETOPT(CURLOPT_VERBOSE, 0L);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_URL, req->url);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    if (post) {
        SETOPT(CURLOPT_POST, 1L);
        SETOPT(CURLOPT_POSTFIELDS, req->body ? req->body : "");
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    } else {
        SETOPT(CURLOPT_HTTPGET, 1L);
    }
    SETOPT(CURLOPT_HTTPHEADER, hdrs);
    SETOPT(CURLOPT_USERAGENT, "event-validator/" EV_VERSION);
    SETOPT(CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(CURLOPT_TIMEOUT_MS, timeout);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, connect_timeout);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x.max);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, &x);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, &x);
    if (req->allow_addr) {
        SETOPT(CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
        SETOPT(CURLOPT_OPENSOCKETDATA, &x);
        SETOPT(CURLOPT_NOPROXY, "*");
    }
    if (req->stop) {
        SETOPT(CURLOPT_NOPROGRESS, 0L);
        SETOPT(CURLOPT_XFERINFOFUNCTION, on_progress);
        SETOPT(CURLOPT_XFERINFODATA, &x);
    }
    if (cc != CURLE_OK) {
        snprintf(resp->error, sizeof(resp->error), "curl setup: %s", curl_easy_strerror(cc));
        rc = EV_EHTTP;
        goto out;
    }

    const ev_clock_t *clk = ev_clock_system();
    int64_t t0 = ev_clock_now_ms(clk);
    cc = curl_easy_perform(c);
    resp->elapsed_ms = ev_clock_now_ms(clk) - t0;

    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    resp->status = (int)status;
    if (cc != CURLE_OK) {
        rc = classify(cc, &x);
        const char *what = rc == EV_ETOOBIG     ? "response body too large"
                           : rc == EV_ESHUTDOWN ? "aborted by shutdown"
                                                : curl_easy_strerror(cc);
        snprintf(resp->error, sizeof(resp->error), "%s", what);
        goto out;
    }
    if (!resp->body) {
        /* An empty body is still a body: give callers a valid empty string. */
        resp->body = ev_calloc(1, 1);
    }

out:
    /* The header list must outlive the transfer; detach it from the handle
     * before wiping and freeing it. */
    if (hdrs) {
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
        free_slist_wiped(hdrs);
    }
    return rc;
}

int ev_http_post(ev_http_t *h, const ev_http_request_t *req, ev_http_response_t *resp)
{
    return perform(h, req, resp, true);
}

int ev_http_get(ev_http_t *h, const ev_http_request_t *req, ev_http_response_t *resp)
{
    return perform(h, req, resp, false);
}
