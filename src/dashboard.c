/*
 * dashboard.c - GET /dashboard, its failures feed and its admin actions;
 * see dashboard.h.
 *
 * How: the page is served from the embedded bytes with a Content-Security-
 * Policy that allows nothing but this origin, so the page cannot load (or
 * leak to) anything elsewhere. The failures feed is one query cached for
 * cache_ms. An action verifies the bearer token with the token store
 * (ev_tokens_verify: admin scope required), then runs the console control
 * on the dashboard's own session, which records it.
 *
 * Threads: libmicrohttpd's threads call ev_dashboard_handle; `lock` guards
 * db, failures and failures_at (leaf lock; no logging under it).
 */
#include "ev/dashboard.h"

#include "ev/clock.h"
#include "ev/console.h"
#include "ev/db.h"
#include "ev/error.h"
#include "ev/queue.h"
#include "ev/tokens.h"
#include "ev/util.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FAILURES_SHOWN 20

struct ev_dashboard {
    char *conninfo; /* immutable; may hold a password */
    int64_t cache_us;

    pthread_mutex_t lock;
    /* Guarded by lock. */
    ev_db_t *db;
    char *failures; /* cached JSON text, NULL before the first read */
    int64_t failures_at;
};

int ev_dashboard_new(ev_dashboard_t **out, const ev_dashboard_options_t *o)
{
    *out = NULL;
    if (!o || !o->database_url || o->cache_ms < 0)
        return EV_EINVAL;
    ev_dashboard_t *d = ev_calloc(1, sizeof(*d));
    d->conninfo = ev_strdup(o->database_url);
    d->cache_us = (int64_t)o->cache_ms * 1000;
    EV_ASSERT(pthread_mutex_init(&d->lock, NULL) == 0);
    *out = d;
    return 0;
}

void ev_dashboard_free(ev_dashboard_t *d)
{
    if (!d)
        return;
    ev_db_free(d->db);
    free(d->failures);
    free(d->conninfo);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             const void *data, size_t len, bool copy)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, (void *)data, copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    /* Nothing but this origin: no external script, style, font or frame. */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'unsafe-inline'; style-src "
                            "'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
                            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return reply(c, status, "text/plain; charset=utf-8", text, strlen(text), true);
}

/* Opens the session when needed. Caller holds lock. */
static int session(ev_dashboard_t *d)
{
    char err[256];
    if (d->db)
        return ev_db_ensure(d->db);
    return ev_db_connect(&d->db, d->conninfo, err, sizeof(err));
}

static enum MHD_Result serve_failures(ev_dashboard_t *d, struct MHD_Connection *c)
{
    char *text = NULL;
    int64_t now = ev_clock_now_us(ev_clock_system());
    pthread_mutex_lock(&d->lock);
    if (!d->failures || now - d->failures_at >= d->cache_us) {
        json_object *rows = NULL;
        if (session(d) == 0 && ev_queue_latest_failures(d->db, FAILURES_SHOWN, &rows) == 0) {
            free(d->failures);
            d->failures = ev_strdup(json_object_to_json_string_ext(
                rows, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
            d->failures_at = now;
        }
        json_object_put(rows);
    }
    if (d->failures)
        text = ev_strdup(d->failures);
    pthread_mutex_unlock(&d->lock);
    if (!text)
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "database unreachable\n");
    enum MHD_Result ret = reply(c, MHD_HTTP_OK, "application/json", text, strlen(text), true);
    free(text);
    return ret;
}

/* The bearer token of the request, or NULL. */
static const char *bearer(struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

static const char *arg(struct MHD_Connection *c, const char *key)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
}

/* Runs the control named by the query string as `actor`. Caller holds lock
 * and has a session. */
static int run_action(ev_dashboard_t *d, struct MHD_Connection *c, const char *actor, char **report,
                      char *err, size_t errlen)
{
    const char *what = arg(c, "do");
    if (what && strcmp(what, "requeue") == 0) {
        ev_queue_selector_t sel = {.status = arg(c, "status")};
        if (!sel.status) {
            ev_set_error(err, errlen, "requeue needs status=");
            return EV_EINVAL;
        }
        return ev_console_requeue_db(d->db, &sel, false, actor, report, err, errlen);
    }
    if (what && (strcmp(what, "pause") == 0 || strcmp(what, "resume") == 0))
        return ev_console_provider_pause(d->db, arg(c, "provider"), strcmp(what, "pause") == 0, 0,
                                         actor, report, err, errlen);
    if (what && strcmp(what, "emergency") == 0) {
        const char *on = arg(c, "on");
        return ev_console_emergency(d->db, on && strcmp(on, "1") == 0, actor, report, err, errlen);
    }
    ev_set_error(err, errlen, "unknown action (do=requeue|pause|resume|emergency)");
    return EV_EINVAL;
}

static enum MHD_Result serve_action(ev_dashboard_t *d, struct MHD_Connection *c)
{
    char err[512] = "", actor[64];
    char *report = NULL;
    unsigned status = MHD_HTTP_OK;
    ev_token_info_t info;
    const char *token = bearer(c);

    pthread_mutex_lock(&d->lock);
    int rc = session(d);
    if (rc == 0)
        rc = ev_tokens_verify(d->db, token, &info);
    if (rc == EV_ENOTFOUND) {
        status = MHD_HTTP_UNAUTHORIZED;
        ev_set_error(err, sizeof(err), "an admin token is required (Authorization: Bearer)");
    } else if (rc < 0) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        ev_set_error(err, sizeof(err), "database unreachable");
    } else if (info.scope != EV_TOKEN_SCOPE_ADMIN) {
        status = MHD_HTTP_FORBIDDEN;
        ev_set_error(err, sizeof(err), "this token may not act on the whole cluster");
    } else {
        snprintf(actor, sizeof(actor), "dashboard:token-%" PRId64, info.id);
        rc = run_action(d, c, actor, &report, err, sizeof(err));
        if (rc == EV_EINVAL)
            status = MHD_HTTP_BAD_REQUEST;
        else if (rc < 0)
            status = MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    pthread_mutex_unlock(&d->lock);

    enum MHD_Result ret;
    if (status == MHD_HTTP_OK)
        ret = reply_text(c, status, report ? report : "done\n");
    else {
        char *line = ev_asprintf("%s\n", err);
        ret = reply_text(c, status, line);
        free(line);
    }
    free(report);
    return ret;
}

enum MHD_Result ev_dashboard_handle(ev_dashboard_t *d, struct MHD_Connection *c, const char *url,
                                    const char *method)
{
    bool get =
        strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (strcmp(url, "/dashboard") == 0 || strcmp(url, "/dashboard/") == 0) {
        if (!get)
            return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
        return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", ev_dashboard_page,
                     ev_dashboard_page_len, false);
    }
    if (strcmp(url, "/dashboard/failures") == 0) {
        if (!get)
            return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
        return serve_failures(d, c);
    }
    if (strcmp(url, "/dashboard/action") == 0) {
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
            return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST\n");
        return serve_action(d, c);
    }
    return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
}
