/*
 * webhook.h - signed completion webhooks from the outbox table.
 *
 * When a submission of an event with a webhook_url reaches a final status, a
 * trigger (migrations/0003_api.sql) writes a webhook_deliveries row in the
 * same transaction. The sender thread started here (one per `serve`) leases
 * due rows with FOR UPDATE SKIP LOCKED, POSTs
 *
 *     {"type":"submission.finished","timestamp":"...","submission":{...}}
 *
 * where `submission` is what GET /v1/submissions/{id} returns, signed the
 * Standard Webhooks way:
 *
 *     webhook-id:        "whd_<delivery id>" (the same on every retry)
 *     webhook-timestamp: seconds since the epoch of this attempt
 *     webhook-signature: "v1," base64(HMAC-SHA256(key, id "." timestamp "." body))
 *
 * with key = the base64 part of the event's "whsec_..." secret, decoded.
 * Any 2xx is delivered; anything else is tried again after a backoff
 * (doubling from retry_base_ms, capped at retry_max_ms, with jitter) until
 * max_age_s after the verdict, then the row is `failed` (`webhooks retry ID`
 * sends it again). Delivery is at least once: a receiver must treat the
 * webhook-id as an idempotency key. A lease (longer than one attempt) keeps
 * two senders, of this or any replica, from sending one row at the same
 * time; a sender killed mid-attempt leaves a lease that expires.
 *
 * Targets on loopback, private, link-local, unique-local, CGNAT, multicast
 * or unspecified addresses are refused (both when an event is created and,
 * for names, when each connection is opened) unless allow_private.
 *
 * Threads: ev_webhook_sender_start/stop from the main thread; the sender owns
 * its own database connection and HTTP handle. The other functions are pure
 * or use the caller's ev_db_t, and never log; the sender logs one line per
 * attempt that failed and per delivery that gave up.
 */
#ifndef EV_WEBHOOK_H
#define EV_WEBHOOK_H

#include "ev/clock.h"
#include "ev/db.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The NOTIFY channel the outbox trigger signals. */
#define EV_WEBHOOK_CHANNEL "ev_webhooks"

/* False for the addresses refused as webhook targets (see above). */
bool ev_webhook_addr_public(const struct sockaddr *addr);

/* Checks a webhook URL: http or https, a host, no user:password, and (unless
 * allow_private) not a literal refused address nor "localhost". 0, or
 * EV_EINVAL with `why` completing "webhook_url ..." ("must start with
 * http:// or https://"). */
int ev_webhook_url_check(const char *url, bool allow_private, char *why, size_t whylen);

/* A new secret "whsec_" + base64 of 24 random bytes; caller frees.
 * 0 or EV_EIO. */
int ev_webhook_secret_new(char **out);

/*
 * The webhook-signature header value for (msg_id, timestamp, body) under a
 * "whsec_..." secret (a secret without the prefix is used as base64 too).
 * *out is "v1,<base64>" (caller frees). 0, or EV_EINVAL for a secret that is
 * not valid base64.
 */
int ev_webhook_sign(const char *secret, const char *msg_id, int64_t timestamp, const char *body,
                    size_t body_len, char **out);

typedef struct ev_webhook_options {
    const char *database_url; /* required */
    bool allow_private;       /* WEBHOOK_ALLOW_PRIVATE */
    int timeout_ms;           /* one attempt; the lease is 2 x this + 5 s */
    int retry_base_ms, retry_max_ms;
    int max_age_s;           /* give up this long after the verdict */
    int poll_ms;             /* look for due rows at least this often */
    const ev_clock_t *clock; /* NULL: system clock (sleeps and backoff) */
} ev_webhook_options_t;

#define EV_WEBHOOK_OPTIONS_INIT                                                                    \
    {                                                                                              \
        NULL, false, 10000, 5000, 3600000, 86400, 1000, NULL                                       \
    }

typedef struct ev_webhook_sender ev_webhook_sender_t;

/* Starts the sender thread (it connects in the background and keeps
 * retrying). 0 with *out, EV_EINVAL for bad options, or the thread error. */
int ev_webhook_sender_start(ev_webhook_sender_t **out, const ev_webhook_options_t *opts);

/* Stops the sender (an attempt in flight is abandoned; its lease expires
 * and the row is sent again) and frees it. Accepts NULL. */
void ev_webhook_sender_stop(ev_webhook_sender_t *s);

/* Deliveries this sender completed (2xx) and attempts that failed. */
uint64_t ev_webhook_sender_delivered(const ev_webhook_sender_t *s);
uint64_t ev_webhook_sender_failures(const ev_webhook_sender_t *s);

/* `webhooks list [--failed]`: *text receives a table (caller frees). */
int ev_webhook_list(ev_db_t *db, bool failed_only, char **text);

/* `webhooks retry ID`: a failed (or pending) delivery becomes due now with
 * a fresh age. EV_ENOTFOUND when no such delivery or it was delivered. */
int ev_webhook_retry(ev_db_t *db, int64_t id);

/* Pending and failed deliveries in the database (all replicas). */
int ev_webhook_counts(ev_db_t *db, int64_t *pending, int64_t *failed);

#endif
