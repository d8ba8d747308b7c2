/*
 * pipeline.h - the per-submission processing step (SPEC §5, issue 4).
 *
 * The worker pool claims a job and hands it to ev_pipeline_process() on the
 * worker's own thread with the worker's own ev_db_t. The pipeline loads the
 * submission and its files, runs local checks then LLM checks, upserts
 * validation_results and finishes the job through the queue (complete or
 * requeue), all guarded by the job's lease.
 *
 * Shared state (provider clients' limiters, breakers, semaphores, stats) lives
 * in ev_pipeline_t, created once in main before the pool starts and freed after
 * it stops. Per-thread state (CURL handle, magic_t) lives in
 * ev_pipeline_worker_t, created on the worker's own thread.
 */
#ifndef EV_PIPELINE_H
#define EV_PIPELINE_H

#include "ev/config.h"
#include "ev/db.h"
#include "ev/queue.h"

#include <stdatomic.h>
#include <stdbool.h>

typedef struct ev_pipeline ev_pipeline_t;
typedef struct ev_pipeline_worker ev_pipeline_worker_t;
struct ev_stats;

/* cfg must outlive the pipeline. stats may be NULL (nothing recorded). */
int ev_pipeline_new(ev_pipeline_t **out, const ev_config_t *cfg, struct ev_stats *stats);
void ev_pipeline_free(ev_pipeline_t *p);

/* Makes the providers' limits cluster-wide (ev_router_attach_cluster).
 * After ev_pipeline_new, before the pool starts. */
struct ev_cluster;
int ev_pipeline_attach_cluster(ev_pipeline_t *p, struct ev_cluster *c);

/* False once every provider has been disabled by a configuration error
 * (invalid key, unknown model): nothing can be judged any more, and `serve`
 * stops instead of turning the queue into needs_review. Thread-safe. */
bool ev_pipeline_usable(ev_pipeline_t *p);

/* True while every check has a provider and model that can answer it
 * (ev_router_ready). Thread-safe. */
bool ev_pipeline_ready(ev_pipeline_t *p);

/* The router's table of models set aside (serve's preflight marks it). */
struct ev_availability *ev_pipeline_availability(ev_pipeline_t *p);

/* Spend accounting and limits (spend.h) for every later submission; NULL:
 * none. Call before the workers start; spend must outlive the pipeline. */
struct ev_spend;
void ev_pipeline_set_spend(ev_pipeline_t *p, struct ev_spend *spend);

/* Called on the worker thread that will use it. */
int ev_pipeline_worker_new(ev_pipeline_worker_t **out, ev_pipeline_t *p, int index);
void ev_pipeline_worker_free(ev_pipeline_worker_t *w);

/*
 * Processes one claimed job to its end. `stop` is set by the pool when the
 * process is shutting down and the grace period has expired (or the lease was
 * found lost); the pipeline checks it between steps and while waiting.
 * Returns:
 *   0            the job was finished through the queue (complete/requeue);
 *   EV_ESHUTDOWN `stop` was set before finishing: the pool releases the job;
 *   EV_ELEASE    the lease was lost: nothing more may be written;
 *   EV_EDBCONN   the database went away: the pool reconnects; the lease will
 *                be rescued (or released after reconnecting);
 *   EV_EDB       any other database error: the pool requeues the job with
 *                backoff, spending the attempt (never a release, which would
 *                let a deterministic error loop forever).
 */
int ev_pipeline_process(ev_pipeline_worker_t *w, ev_db_t *db, const ev_job_t *job,
                        const atomic_bool *stop);

#endif
