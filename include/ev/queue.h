/*
 * queue.h - the Postgres-backed submission queue (SPEC §4, §5).
 *
 * Claiming uses FOR UPDATE SKIP LOCKED: highest priority first, then oldest,
 * among `pending` rows with run_after <= now(). A claim marks the row
 * `processing`, increments `attempts`, and stamps lease_owner + heartbeat_at.
 * Every write after a claim is guarded by (id, status='processing',
 * lease_owner, attempts), so a worker whose lease was rescued can never
 * overwrite a newer attempt's work: such writes return EV_ELEASE.
 *
 * Functions take the caller's own ev_db_t (one per thread). They never log.
 */
#ifndef EV_QUEUE_H
#define EV_QUEUE_H

#include "ev/db.h"

struct json_object;

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The NOTIFY channel the trigger signals when a submission becomes runnable. */
#define EV_QUEUE_CHANNEL "ev_submissions"

/* last_error texts are cut to at most this many bytes (on a UTF-8 boundary,
 * see ev_db_clip_text) before they are written. */
#define EV_QUEUE_LAST_ERROR_MAX 2000

typedef struct ev_job {
    int64_t submission_id;
    int64_t event_id;
    int attempt; /* value of submissions.attempts after this claim (1 = first) */
    int priority;
    char lease_owner[96]; /* process-wide owner id this claim was made under */
} ev_job_t;

typedef struct ev_queue_counts {
    int64_t pending, processing, validated, rejected, needs_review, failed, cancelled;
    /* The webhook outbox (webhook.h): deliveries waiting and given up. Filled
     * by the stats server's refresh, not by ev_queue_counts. */
    int64_t webhooks_pending, webhooks_failed;
    double oldest_pending_age_s; /* age of the oldest pending submission; 0 when none */
} ev_queue_counts_t;

/* Claims one runnable submission for `owner`. 0 with *job filled, EV_EEMPTY
 * when nothing is runnable, EV_EDB/EV_EDBCONN on database trouble. */
int ev_queue_claim(ev_db_t *db, const char *owner, ev_job_t *job);

/* Refreshes heartbeat_at of every `processing` lease held by `owner`.
 * *count (may be NULL) receives the number of leases refreshed. */
int ev_queue_heartbeat(ev_db_t *db, const char *owner, int64_t *count);

/* 0 while the job's lease is still ours, EV_ELEASE when it was rescued or
 * finished elsewhere. */
int ev_queue_check_lease(ev_db_t *db, const ev_job_t *job);

/* Final status: "validated", "rejected", "needs_review" or "failed".
 * last_error may be NULL. EV_ELEASE if the lease is no longer ours. */
int ev_queue_complete(ev_db_t *db, const ev_job_t *job, const char *status, const char *last_error);

/* Provider trouble: back to `pending` with run_after = now + backoff
 * (exponential from base_ms by attempt, capped at max_ms, with jitter), or to
 * `needs_review` once job->attempt >= max_attempts. *out_status (may be NULL)
 * receives the static status string written. EV_ELEASE if not ours. */
int ev_queue_requeue(ev_db_t *db, const ev_job_t *job, int max_attempts, int base_ms, int max_ms,
                     const char *last_error, const char **out_status);

/* Held (spend limit, operator hold): back to `pending` after delay_ms,
 * without spending the attempt, with `reason` as last_error. EV_ELEASE if
 * not ours. */
int ev_queue_defer(ev_db_t *db, const ev_job_t *job, int delay_ms, const char *reason);

/* Graceful shutdown: back to `pending` immediately, without spending the
 * attempt (attempts is decremented). EV_ELEASE if not ours. */
int ev_queue_release(ev_db_t *db, const ev_job_t *job);

/* Rescues leases whose heartbeat is older than lease_seconds: back to
 * `pending` (the attempt stays counted), or `failed` with an explaining
 * last_error once attempts >= max_attempts. *rescued and *failed may be NULL. */
int ev_queue_rescue(ev_db_t *db, int lease_seconds, int max_attempts, int64_t *rescued,
                    int64_t *failed);

/* Counts by status (for stats). */
int ev_queue_counts(ev_db_t *db, ev_queue_counts_t *out);

/* Number of `pending` rows (runnable now or later) plus `processing` rows:
 * `serve --drain` exits when this is 0 and no worker is busy. */
int ev_queue_outstanding(ev_db_t *db, int64_t *out);

/* ---- Operator actions (the console's requeue and cancel). ----
 *
 * They never touch a `processing` row, nor a row whose claim is being
 * committed right now (SKIP LOCKED), so a worker's lease-guarded writes
 * always find their row as they left it. Each runs as one statement; the
 * caller may wrap it in its own transaction (to record the action). */

/* Which submissions an operator action is about. Every filter given must
 * match; at least one of status and ids must be set. */
