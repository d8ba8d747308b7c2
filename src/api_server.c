/*
 * api_server.c - the organisers' HTTP API over libmicrohttpd; see
 * api_server.h.
 *
 * How: libmicrohttpd calls handle() once when a request's headers have
 * arrived (begin: route, method, token, scope, content type and length,
 * rate limit; anything refused is answered there and the body is never
 * read), then once per body chunk (fed to the JSON buffer or, through
 * libmicrohttpd's multipart post-processor, to the streamed upload of
 * api_request.c; a refusal is answered at once), then once more at the end
 * (finish: the database work and the answer). Database work takes a slot
 * (one ev_db_t and one ev_files_t) from a small pool for its duration only.
 * completed() frees a request however it ended: an abandoned or timed-out
 * upload deletes its temporary files there.
 *
 * Threads: the main thread starts and stops; libmicrohttpd's pool threads
 * run handle() and completed(). Shared state: the slot pool (slots_lock;
 * slot_busy guarded by it, a slot's contents owned by whoever took it) and
 * the per-token rate limiters (rl_lock guards the table; a limiter itself is
 * thread-safe). Lock order: the two locks are never held together, and
 * neither is held while calling the database, libmagic or the logger.
 */
#include "ev/api_server.h"

#include "ev/api_request.h"
#include "ev/error.h"
#include "ev/limiter.h"
#include "ev/log.h"
#include "ev/queue.h"
#include "ev/stats.h"
#include "ev/tokens.h"
#include "ev/util.h"
#include "ev/webhook.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define MAX_SLOTS 32
#define CONNECTION_LIMIT 256
#define POST_BUFFER 65536
#define LIST_LIMIT_DEFAULT 50
#define LIST_LIMIT_MAX 200
#define IDEMPOTENCY_KEY_MAX 255
/* Multipart framing and text fields on top of the files themselves. */
#define BODY_OVERHEAD (256 * 1024)

/* A slot is used by one thread at a time (whoever took it), so its
 * connection and its libmagic handle are never used concurrently, which is
 * what libpq and libmagic require; they need not stay on one thread. */
typedef struct slot {
    ev_db_t *db;       /* connected on first use */
    ev_files_t *files; /* created at start */
} slot_t;

typedef struct rate {
    int64_t token_id;
    ev_limiter_t *limiter;
} rate_t;

struct ev_api_server {
    /* Immutable after start. */
    ev_api_options_t opts;
    char *database_url, *upload_dir, *api_dir;
    struct MHD_Daemon *daemon;
    int port;
    int nslots;
    uint64_t max_body;
    _Atomic uint64_t accepted;

    pthread_mutex_t slots_lock;
    pthread_cond_t slots_cond;
    slot_t slots[MAX_SLOTS];
    bool slot_busy[MAX_SLOTS]; /* guarded by slots_lock */

    pthread_mutex_t rl_lock;
    rate_t *rates; /* guarded by rl_lock (the table, not the limiters) */
    size_t nrates, caprates;
};

enum route { R_NONE, R_EVENTS, R_EVENT, R_EVENT_SUBS, R_SUBMISSION };

typedef struct req {
    enum route route;
    int64_t id;
    bool post;
    bool answered;
    bool refused;       /* the body was refused: the rest is read and dropped */
    uint64_t discarded; /* bytes dropped since */
    uint64_t received;  /* body bytes so far */
    ev_api_error_t err; /* a refusal decided here rather than by the upload */
    ev_token_info_t token;
    ev_stats_buf_t json; /* POST /v1/events body */
    struct MHD_PostProcessor *pp;
    ev_api_upload_t *upload;
    char *idempotency_key;
} req_t;

/* ---- Slots. ---- */

static slot_t *slot_take(ev_api_server_t *srv)
{
    pthread_mutex_lock(&srv->slots_lock);
    for (;;) {
        for (int i = 0; i < srv->nslots; i++) {
            if (!srv->slot_busy[i]) {
                srv->slot_busy[i] = true;
                pthread_mutex_unlock(&srv->slots_lock);
                return &srv->slots[i];
            }
        }
        pthread_cond_wait(&srv->slots_cond, &srv->slots_lock);
    }
}

