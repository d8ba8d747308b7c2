/*
 * http.h - a thin libcurl wrapper for JSON POSTs to the LLM providers.
 *
 * Each worker thread owns one ev_http_t (a reusable CURL easy handle): the
 * handle keeps its connections alive and reuses TLS sessions between calls,
 * and is never shared across threads (libcurl rule). ev_http_global_init()
 * must run once in main before any thread starts.
 *
 * Secrets: the auth header is built from the ev_secret_t only for the
 * duration of one request and wiped afterwards; keys never go into URLs,
 * error strings or logs (CURLOPT_VERBOSE stays off). This module never logs.
 */
#ifndef EV_HTTP_H
#define EV_HTTP_H

#include "ev/secret.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Default cap on a response body; a larger body fails with EV_ETOOBIG. */
#define EV_HTTP_MAX_RESPONSE_DEFAULT ((size_t)4 * 1024 * 1024)
/* At most this many response headers are kept (the rest are dropped). */
#define EV_HTTP_MAX_HEADERS 64

typedef struct ev_http ev_http_t;

/* One response header; name is lower-cased, value trimmed. Owned by the
 * response. */
typedef struct ev_http_header {
    char *name;
    char *value;
} ev_http_header_t;

/* What one POST is made of. Everything is borrowed for the call only. */
typedef struct ev_http_request {
    const char *url;  /* must not contain secrets */
    const char *body; /* sent as-is, body_len bytes */
    size_t body_len;
    const char *const *headers; /* extra "Name: value" lines, no secrets */
    size_t header_count;
    const ev_secret_t *secret; /* NULL: no auth header */
    const char *secret_prefix; /* e.g. "x-goog-api-key: " */
    int timeout_ms;            /* total time for the transfer (> 0) */
    int connect_timeout_ms;    /* <= 0 or > timeout_ms: timeout_ms */
    size_t max_response_bytes; /* 0: EV_HTTP_MAX_RESPONSE_DEFAULT */
    const atomic_bool *stop;   /* NULL, or aborts the transfer when true */
    /* NULL, or asked before every new connection with the peer's address:
     * false refuses it (the transfer fails with EV_EHTTP). Set, it also
     * turns proxies off so the address judged is the target's. */
    bool (*allow_addr)(const struct sockaddr *addr, void *ctx);
    void *allow_ctx;
} ev_http_request_t;

/* The outcome of one POST. Initialise with ev_http_response_init() or let
 * ev_http_post() do it; free the contents with ev_http_response_free(). */
typedef struct ev_http_response {
    int status; /* HTTP status, 0 when none was received */
    char *body; /* NUL-terminated (extra byte), may be NULL */
    size_t body_len;
    ev_http_header_t *headers; /* headers of the final response */
    size_t header_count;
    int64_t elapsed_ms; /* wall time spent in the transfer */
    char error[160];    /* transport error text, "" on success */
} ev_http_response_t;

/* Calls curl_global_init once per process (thread-safe through pthread_once,
 * but meant to be called from main before threads). Returns 0 or EV_EHTTP. */
int ev_http_global_init(void);
/* Releases libcurl's global state; call from main after every thread ended. */
void ev_http_global_cleanup(void);

/* A new handle for the calling thread. Returns 0, or EV_EHTTP / EV_ENOMEM
 * (then *out is NULL). Free with ev_http_free (accepts NULL) on the thread
 * that owns it. */
int ev_http_new(ev_http_t **out);
void ev_http_free(ev_http_t *h);

/*
 * Performs one POST (no redirects followed, no retries). `resp` is
 * (re)initialised first; its previous contents are not freed.
 * Returns 0 when an HTTP response of any status was received (see
 * resp->status), otherwise:
 *   EV_ETIMEOUT   the total or the connect timeout expired;
 *   EV_EHTTP      connection, DNS, TLS, send or receive failure;
 *   EV_ETOOBIG    the response body exceeded max_response_bytes;
 *   EV_ESHUTDOWN  *stop became true during the transfer;
 *   EV_ECONFIG    malformed URL or unsupported scheme;
 *   EV_EINVAL     bad arguments.
 * On failure resp->error holds a short description (never a secret) and
 * resp->status is the status line seen, if any. Thread-safety: `h` must be
 * owned by the calling thread.
 */
int ev_http_post(ev_http_t *h, const ev_http_request_t *req, ev_http_response_t *resp);

/* The same as ev_http_post for a GET: body and body_len are ignored and
 * nothing is sent after the headers (health probes of our own endpoints). */
int ev_http_get(ev_http_t *h, const ev_http_request_t *req, ev_http_response_t *resp);

void ev_http_response_init(ev_http_response_t *resp);
/* Frees the contents and re-initialises; accepts NULL. */
void ev_http_response_free(ev_http_response_t *resp);

/* Value of the first header named `name` (case-insensitive), or NULL. */
const char *ev_http_response_header(const ev_http_response_t *resp, const char *name);

/* Appends a header to `resp` (name lower-cased, value trimmed). Used by the
 * header callback and by tests that build canned responses. */
void ev_http_response_add_header(ev_http_response_t *resp, const char *name, size_t name_len,
                                 const char *value, size_t value_len);

#endif
