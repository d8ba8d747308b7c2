/*
 * dashboard.h - the operator's page on the stats port.
 *
 *   GET  /dashboard           one self-contained HTML page (style and script
 *                             inline, compiled into the binary; nothing is
 *                             loaded from anywhere else) that polls /stats and
 *                             /dashboard/failures every two seconds
 *   GET  /dashboard/failures  the latest needs_review / failed submissions
 *                             with their reasons, JSON (read at most once per
 *                             cache interval, whatever the number of viewers)
 *   POST /dashboard/action?do=requeue&status=S | do=pause|resume&provider=P
 *                             | do=emergency&on=1|0
 *                             an operator control (console.h), answered with
 *                             its report; needs "Authorization: Bearer T"
 *                             where T is an admin token (tokens.h): 401
 *                             without a valid token, 403 for a token that is
 *                             not an admin's. The action is recorded with the
 *                             actor "dashboard:token-<id>".
 *
 * Everything else under /dashboard is 404. Reading needs no token.
 *
 * Threads: ev_dashboard_handle runs on the stats server's libmicrohttpd
 * threads. `lock` guards the database session and the cached failures; it
 * is held around the database round trips of one request, so requests that
 * need the database take turns (they are rare: a page view every two
 * seconds, an operator's click). It is a leaf lock; nothing logs under it.
 */
#ifndef EV_DASHBOARD_H
#define EV_DASHBOARD_H

#include <microhttpd.h>
#include <stddef.h>

typedef struct ev_dashboard ev_dashboard_t;

/* The page, embedded at build time from src/dashboard.html. */
extern const unsigned char ev_dashboard_page[];
extern const size_t ev_dashboard_page_len;

typedef struct ev_dashboard_options {
    const char *database_url; /* required; copied */
    int cache_ms;             /* failures are re-read at most this often */
} ev_dashboard_options_t;

#define EV_DASHBOARD_OPTIONS_INIT                                                                  \
    {                                                                                              \
        NULL, 2000                                                                                 \
    }

/* 0 with *out set (no connection is made yet), EV_EINVAL for bad options. */
int ev_dashboard_new(ev_dashboard_t **out, const ev_dashboard_options_t *opts);
void ev_dashboard_free(ev_dashboard_t *d);

/* Answers a request whose path starts with /dashboard. */
enum MHD_Result ev_dashboard_handle(ev_dashboard_t *d, struct MHD_Connection *c, const char *url,
                                    const char *method);

#endif