static void slot_give(ev_api_server_t *srv, slot_t *s)
{
    pthread_mutex_lock(&srv->slots_lock);
    srv->slot_busy[s - srv->slots] = false;
    pthread_cond_signal(&srv->slots_cond);
    pthread_mutex_unlock(&srv->slots_lock);
}

/* A usable connection in the slot: 0 or EV_EDBCONN. */
static int slot_db(ev_api_server_t *srv, slot_t *s)
{
    if (s->db)
        return ev_db_ensure(s->db);
    char why[256];
    return ev_db_connect(&s->db, srv->database_url, why, sizeof(why));
}

/* ---- Responses. ---- */

static enum MHD_Result respond(struct MHD_Connection *c, req_t *r, unsigned status,
                               const char *json, const char *const *headers)
{
    r->answered = true;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(json), (void *)json, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    enum MHD_Result ret = MHD_YES;
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") !=
            MHD_YES ||
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES)
        ret = MHD_NO;
    for (size_t i = 0; ret == MHD_YES && headers && headers[i]; i += 2)
        if (MHD_add_response_header(resp, headers[i], headers[i + 1]) != MHD_YES)
            ret = MHD_NO;
    if (ret == MHD_YES)
        ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result respond_error_h(struct MHD_Connection *c, req_t *r, unsigned status,
                                       const char *code, const char *message,
                                       const char *const *headers)
{
    json_object *root = json_object_new_object(), *e = json_object_new_object();
    json_object_object_add(e, "code", json_object_new_string(code));
    json_object_object_add(e, "message", json_object_new_string(message));
    json_object_object_add(root, "error", e);
    enum MHD_Result ret =
        respond(c, r, status,
                json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
                                                         JSON_C_TO_STRING_NOSLASHESCAPE),
                headers);
    json_object_put(root);
    return ret;
}

static enum MHD_Result respond_error(struct MHD_Connection *c, req_t *r, unsigned status,
                                     const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static enum MHD_Result respond_error(struct MHD_Connection *c, req_t *r, unsigned status,
                                     const char *code, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return respond_error_h(c, r, status, code, msg, NULL);
}

static enum MHD_Result respond_api_error(struct MHD_Connection *c, req_t *r,
                                         const ev_api_error_t *e)
{
    return respond_error_h(c, r, (unsigned)e->status, e->code, e->message, NULL);
}

static enum MHD_Result respond_db_error(struct MHD_Connection *c, req_t *r, int rc)
{
    ev_log(EV_LOG_WARN, "api: database %s (%s); answered 503",
           rc == EV_EDBCONN ? "unreachable" : "error", ev_strerror(rc));
    static const char *const h[] = {"Retry-After", "5", NULL};
    return respond_error_h(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                           "the service cannot reach its database; try again shortly", h);
}

/* ---- Routing and authentication. ---- */

/* Parses a positive decimal id of at most 18 digits ending at '/' or NUL. */
static const char *parse_id(const char *p, int64_t *id)
{
    int64_t v = 0;
    int n = 0;
    while (*p >= '0' && *p <= '9' && n < 18) {
        v = v * 10 + (*p++ - '0');
        n++;
    }
    if (n == 0 || v <= 0 || (*p && *p != '/'))
        return NULL;
    *id = v;
    return p;
}

static enum route parse_route(const char *url, int64_t *id)
{
    const char *p;
    if (strcmp(url, "/v1/events") == 0)
        return R_EVENTS;
    if (strncmp(url, "/v1/events/", 11) == 0 && (p = parse_id(url + 11, id)) != NULL) {
        if (!*p)
            return R_EVENT;
        if (strcmp(p, "/submissions") == 0)
            return R_EVENT_SUBS;
    }
    if (strncmp(url, "/v1/submissions/", 16) == 0 && (p = parse_id(url + 16, id)) && !*p)
        return R_SUBMISSION;
    return R_NONE;
}

/* 0 when the bearer token is valid (r->token filled), else the response. */
static int authenticate(ev_api_server_t *srv, struct MHD_Connection *c, req_t *r,
                        enum MHD_Result *ret)
{
    static const char *const challenge[] = {"WWW-Authenticate", "Bearer realm=\"event-validator\"",
                                            NULL};
    static const char *const invalid[] = {
        "WWW-Authenticate", "Bearer realm=\"event-validator\", error=\"invalid_token\"", NULL};
    const char *auth =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
        *ret = respond_error_h(c, r, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                               "send a token: 'Authorization: Bearer <token>'", challenge);
        return EV_ENOTFOUND;
    }
    const char *tok = auth + 7;
    while (*tok == ' ')
        tok++;
    slot_t *s = slot_take(srv);
    int rc = slot_db(srv, s);
    if (rc == 0)
        rc = ev_tokens_verify(s->db, tok, &r->token);
    slot_give(srv, s);
    if (rc == EV_ENOTFOUND)
        *ret = respond_error_h(c, r, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                               "the token is not valid (unknown, revoked or mistyped)", invalid);
    else if (rc < 0)
        *ret = respond_db_error(c, r, rc);
    return rc;
}

