/*
 * api_server.h - the organisers' HTTP API (JSON over libmicrohttpd).
 *
 *   POST /v1/events                         admin: create an event (201, with its
 *                                           webhook secret, shown once)
 *   GET  /v1/events/{id}                    the event
 *   POST /v1/events/{id}/submissions        multipart upload (202)
 *   GET  /v1/events/{id}/submissions        keyset page (?status=&limit=&after=)
 *   GET  /v1/submissions/{id}               status and every check's verdict
 *
 * Every request carries "Authorization: Bearer <token>" (tokens.h). A
 * missing or bad token is 401 with WWW-Authenticate; another event's
 * resources are 404, as if they did not exist. Every error is
 * {"error":{"code":"...","message":"..."}}. docs/api.md and
 * docs/openapi.yaml describe the contract in full.
 *
 * Uploads stream to temporary files beneath UPLOAD_DIR/api (api_request.h):
 * a file over its limit is answered 413 as soon as it passes the limit;
 * the submission row and its file rows are inserted in one transaction only
 * after every file is stored. Each token may start uploads_per_minute
 * uploads a minute (burst upload_burst); more are 429 with Retry-After.
 * A connection silent for idle_timeout_s is closed and its partial upload
 * deleted; connections are multiplexed on a few polling threads, so a slow
 * client holds a socket, not a thread.
 *
 * Threads: start and stop from the main thread (the server's threads are
 * created with the termination signals blocked). Requests run on
 * libmicrohttpd's pool of `threads` threads; each takes one of `threads`
 * slots (a database connection and a libmagic handle) for the short time it
 * talks to the database, so no slot is ever waited for long.
 */
#ifndef EV_API_SERVER_H
#define EV_API_SERVER_H

#include "ev/clock.h"
#include "ev/config.h"
#include "ev/files.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ev_api_server ev_api_server_t;

typedef struct ev_api_options {
    const char *addr;         /* API_ADDR: numeric address; NULL or "" = 127.0.0.1 */
    int port;                 /* API_PORT; 0 = any free port */
    const char *database_url; /* required */
    const char *upload_dir;   /* UPLOAD_DIR, required: files go to its api/ */
    ev_files_options_t files; /* limits and type rules, as the pipeline's */
    int threads;              /* polling threads and database slots */
    int idle_timeout_s;       /* API_IDLE_TIMEOUT_S */
    int uploads_per_minute;   /* per token; 0 = unlimited */
    int upload_burst;         /* >= 1 */
    bool allow_private_webhooks;
    const ev_clock_t *clock; /* rate limits; NULL = system clock */
} ev_api_options_t;

/* Fills *o from the configuration; strings borrow cfg's. */
void ev_api_options_from_config(ev_api_options_t *o, const ev_config_t *cfg);

/* Binds and serves. 0 with *out, EV_EINVAL (bad options, err says which),
 * EV_EIO (cannot create UPLOAD_DIR/api or bind; err names it). */
int ev_api_server_start(ev_api_server_t **out, const ev_api_options_t *opts, char *err,
                        size_t errlen);

/* Stops serving (requests in progress finish or are cut; partial uploads
 * are deleted), closes the database connections and frees. Accepts NULL. */
void ev_api_server_stop(ev_api_server_t *srv);

/* The TCP port bound (useful with port 0). */
int ev_api_server_port(const ev_api_server_t *srv);

/* Submissions accepted (202, replays excluded) so far; any thread. */
uint64_t ev_api_server_accepted(const ev_api_server_t *srv);

#endif