typedef struct ev_queue_selector {
    const char *status; /* NULL: any status */
    const int64_t *ids; /* NULL: any id */
    size_t nids;
    int64_t event_id; /* 0: any event */
} ev_queue_selector_t;

/* One submission an action changed (or would change, or left alone). */
typedef struct ev_queue_change {
    int64_t id;
    char status[16]; /* its status before the action ("" when not found) */
} ev_queue_change_t;

/* Puts the matching submissions that are not `processing` back to `pending`,
 * runnable now, with attempts, lease expiries and the lease cleared. With
 * dry_run nothing is written and *out lists what would change. *out (free
 * with free()) receives the rows in id order and *n their number; 0 or
 * EV_EINVAL (empty selector, unknown status), EV_EDB, EV_EDBCONN. */
int ev_queue_operator_requeue(ev_db_t *db, const ev_queue_selector_t *sel, bool dry_run,
                              ev_queue_change_t **out, size_t *n);

/* Marks the given submissions `cancelled` when they are `pending`,
 * `needs_review` or `failed`; others are left alone. last_error receives
 * `reason`. *out / *n as above: the rows cancelled. */
int ev_queue_operator_cancel(ev_db_t *db, const int64_t *ids, size_t nids, const char *reason,
                             ev_queue_change_t **out, size_t *n);

/* The current status of each of the given ids that exists (for reporting
 * what an action left alone). *out / *n as above. */
int ev_queue_statuses(ev_db_t *db, const int64_t *ids, size_t nids, ev_queue_change_t **out,
                      size_t *n);

/* The latest `limit` submissions that ended in needs_review or failed, newest
 * first, as a new JSON array of {id, event_id, status, attempts, age_s,
 * last_error} (caller puts it). */
int ev_queue_latest_failures(ev_db_t *db, int limit, struct json_object **out);

/* True when s names a submission status. */
bool ev_queue_status_valid(const char *s);

/* ---- The organisers' API (src/api_server.c) asks these. ---- */

/* A new event. Strings are borrowed. */
typedef struct ev_queue_event {
    const char *name, *theme, *rules; /* rules may be NULL */
    bool require_pdf, require_image;
    const char *webhook_url;    /* NULL: no webhook */
    const char *webhook_secret; /* set when webhook_url is */
} ev_queue_event_t;

/* Creates an event; *id receives its id. EV_EEXIST when the name is taken,
 * EV_EDB/EV_EDBCONN. */
int ev_queue_event_create(ev_db_t *db, const ev_queue_event_t *ev, int64_t *id);

/* *json (caller frees) receives the event as one JSON object (id, name,
 * theme, rules, require_pdf, require_image, webhook_url, created_at; never
 * the webhook secret). EV_ENOTFOUND for an unknown id. */
int ev_queue_event_json(ev_db_t *db, int64_t id, char **json);

/* *json (caller frees) receives what `show` prints: the submission's id,
 * event_id, title, description, priority, status, attempts, last_error,
 * created_at, updated_at and `checks` keyed by check name (verdict, score,
 * reason, provider, model, http_attempts, latency_ms, tokens_in, tokens_out,
 * cached). *event_id (may be NULL) receives its event. EV_ENOTFOUND. */
int ev_queue_submission_json(ev_db_t *db, int64_t id, char **json, int64_t *event_id);

/* Keyset page of an event's submissions in id order: ids above `after`, at
 * most `limit`, only `status` when not NULL. *json (caller frees) receives
 * {"submissions":[{id,status,title,priority,attempts,created_at,
 * updated_at}...],"next_after":<last id, or null on the last page>}. */
int ev_queue_submission_list(ev_db_t *db, int64_t event_id, const char *status, int64_t after,
                             int limit, char **json);

/* One stored file of a new submission (a path relative to UPLOAD_DIR). */
typedef struct ev_queue_new_file {
    const char *kind; /* "pdf" or "image" */
    const char *filename;
    const char *storage_path;
} ev_queue_new_file_t;

typedef struct ev_queue_new_submission {
    int64_t event_id;
    const char *title, *description; /* description may be NULL */
    int priority;
    const ev_queue_new_file_t *files;
    size_t nfiles;
    const char *idempotency_key; /* NULL: none */
    const char *request_hash;    /* digest of the content, with a key */
} ev_queue_new_submission_t;

/*
 * Inserts the submission, its file rows and its idempotency key in one
 * transaction (the NOTIFY fires at commit, with every file in place).
 * 0 with *id the new submission and *replayed false; or, when the event
 * already has this idempotency key with the same request_hash, 0 with *id
 * the earlier submission, *replayed true and nothing written. EV_EEXIST: the
 * key was used for a different content (nothing written). EV_ENOTFOUND: no
 * such event. EV_EDB/EV_EDBCONN.
 */
int ev_queue_submission_insert(ev_db_t *db, const ev_queue_new_submission_t *sub, int64_t *id,
                               bool *replayed);

#endif