/* The token's own rate limiter, made on first use. */
static ev_limiter_t *limiter_for(ev_api_server_t *srv, int64_t token_id)
{
    ev_limiter_t *l = NULL;
    pthread_mutex_lock(&srv->rl_lock);
    for (size_t i = 0; i < srv->nrates && !l; i++)
        if (srv->rates[i].token_id == token_id)
            l = srv->rates[i].limiter;
    if (!l) {
        ev_limiter_options_t lo = EV_LIMITER_OPTIONS_INIT;
        lo.rpm = srv->opts.uploads_per_minute;
        lo.safety_factor = 1.0;
        lo.jitter_enabled = false;
        lo.burst = srv->opts.upload_burst;
        EV_ASSERT(ev_limiter_new(&l, &lo, srv->opts.clock) == 0);
        if (srv->nrates == srv->caprates) {
            srv->caprates = srv->caprates ? 2 * srv->caprates : 16;
            srv->rates = ev_realloc(srv->rates, srv->caprates * sizeof(*srv->rates));
        }
        srv->rates[srv->nrates++] = (rate_t){token_id, l};
    }
    pthread_mutex_unlock(&srv->rl_lock);
    return l;
}

/* ---- GET handlers. ---- */

static enum MHD_Result get_event(ev_api_server_t *srv, struct MHD_Connection *c, req_t *r)
{
    char *json = NULL;
    if (!ev_tokens_allows_event(&r->token, r->id))
        return respond_error(c, r, MHD_HTTP_NOT_FOUND, "not_found", "event %" PRId64 " not found",
                             r->id);
    slot_t *s = slot_take(srv);
    int rc = slot_db(srv, s);
    if (rc == 0)
        rc = ev_queue_event_json(s->db, r->id, &json);
    slot_give(srv, s);
    enum MHD_Result ret = rc == 0 ? respond(c, r, MHD_HTTP_OK, json, NULL)
                          : rc == EV_ENOTFOUND
                              ? respond_error(c, r, MHD_HTTP_NOT_FOUND, "not_found",
                                              "event %" PRId64 " not found", r->id)
                              : respond_db_error(c, r, rc);
    free(json);
    return ret;
}

static enum MHD_Result get_submission(ev_api_server_t *srv, struct MHD_Connection *c, req_t *r)
{
    char *json = NULL;
    int64_t event_id = 0;
    slot_t *s = slot_take(srv);
    int rc = slot_db(srv, s);
    if (rc == 0)
        rc = ev_queue_submission_json(s->db, r->id, &json, &event_id);
    slot_give(srv, s);
    /* Another event's submission is answered exactly like a missing one. */
    if (rc == 0 && !ev_tokens_allows_event(&r->token, event_id))
        rc = EV_ENOTFOUND;
    enum MHD_Result ret = rc == 0 ? respond(c, r, MHD_HTTP_OK, json, NULL)
                          : rc == EV_ENOTFOUND
                              ? respond_error(c, r, MHD_HTTP_NOT_FOUND, "not_found",
                                              "submission %" PRId64 " not found", r->id)
                              : respond_db_error(c, r, rc);
    free(json);
    return ret;
}

