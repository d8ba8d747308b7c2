/*
 * pool.h - the fixed pool of worker threads that drains the submission queue.
 *
 * Exactly `max_workers` worker threads run for the life of the pool; worker i
 * starts i * worker_stagger_ms after ev_pool_start (interruptible by stop).
 * Each worker owns one ev_db_t (reconnected with capped, jittered exponential
 * backoff when the database goes away), LISTENs on EV_QUEUE_CHANNEL and, when
 * the queue is empty, waits for a NOTIFY or poll_interval_ms, whichever comes
 * first. A claimed job is handed to the `process` callback on the worker's
 * thread. One heartbeat thread per pool (own ev_db_t) refreshes the leases of
 * this process's owner id every ~lease_seconds/4 and rescues expired leases
 * of any process.
 *
 * Shutdown (ev_pool_stop): claiming stops at once; in-flight jobs may finish
 * for up to grace_ms; then every worker's `stop` flag is set so `process`
 * returns EV_ESHUTDOWN and the pool releases the job (the attempt is not
 * spent). Drain mode: the pool finishes by itself once the queue has nothing
 * outstanding and no worker is busy, and calls on_drained.
 *
 * All functions except the callbacks run on the caller's thread; see each.
 */
#ifndef EV_POOL_H
#define EV_POOL_H

#include "ev/config.h"
#include "ev/db.h"
#include "ev/queue.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct ev_pool ev_pool_t;

/*
 * What the pool does with a job. Every callback except on_drained runs on a
 * worker thread, never with a pool lock held; `ctx` is callbacks.ctx.
 */
typedef struct ev_pool_callbacks {
    /* Optional. Creates the worker's private state on its own thread (index
     * 0..max_workers-1). A non-zero return is retried with backoff until it
     * succeeds or the pool stops. */
    int (*worker_init)(void **state, int index, void *ctx);
    /* Required. Processes one claimed job to its end with the worker's own
     * db; the same contract as ev_pipeline_process() in pipeline.h:
     * 0 finished through the queue (complete/requeue) by the callback;
     * EV_ESHUTDOWN `stop` was seen: the pool releases the job;
     * EV_ELEASE lease lost: nothing more is written;
     * EV_EDBCONN the database went away: the pool reconnects, then releases
     * the job if the lease is still ours (else it is rescued later).
     * Any other negative code, or EV_ESHUTDOWN while no stop was asked for,
     * is a bug in the callback: the pool requeues the job with backoff
     * (spending the attempt) so it cannot loop forever. */
    int (*process)(void *state, ev_db_t *db, const ev_job_t *job, const atomic_bool *stop,
                   void *ctx);
    /* Optional. Frees the state on the worker thread when it exits. */
    void (*worker_fini)(void *state, void *ctx);
    /* Optional. Called on the worker thread after each job with process()'s
     * return code (for stats). */
    void (*on_job_done)(const ev_job_t *job, int rc, void *ctx);
    /* Optional. Called once, from the pool thread that detected it, when a
     * drain-mode pool has finished. Must not call ev_pool_stop/free (it runs on
     * a pool thread); waking the main thread is its job. */
    void (*on_drained)(void *ctx);
    void *ctx;
} ev_pool_callbacks_t;

typedef struct ev_pool_options {
    const char *database_url; /* required; copied */
    int max_workers;          /* >= 1 */
    int worker_stagger_ms;    /* worker i starts i * this after start */
    int poll_interval_ms;     /* idle fallback poll when no NOTIFY arrives */
    int lease_seconds;        /* a lease not heartbeated this long is rescued */
    int max_attempts;         /* rescue marks `failed` at this many attempts */
    int grace_ms;             /* in-flight time allowed after stop */
    bool drain;               /* finish once nothing is outstanding */
    int heartbeat_ms;         /* 0: lease_seconds*1000/4, at least 1000 */
    int reconnect_base_ms;    /* first reconnect delay */
    int reconnect_max_ms;     /* reconnect delay cap */
    int requeue_base_ms;      /* backoff for a job whose process() misbehaved */
    int requeue_max_ms;
    const char *owner; /* NULL: "hostname:pid:random"; copied */
} ev_pool_options_t;

#define EV_POOL_DEFAULT_GRACE_MS 30000

#define EV_POOL_OPTIONS_INIT                                                                       \
    {                                                                                              \
        .database_url = NULL, .max_workers = 6, .worker_stagger_ms = 250,                          \
        .poll_interval_ms = 1000, .lease_seconds = 120, .max_attempts = 5,                         \
        .grace_ms = EV_POOL_DEFAULT_GRACE_MS, .drain = false, .heartbeat_ms = 0,                   \
        .reconnect_base_ms = 200, .reconnect_max_ms = 15000, .requeue_base_ms = 1000,              \
        .requeue_max_ms = 60000, .owner = NULL                                                     \
    }

/* Fills the fields that come from the configuration (database_url is
 * borrowed from cfg, which must outlive the options). */
void ev_pool_options_from_config(ev_pool_options_t *opts, const ev_config_t *cfg);

/*
 * Starts the heartbeat thread and the max_workers worker threads and returns
 * at once (workers connect in the background, so a database that is down at
 * start is retried, not fatal). Returns 0, EV_EINVAL for bad options or
 * missing `process`, or the error of ev_thread_create (threads already
 * started are stopped again). *out is NULL on failure. Call from main.
 */
int ev_pool_start(ev_pool_t **out, const ev_pool_options_t *opts, const ev_pool_callbacks_t *cb);

/*
 * Graceful stop, blocking: stops claiming, waits up to grace_ms for busy
 * workers, then sets their `stop` flags, joins every worker, then stops and
 * joins the heartbeat thread. Idempotent; call from the thread that owns the
 * pool (not from a callback).
 */
void ev_pool_stop(ev_pool_t *pool);

/* Stops the pool if needed and frees it. Accepts NULL. */
void ev_pool_free(ev_pool_t *pool);

/* Waits up to timeout_ms (< 0: no limit) until a drain-mode pool has
 * finished by itself. Returns true when it has. Thread-safe. */
bool ev_pool_wait_drained(ev_pool_t *pool, int timeout_ms);
bool ev_pool_drained(ev_pool_t *pool);

/* Snapshots, thread-safe. */
int ev_pool_configured(const ev_pool_t *pool);    /* max_workers */
int ev_pool_busy(ev_pool_t *pool);                /* workers holding a job now */
int64_t ev_pool_processed(const ev_pool_t *pool); /* jobs process() finished (returned 0) */
/* This process's lease owner id (static for the pool's life). */
const char *ev_pool_owner(const ev_pool_t *pool);

/* Builds a process-unique owner id "hostname:pid:random" into buf. */
void ev_pool_make_owner(char *buf, size_t len);

#endif