static bool parse_query_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static enum MHD_Result list_submissions(ev_api_server_t *srv, struct MHD_Connection *c, req_t *r)
{
    const char *status = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "status");
    const char *limit_s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    const char *after_s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
    int64_t limit = LIST_LIMIT_DEFAULT, after = 0;
    char *json = NULL, *event = NULL;

    if (status && !ev_queue_status_valid(status))
        return respond_error(c, r, MHD_HTTP_BAD_REQUEST, "invalid_query",
                             "'status' must be one of pending, processing, validated, rejected, "
                             "needs_review, failed, cancelled");
    if (limit_s && !parse_query_int(limit_s, 1, LIST_LIMIT_MAX, &limit))
        return respond_error(c, r, MHD_HTTP_BAD_REQUEST, "invalid_query",
                             "'limit' must be a whole number from 1 to %d", LIST_LIMIT_MAX);
    if (after_s && !parse_query_int(after_s, 0, INT64_MAX, &after))
        return respond_error(c, r, MHD_HTTP_BAD_REQUEST, "invalid_query",
                             "'after' must be a submission id (a whole number)");
    slot_t *s = slot_take(srv);
    int rc = slot_db(srv, s);
    if (rc == 0)
        rc = ev_queue_event_json(s->db, r->id, &event);
    if (rc == 0)
        rc = ev_queue_submission_list(s->db, r->id, status, after, (int)limit, &json);
    slot_give(srv, s);
    enum MHD_Result ret = rc == 0 ? respond(c, r, MHD_HTTP_OK, json, NULL)
                          : rc == EV_ENOTFOUND
                              ? respond_error(c, r, MHD_HTTP_NOT_FOUND, "not_found",
                                              "event %" PRId64 " not found", r->id)
                              : respond_db_error(c, r, rc);
    free(json);
    free(event);
    return ret;
}

/* ---- POST /v1/events. ---- */

static enum MHD_Result create_event(ev_api_server_t *srv, struct MHD_Connection *c, req_t *r)
{
    ev_api_error_t e = {0};
    ev_api_event_req_t ev;
    char *secret = NULL, *json = NULL;
    int64_t id = 0;
    enum MHD_Result ret;

    if (ev_api_parse_event(r->json.data, r->json.len, srv->opts.allow_private_webhooks, &ev, &e) <
        0)
        return respond_api_error(c, r, &e);
    if (ev.webhook_url && ev_webhook_secret_new(&secret) < 0) {
        ret = respond_error(c, r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                            "no randomness for the webhook secret");
        goto out;
    }
    ev_queue_event_t qe = {ev.name,          ev.theme,       ev.rules, ev.require_pdf,
                           ev.require_image, ev.webhook_url, secret};
    slot_t *s = slot_take(srv);
    int rc = slot_db(srv, s);
    if (rc == 0)
        rc = ev_queue_event_create(s->db, &qe, &id);
    if (rc == 0)
        rc = ev_queue_event_json(s->db, id, &json);
    slot_give(srv, s);
    if (rc == EV_EEXIST) {
        ret = respond_error(c, r, MHD_HTTP_CONFLICT, "name_taken",
                            "an event with this name already exists");
    } else if (rc < 0) {
        ret = respond_db_error(c, r, rc);
    } else {
        /* The secret is shown in this answer only. */
        json_object *o = json_tokener_parse(json);
        EV_ASSERT(o != NULL);
        json_object_object_add(o, "webhook_secret", secret ? json_object_new_string(secret) : NULL);
        char loc[64];
        snprintf(loc, sizeof(loc), "/v1/events/%" PRId64, id);
        const char *const h[] = {MHD_HTTP_HEADER_LOCATION, loc, NULL};
        ret = respond(c, r, MHD_HTTP_CREATED,
                      json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE),
                      h);
        json_object_put(o);
        ev_log(EV_LOG_INFO, "api: event %" PRId64 " created by token %" PRId64, id, r->token.id);
    }
out:
    if (secret)
        memset(secret, 0, strlen(secret));
    free(secret);
    free(json);
    ev_api_event_req_clear(&ev);
    return ret;
}

/* ---- POST /v1/events/{id}/submissions. ---- */

static enum MHD_Result iterate(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
    req_t *r = cls;
    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    return ev_api_upload_field(r->upload, key, filename, data, off, size) == 0 ? MHD_YES : MHD_NO;
}

/* Printable ASCII only: the key is stored as text and echoed in nothing. */
static bool idempotency_key_valid(const char *key)
{
    size_t n = 0;
    for (; key[n]; n++)
        if (key[n] < 0x21 || key[n] > 0x7e)
            return false;
    return n > 0 && n <= IDEMPOTENCY_KEY_MAX;
}

/* Checks before the body is read: 0, or the answer was queued. */
static int begin_upload(ev_api_server_t *srv, struct MHD_Connection *c, req_t *r,
                        enum MHD_Result *ret)
{
    const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
    char *event = NULL;
    int64_t n = 0;

    if (!ev_tokens_allows_event(&r->token, r->id)) {
        *ret = respond_error(c, r, MHD_HTTP_NOT_FOUND, "not_found", "event %" PRId64 " not found",
                             r->id);
        return EV_ENOTFOUND;
    }
    if (!type || strncasecmp(type, "multipart/form-data", 19) != 0) {
        *ret = respond_error(c, r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                             "send the submission as multipart/form-data");
        return EV_EINVAL;
    }
    if (length && parse_query_int(length, 0, INT64_MAX, &n) && (uint64_t)n > srv->max_body) {
        *ret = respond_error(c, r, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
                             "the body is larger than one PDF and MAX_IMAGES images may be");
        return EV_ETOOBIG;
    }
    if (key && !idempotency_key_valid(key)) {
        *ret = respond_error(c, r, MHD_HTTP_BAD_REQUEST, "invalid_idempotency_key",
                             "Idempotency-Key must be 1 to %d printable ASCII characters",
                             IDEMPOTENCY_KEY_MAX);
        return EV_EINVAL;
    }
    slot_t *s = slot_take(srv);
    int rc = slot_db(srv, s);
    if (rc == 0)
        rc = ev_queue_event_json(s->db, r->id, &event);
    slot_give(srv, s);
    free(event);
    if (rc == EV_ENOTFOUND) {
        *ret = respond_error(c, r, MHD_HTTP_NOT_FOUND, "not_found", "event %" PRId64 " not found",
                             r->id);
        return rc;
    }
    if (rc < 0) {
        *ret = respond_db_error(c, r, rc);
        return rc;
    }
    ev_limiter_reservation_t slot;
    if (srv->opts.uploads_per_minute > 0 &&
        ev_limiter_reserve(limiter_for(srv, r->token.id), &slot, 0) == EV_ELIMIT) {
        char after[24];
        snprintf(after, sizeof(after), "%" PRId64, EV_MAX((slot.wait_us + 999999) / 1000000, 1));
        const char *const h[] = {"Retry-After", after, NULL};
        char msg[160];
        snprintf(msg, sizeof(msg), "this token may start %d uploads a minute; try again in %s s",
                 srv->opts.uploads_per_minute, after);
        *ret = respond_error_h(c, r, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limited", msg, h);
        return EV_ELIMIT;
    }
    r->pp = MHD_create_post_processor(c, POST_BUFFER, iterate, r);
    if (!r->pp) {
        *ret = respond_error(c, r, MHD_HTTP_BAD_REQUEST, "malformed_body",
                             "the multipart/form-data body has no usable boundary");
        return EV_EINVAL;
    }
    r->idempotency_key = key ? ev_strdup(key) : NULL;
    ev_api_upload_new(&r->upload, srv->api_dir, "api/", &srv->opts.files);
    return 0;
}

/* Stores the finished upload and inserts its rows. */
static enum MHD_Result finish_upload(ev_api_server_t *srv, struct MHD_Connection *c, req_t *r)
{
    bool clean = MHD_destroy_post_processor(r->pp) == MHD_YES && !r->refused;
    r->pp = NULL;
    const ev_api_error_t *e = ev_api_upload_error(r->upload);
    if (e->status)
        return respond_api_error(c, r, e);
    if (!clean)
        return respond_error(c, r, MHD_HTTP_BAD_REQUEST, "malformed_body",
                             "the multipart/form-data body is malformed or cut short");
    ev_queue_new_submission_t sub = {.event_id = r->id, .idempotency_key = r->idempotency_key};
    int64_t id = 0;
    bool replayed = false;
    char *json = NULL;
    slot_t *s = slot_take(srv);
    int rc = ev_api_upload_finish(r->upload, s->files);
    if (rc == 0)
        rc = ev_api_upload_store(r->upload, &sub);
    int dbrc = rc == 0 ? slot_db(srv, s) : 0;
    if (rc == 0 && dbrc == 0)
        dbrc = ev_queue_submission_insert(s->db, &sub, &id, &replayed);
    if (rc == 0 && dbrc == 0)
        dbrc = ev_queue_submission_json(s->db, id, &json, NULL);
    slot_give(srv, s);
    enum MHD_Result ret;
    if (rc < 0) {
        ret = respond_api_error(c, r, ev_api_upload_error(r->upload));
    } else if (dbrc == EV_EEXIST) {
        ret = respond_error(c, r, MHD_HTTP_CONFLICT, "idempotency_conflict",
                            "this Idempotency-Key was already used with different content");
    } else if (dbrc == EV_ENOTFOUND) {
        ret = respond_error(c, r, MHD_HTTP_NOT_FOUND, "not_found", "event %" PRId64 " not found",
                            r->id);
    } else if (dbrc < 0) {
        ret = respond_db_error(c, r, dbrc);
    } else {
        if (!replayed) {
            ev_api_upload_keep(r->upload);
            atomic_fetch_add(&srv->accepted, 1);
        }
        char loc[64];
        snprintf(loc, sizeof(loc), "/v1/submissions/%" PRId64, id);
        const char *const h[] = {MHD_HTTP_HEADER_LOCATION, loc, "Idempotent-Replayed",
                                 replayed ? "true" : "false", NULL};
        ret = respond(c, r, MHD_HTTP_ACCEPTED, json, h);
        ev_log(EV_LOG_INFO,
               "api: submission %" PRId64 " %s (event %" PRId64 ", token %" PRId64
               ", %zu files, %" PRIu64 " bytes)",
               id, replayed ? "replayed for a repeated Idempotency-Key" : "accepted", r->id,
               r->token.id, ev_api_upload_file_count(r->upload), ev_api_upload_bytes(r->upload));
    }
    free(json);
    return ret;
}

/* ---- The request cycle. ---- */

static bool method_allowed(enum route route, const char *method, bool *post, const char **allow)
{
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    *post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    switch (route) {
    case R_EVENTS:
        *allow = "POST";
        return *post;
    case R_EVENT_SUBS:
        *allow = "GET, POST";
        return get || *post;
    default:
        *allow = "GET";
        return get;
    }
}

static enum MHD_Result begin(ev_api_server_t *srv, struct MHD_Connection *c, req_t *r,
                             const char *url, const char *method)
{
    enum MHD_Result ret = MHD_YES;
    const char *allow = NULL;
    r->route = parse_route(url, &r->id);
    if (r->route == R_NONE)
        return respond_error(c, r, MHD_HTTP_NOT_FOUND, "not_found", "no such resource");
    if (!method_allowed(r->route, method, &r->post, &allow)) {
        const char *const h[] = {MHD_HTTP_HEADER_ALLOW, allow, NULL};
        return respond_error_h(c, r, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                               "this method is not allowed here", h);
    }
    if (authenticate(srv, c, r, &ret) < 0)
        return ret;
    switch (r->route) {
    case R_EVENT:
        return get_event(srv, c, r);
    case R_SUBMISSION:
        return get_submission(srv, c, r);
    case R_EVENT_SUBS:
        if (!r->post) {
            if (!ev_tokens_allows_event(&r->token, r->id))
                return respond_error(c, r, MHD_HTTP_NOT_FOUND, "not_found",
                                     "event %" PRId64 " not found", r->id);
            return list_submissions(srv, c, r);
        }
        (void)begin_upload(srv, c, r, &ret);
        return ret;
    case R_EVENTS: {
        const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
        if (r->token.scope != EV_TOKEN_SCOPE_ADMIN)
            return respond_error(c, r, MHD_HTTP_FORBIDDEN, "forbidden",
                                 "only an admin token may create events");
        if (!type || strncasecmp(type, "application/json", 16) != 0)
            return respond_error(c, r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                                 "send the event as application/json");
        return MHD_YES;
    }
    case R_NONE:
        break;
    }
    return MHD_NO;
}

/*
 * One body chunk. A refused body stops being parsed or stored at once (the
 * upload deletes its files when it refuses); libmicrohttpd 0.9 can only
 * answer once the request has ended, so the rest is read and dropped, and
 * a client that keeps sending past the largest body we would ever accept is
 * cut off.
 */
static enum MHD_Result body_chunk(ev_api_server_t *srv, req_t *r, const char *data, size_t n)
{
    if (r->refused) {
        r->discarded += n;
        return r->discarded > srv->max_body ? MHD_NO : MHD_YES;
    }
    /* Chunked bodies have no Content-Length to refuse up front, and junk
     * between parts is skipped by the parser: the total is capped here. */
    r->received += n;
    if (r->received > (r->upload ? srv->max_body : (uint64_t)EV_API_JSON_MAX)) {
        if (r->upload)
            ev_api_error_set(&r->err, EV_ETOOBIG, 413, "body_too_large",
                             "the body is larger than one PDF and MAX_IMAGES images may be");
        else
            ev_api_error_set(&r->err, EV_ETOOBIG, 413, "body_too_large",
                             "the JSON body is larger than %d bytes", EV_API_JSON_MAX);
        r->refused = true;
        return MHD_YES;
    }
    if (r->upload) {
        if (MHD_post_process(r->pp, data, n) != MHD_YES)
            r->refused = true;
        return MHD_YES;
    }
    /* JSON text never holds a NUL byte; one here would also cut the buffer. */
    if (memchr(data, '\0', n)) {
        ev_api_error_set(&r->err, EV_EPARSE, 400, "malformed_json", "the body is not valid JSON");
        r->refused = true;
        return MHD_YES;
    }
    ev_stats_buf_printf(&r->json, "%.*s", (int)n, data);
    return MHD_YES;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **req_cls)
{
    ev_api_server_t *srv = cls;
    req_t *r = *req_cls;
    (void)version;

    if (!r) {
        r = ev_calloc(1, sizeof(*r));
        *req_cls = r;
        return begin(srv, c, r, url, method);
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->answered)
            return MHD_YES;
        return body_chunk(srv, r, upload_data, n);
    }
    if (r->answered)
        return MHD_YES;
    if (r->err.status)
        return respond_api_error(c, r, &r->err);
    if (r->upload)
        return finish_upload(srv, c, r);
    if (r->route == R_EVENTS)
        return create_event(srv, c, r);
    return MHD_NO;
}

static void completed(void *cls, struct MHD_Connection *c, void **req_cls,
                      enum MHD_RequestTerminationCode toe)
{
    req_t *r = *req_cls;
    (void)cls;
    (void)c;
    if (!r)
        return;
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED && r->upload)
        ev_log(EV_LOG_INFO, "api: upload by token %" PRId64 " abandoned (idle timeout); deleted",
               r->token.id);
    if (r->pp)
        MHD_destroy_post_processor(r->pp);
    ev_api_upload_free(r->upload);
    ev_stats_buf_free(&r->json);
    free(r->idempotency_key);
    free(r);
    *req_cls = NULL;
}

/* ---- Start and stop. ---- */

void ev_api_options_from_config(ev_api_options_t *o, const ev_config_t *cfg)
{
    memset(o, 0, sizeof(*o));
    o->addr = cfg->api_addr;
    o->port = cfg->api_port;
    o->database_url = cfg->database_url;
    o->upload_dir = cfg->upload_dir;
    ev_files_options_from_config(&o->files, cfg);
    o->threads = 4;
    o->idle_timeout_s = cfg->api_idle_timeout_s;
    o->uploads_per_minute = cfg->api_uploads_per_minute;
    o->upload_burst = cfg->api_upload_burst;
    o->allow_private_webhooks = cfg->webhook_allow_private;
}

static void server_free(ev_api_server_t *srv)
{
    if (!srv)
        return;
    for (int i = 0; i < MAX_SLOTS; i++) {
        ev_db_free(srv->slots[i].db);
        ev_files_free(srv->slots[i].files);
    }
    for (size_t i = 0; i < srv->nrates; i++)
        ev_limiter_free(srv->rates[i].limiter);
    free(srv->rates);
    pthread_mutex_destroy(&srv->slots_lock);
    pthread_cond_destroy(&srv->slots_cond);
    pthread_mutex_destroy(&srv->rl_lock);
    free(srv->database_url);
    free(srv->upload_dir);
    free(srv->api_dir);
    free(srv);
}

/* Starts libmicrohttpd on the resolved address with the signals blocked. */
static int listen_on(ev_api_server_t *srv, const char *addr, char *err, size_t errlen)
{
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", srv->opts.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST};
    if (getaddrinfo(addr, port, &hints, &ai) != 0 || !ai) {
        ev_set_error(err, errlen, "API_ADDR '%s' is not a numeric address", addr);
        return EV_EINVAL;
    }
    sigset_t block, saved;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGPIPE);
    EV_ASSERT(pthread_sigmask(SIG_BLOCK, &block, &saved) == 0);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv->daemon = MHD_start_daemon(flags, (uint16_t)srv->opts.port, NULL, NULL, handle, srv,
                                   MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE,
                                   (unsigned)srv->nslots, MHD_OPTION_CONNECTION_LIMIT,
                                   (unsigned)CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
                                   (unsigned)srv->opts.idle_timeout_s, MHD_OPTION_NOTIFY_COMPLETED,
                                   completed, srv, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    freeaddrinfo(ai);
    if (!srv->daemon) {
        ev_set_error(err, errlen, "cannot listen on %s port %d", addr, srv->opts.port);
        return EV_EIO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : srv->opts.port;
    return 0;
}

int ev_api_server_start(ev_api_server_t **out, const ev_api_options_t *opts, char *err,
                        size_t errlen)
{
    *out = NULL;
    if (!opts || !opts->database_url || !opts->upload_dir || opts->port < 0 || opts->port > 65535 ||
        opts->threads < 1 || opts->threads > MAX_SLOTS || opts->idle_timeout_s < 1 ||
        opts->uploads_per_minute < 0 || opts->upload_burst < 1) {
        ev_set_error(err, errlen, "API server: invalid options");
        return EV_EINVAL;
    }
    ev_api_server_t *srv = ev_calloc(1, sizeof(*srv));
    srv->opts = *opts;
    srv->database_url = ev_strdup(opts->database_url);
    srv->upload_dir = ev_strdup(opts->upload_dir);
    srv->api_dir = ev_asprintf("%s/api", opts->upload_dir);
    srv->opts.database_url = srv->database_url;
    srv->opts.upload_dir = srv->upload_dir;
    srv->opts.files.upload_dir = srv->upload_dir;
    if (!srv->opts.clock)
        srv->opts.clock = ev_clock_system();
    srv->nslots = opts->threads;
    srv->max_body = (uint64_t)opts->files.pdf_max_bytes +
                    (uint64_t)opts->files.max_images * (uint64_t)opts->files.image_max_bytes +
                    BODY_OVERHEAD;
    EV_ASSERT(pthread_mutex_init(&srv->slots_lock, NULL) == 0);
    EV_ASSERT(pthread_cond_init(&srv->slots_cond, NULL) == 0);
    EV_ASSERT(pthread_mutex_init(&srv->rl_lock, NULL) == 0);
    int rc = 0;
    for (int i = 0; i < srv->nslots && rc == 0; i++)
        if (ev_files_new(&srv->slots[i].files, &srv->opts.files) < 0) {
            ev_set_error(err, errlen, "API server: cannot load the libmagic database");
            rc = EV_ECONFIG;
        }
    if (rc == 0 && mkdir(srv->api_dir, 0750) != 0 && errno != EEXIST) {
        ev_set_error(err, errlen, "cannot create %s: %s", srv->api_dir, strerror(errno));
        rc = EV_EIO;
    }
    const char *addr = opts->addr && *opts->addr ? opts->addr : "127.0.0.1";
    if (rc == 0)
        rc = listen_on(srv, addr, err, errlen);
    if (rc < 0) {
        server_free(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

void ev_api_server_stop(ev_api_server_t *srv)
{
    if (!srv)
        return;
    if (srv->daemon)
        MHD_stop_daemon(srv->daemon);
    server_free(srv);
}

int ev_api_server_port(const ev_api_server_t *srv)
{
    return srv->port;
}

uint64_t ev_api_server_accepted(const ev_api_server_t *srv)
{
    return atomic_load(&((ev_api_server_t *)srv)->accepted);
}
