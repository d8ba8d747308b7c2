/*
 * pool.c - fixed worker pool over the Postgres queue, plus the lease heartbeat.
 *
 * What: ev_pool_start() creates exactly max_workers worker threads and one
 * heartbeat thread (through threads.c). A worker waits for its stagger slot,
 * builds its private state (worker_init), connects its own ev_db_t, LISTENs on
 * EV_QUEUE_CHANNEL and loops: claim a job, hand it to process(), settle the
 * outcome (release on shutdown, reconnect-then-release on a lost connection),
 * or, when the queue is empty, wait for a NOTIFY or poll_interval_ms. The
 * heartbeat thread refreshes this process's leases, rescues expired leases of
 * any process, and raises a worker's `stop` flag when its lease was lost.
 *
 * How waits end: every sleep is a timed wait on pool.cv whose predicate is an
 * atomic flag written under pool.mu (so no wake-up is lost); the LISTEN wait
 * is sliced into SLICE_MS pieces so a stop is noticed within that time.
 * Time is the real CLOCK_MONOTONIC: every wait here is a condition-variable or
 * socket wait, which an injected clock could not drive.
 *
 * Threads: the owner (main or a test) calls start/stop/free; workers and the
 * heartbeat thread touch the shared fields documented in struct ev_pool;
 * getters may be called from any thread (stats server).
 *
 * Lock order: pool.mu is the only lock in this file and a leaf: no other lock
 * is taken while holding it, and libpq, the logger and every callback are
 * called only with it released.
 */
#include "ev/pool.h"

#include "ev/error.h"
#include "ev/log.h"
#include "ev/threads.h"
#include "ev/util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Longest uninterruptible piece of an idle LISTEN wait. */
#define SLICE_MS 100
/* Upper bound on max_workers, a sanity check on configuration mistakes. */
#define MAX_WORKERS_LIMIT 1024

typedef struct worker {
    ev_pool_t *pool;    /* immutable */
    int index;          /* immutable */
    ev_thread_t thread; /* written by ev_pool_start before the thread runs, joined by the owner */
    /* The `stop` flag handed to process(): set under pool.mu when the grace
     * period is over or the heartbeat found this job's lease lost; reset under
     * pool.mu when the next job starts. Read lock-free by process(). */
    atomic_bool stop;
    bool busy;        /* guarded by pool.mu */
    ev_job_t job;     /* guarded by pool.mu; meaningful while busy */
    uint64_t job_seq; /* guarded by pool.mu; bumped for every job */
} worker_t;

struct ev_pool {
    /* Immutable after ev_pool_start. */
    ev_pool_options_t opts; /* string fields point at the copies below */
    char *database_url;
    char owner[96];
    ev_pool_callbacks_t cb;
    int64_t start_ms;
    int heartbeat_ms;
    int nworkers;
    worker_t *workers;     /* array itself immutable; fields as documented */
    ev_thread_t hb_thread; /* touched by the owner thread only */
    bool joined;           /* touched by the owner thread only */

    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; broadcast on every change below */
    /* Workers: claim nothing more. Written under mu, read lock-free. */
    atomic_bool stopping;
    /* Grace period over: every job must stop. Guarded by mu. */
    bool hard_stop;
    /* Heartbeat thread: exit. Written under mu, read lock-free. */
    atomic_bool hb_stop;
    bool drained;                  /* guarded by mu */
    int busy;                      /* guarded by mu: workers with busy == true */
    uint64_t claims;               /* guarded by mu: jobs ever started */
    atomic_int_fast64_t processed; /* relaxed counter */
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec ms_to_timespec(int64_t ms)
{
    struct timespec ts;

    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    return ts;
}

/*
 * Waits until *flag is true or the monotonic deadline passes. Returns the
 * flag's value. Every writer of a flag waited on here stores it under pool.mu
 * and broadcasts pool.cv, so checking it under the lock cannot miss a wake-up.
 */
static bool wait_flag(ev_pool_t *p, const atomic_bool *flag, int64_t deadline_ms)
{
    struct timespec ts = ms_to_timespec(deadline_ms);
    bool set;

    pthread_mutex_lock(&p->mu);
    while (!atomic_load(flag) && now_ms() < deadline_ms) {
        if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT)
            break;
    }
    set = atomic_load(flag);
    pthread_mutex_unlock(&p->mu);
    return set;
}

/* Exponential backoff with "equal jitter": a delay in [d/2, d] where
 * d = min(max, base * 2^attempt), so retries of several threads spread out. */
static int backoff_ms(int base, int max, int attempt)
{
    int64_t d = base > 0 ? base : 1;

    for (int i = 0; i < attempt && d < max; i++)
        d *= 2;
    if (d > max)
        d = max;
    return (int)(d / 2 + ev_rand_range(0, d - d / 2));
}

/*
 * Makes *db usable: connects it if NULL, else reconnects a broken one, with
 * backoff between attempts, until it works (0) or *interrupt becomes true
 * (EV_ESHUTDOWN). LISTEN is issued after the first successful connect; later
 * reconnects re-issue it inside ev_db_ensure (db.h).
 */
static int ensure_db(ev_pool_t *p, ev_db_t **db, bool listen, const atomic_bool *interrupt,
                     const char *who)
{
    char err[256] = "";
    int attempt = 0, rc;

    for (;;) {
        if (*db == NULL) {
            rc = ev_db_connect(db, p->database_url, err, sizeof(err));
            if (rc == 0 && listen) {
                rc = ev_db_listen(*db, EV_QUEUE_CHANNEL);
                if (rc != 0) {
                    snprintf(err, sizeof(err), "LISTEN failed: %s", ev_db_error(*db));
                    ev_db_free(*db);
                    *db = NULL;
                }
            }
        } else {
            rc = ev_db_ensure(*db);
            if (rc != 0)
                snprintf(err, sizeof(err), "%s", ev_db_error(*db));
        }
        if (rc == 0) {
            if (attempt > 0)
                ev_log(EV_LOG_INFO, "%s reconnected to the database after %d attempts", who,
                       attempt + 1);
            return 0;
        }
        if (attempt == 0 || attempt % 10 == 0)
            ev_log_kv(EV_LOG_WARN, "database unreachable, retrying", "who", who, "error", err,
                      NULL);
        if (wait_flag(p, interrupt,
                      now_ms() +
                          backoff_ms(p->opts.reconnect_base_ms, p->opts.reconnect_max_ms, attempt)))
            return EV_ESHUTDOWN;
        attempt++;
    }
}

/* Gives a job back without spending its attempt. `persist` allows a
 * reconnect loop (interruptible by the worker's stop flag); otherwise one
 * reconnect is tried. Failure is fine: the lease expires and is rescued. */
static void release_job(worker_t *w, ev_db_t **db, const ev_job_t *job, bool persist)
{
    ev_pool_t *p = w->pool;
    int rc = ev_queue_release(*db, job);

    if (rc == EV_EDBCONN) {
        if (persist)
            rc = ensure_db(p, db, true, &w->stop, "worker");
        else
            rc = ev_db_ensure(*db);
        if (rc == 0)
            rc = ev_queue_release(*db, job);
    }
    if (rc == 0)
        ev_log(EV_LOG_INFO, "submission released for a later attempt");
    else if (rc != EV_ELEASE)
        ev_log(EV_LOG_WARN,
               "could not release submission (%s); its lease will expire and be rescued",
               ev_strerror(rc));
}

/*
 * Settles a job after process() returned `prc`: whatever process() did not
 * finish itself is released (or, for a misbehaving callback, requeued).
 */
static void settle_job(worker_t *w, ev_db_t **db, const ev_job_t *job, int prc)
{
    ev_pool_t *p = w->pool;
    int rc;

    switch (prc) {
    case 0:
    case EV_ELEASE:
        break;
    case EV_ESHUTDOWN:
        /* Only a stop we asked for justifies giving the attempt back; an
         * unprompted EV_ESHUTDOWN would otherwise be claimed again at once,
         * forever. */
        if (!atomic_load(&w->stop) && !atomic_load(&p->stopping))
            goto misbehaved;
        release_job(w, db, job, false);
        break;
    case EV_EDBCONN:
        ev_log(EV_LOG_WARN, "database connection lost while processing; reconnecting");
        if (ensure_db(p, db, true, &w->stop, "worker") == 0)
            release_job(w, db, job, true);
        break;
    case EV_EDB: /* not a lost connection: retrying at once would fail the same way */
    default:
    misbehaved:
        if (prc == EV_EDB)
            ev_log(EV_LOG_ERROR, "database error while processing; requeueing with backoff");
        else
            ev_log(EV_LOG_ERROR, "processing returned unexpected %s; requeueing the submission",
                   ev_errname(prc));
        rc = ev_queue_requeue(*db, job, p->opts.max_attempts, p->opts.requeue_base_ms,
                              p->opts.requeue_max_ms, ev_strerror(prc), NULL);
        if (rc != 0 && rc != EV_ELEASE)
            ev_log(EV_LOG_WARN, "could not requeue submission (%s); its lease will expire",
                   ev_strerror(rc));
        break;
    }
}

/*
 * Drain check, run by a worker that just found the queue empty (so it is not
 * busy itself). The queue count is read without the lock; the claims counter
 * taken before and after proves no job started in between, and busy == 0
 * proves no job (and no on_job_done) is still in flight. Every row moves
 * atomically between pending/processing and a final status, so a count of 0
 * under those conditions means nothing is left. Returns true when the pool has
 * finished (now or earlier).
 */
static bool check_drained(worker_t *w, ev_db_t *db)
{
    ev_pool_t *p = w->pool;
    uint64_t claims_before;
    int64_t outstanding = -1;
    bool first = false, idle;

    pthread_mutex_lock(&p->mu);
    idle = p->busy == 0;
    claims_before = p->claims;
    pthread_mutex_unlock(&p->mu);
    if (!idle)
        return false;
    if (ev_queue_outstanding(db, &outstanding) != 0 || outstanding != 0)
        return false;
    pthread_mutex_lock(&p->mu);
    if (p->busy == 0 && p->claims == claims_before && !p->drained) {
        p->drained = true;
        atomic_store(&p->stopping, true);
        pthread_cond_broadcast(&p->cv);
        first = true;
    }
    pthread_mutex_unlock(&p->mu);
    if (first) {
        ev_log(EV_LOG_INFO, "queue drained: nothing outstanding and no worker busy");
        if (p->cb.on_drained)
            p->cb.on_drained(p->cb.ctx);
    }
    return first;
}

/* Idle wait: returns when a NOTIFY arrived, poll_interval_ms passed, the pool
 * is stopping (0), or the connection broke (EV_EDBCONN). */
static int wait_for_work(ev_pool_t *p, ev_db_t *db)
{
    int64_t deadline = now_ms() + p->opts.poll_interval_ms;
    int64_t left;
    int rc;

    while (!atomic_load(&p->stopping) && (left = deadline - now_ms()) > 0) {
        rc = ev_db_wait_notify(db, (int)EV_MIN(left, SLICE_MS));
        if (rc == 1)
            return 0;
        if (rc < 0)
            return EV_EDBCONN;
    }
    return 0;
}

/* Marks the worker busy with `job`. Returns false when the pool started
 * stopping after the claim: the caller then releases the job unprocessed. */
static bool begin_job(worker_t *w, const ev_job_t *job)
{
    ev_pool_t *p = w->pool;
    bool ok;

    pthread_mutex_lock(&p->mu);
    ok = !atomic_load(&p->stopping);
    if (ok) {
        w->busy = true;
        w->job = *job;
        w->job_seq++;
        p->busy++;
        p->claims++;
        atomic_store(&w->stop, p->hard_stop);
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

static void end_job(worker_t *w)
{
    ev_pool_t *p = w->pool;

    pthread_mutex_lock(&p->mu);
    EV_ASSERT(w->busy && p->busy > 0);
    w->busy = false;
    p->busy--;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    ev_pool_t *p = w->pool;
    void *state = NULL;
    bool have_state = false;
    ev_db_t *db = NULL;
    int errors = 0, attempt = 0, rc;
    ev_job_t job;

    ev_log_ctx_worker(w->index);
    if (wait_flag(p, &p->stopping, p->start_ms + (int64_t)w->index * p->opts.worker_stagger_ms))
        goto out;
    while (p->cb.worker_init) {
        rc = p->cb.worker_init(&state, w->index, p->cb.ctx);
        if (rc == 0)
            break;
        ev_log(EV_LOG_ERROR, "worker initialisation failed (%s); retrying", ev_strerror(rc));
        if (wait_flag(p, &p->stopping,
                      now_ms() + backoff_ms(p->opts.reconnect_base_ms, p->opts.reconnect_max_ms,
                                            attempt++)))
            goto out;
    }
    have_state = true;
    if (ensure_db(p, &db, true, &p->stopping, "worker") != 0)
        goto out;
    ev_log(EV_LOG_DEBUG, "worker ready");

    while (!atomic_load(&p->stopping)) {
        rc = ev_queue_claim(db, p->owner, &job);
        if (rc == 0) {
            errors = 0;
            ev_log_ctx_submission(job.submission_id);
            ev_log_ctx_attempt(job.attempt);
            if (!begin_job(w, &job)) {
                release_job(w, &db, &job, false);
            } else {
                int prc = p->cb.process(state, db, &job, &w->stop, p->cb.ctx);

                settle_job(w, &db, &job, prc);
                if (prc == 0)
                    atomic_fetch_add_explicit(&p->processed, 1, memory_order_relaxed);
                if (p->cb.on_job_done)
                    p->cb.on_job_done(&job, prc, p->cb.ctx);
                end_job(w);
            }
            ev_log_ctx_submission(0);
            ev_log_ctx_attempt(-1);
            continue;
        }
        if (rc == EV_EEMPTY) {
            errors = 0;
            if (p->opts.drain && check_drained(w, db))
                break;
            rc = wait_for_work(p, db);
        }
        if (rc == EV_EDBCONN) {
            /* A connection that looks fine to libpq but keeps failing must
             * not turn into a hot loop: back off from the second failure. */
            if (errors > 0 &&
                wait_flag(p, &p->stopping,
                          now_ms() + backoff_ms(p->opts.reconnect_base_ms, p->opts.reconnect_max_ms,
                                                errors - 1)))
                break;
            errors++;
            if (ensure_db(p, &db, true, &p->stopping, "worker") != 0)
                break;
        } else if (rc < 0) {
            /* A query error that is not a lost connection (schema missing,
             * lock timeout...): back off so the log is not flooded. */
            if (errors == 0 || errors % 10 == 0)
                ev_log(EV_LOG_ERROR, "claiming failed: %s (%s)", ev_strerror(rc),
                       db ? ev_db_error(db) : "");
            wait_flag(p, &p->stopping,
                      now_ms() +
                          backoff_ms(p->opts.poll_interval_ms, p->opts.reconnect_max_ms, errors++));
        }
    }
out:
    ev_db_free(db);
    if (have_state && p->cb.worker_fini)
        p->cb.worker_fini(state, p->cb.ctx);
    ev_log_ctx_clear();
    return NULL;
}

/* One heartbeat tick: refresh our leases, rescue expired ones, and stop any
 * worker whose lease turned out to be lost. Returns 0 or the db error. */
static int heartbeat_tick(ev_pool_t *p, ev_db_t *db)
{
    int64_t refreshed = 0, rescued = 0, failed = 0;
    struct inflight {
        int index;
        uint64_t seq;
        ev_job_t job;
    } *inflight = NULL;
    int n = 0, rc;

    rc = ev_queue_heartbeat(db, p->owner, &refreshed);
    if (rc != 0)
        goto out;
    rc = ev_queue_rescue(db, p->opts.lease_seconds, p->opts.max_attempts, &rescued, &failed);
    if (rc != 0)
        goto out;
    if (rescued > 0 || failed > 0)
        ev_log(EV_LOG_WARN,
               "rescued %lld expired lease(s); %lld submission(s) failed after max attempts",
               (long long)rescued, (long long)failed);

    inflight = ev_calloc((size_t)p->nworkers, sizeof(*inflight));
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->nworkers; i++) {
        if (p->workers[i].busy) {
            inflight[n].index = i;
            inflight[n].seq = p->workers[i].job_seq;
            inflight[n].job = p->workers[i].job;
            n++;
        }
    }
    pthread_mutex_unlock(&p->mu);
    for (int k = 0; k < n; k++) {
        bool stopped = false;

        rc = ev_queue_check_lease(db, &inflight[k].job);
        if (rc == EV_ELEASE) {
            worker_t *w = &p->workers[inflight[k].index];

            pthread_mutex_lock(&p->mu);
            if (w->busy && w->job_seq == inflight[k].seq) {
                atomic_store(&w->stop, true);
                pthread_cond_broadcast(&p->cv);
                stopped = true;
            }
            pthread_mutex_unlock(&p->mu);
            if (stopped)
                ev_log(EV_LOG_WARN, "lease of submission %lld was lost; stopping its worker %d",
                       (long long)inflight[k].job.submission_id, inflight[k].index);
            rc = 0;
        } else if (rc != 0) {
            goto out;
        }
    }
    rc = 0;
out:
    free(inflight);
    return rc;
}

static void *heartbeat_main(void *arg)
{
    ev_pool_t *p = arg;
    ev_db_t *db = NULL;
    int failures = 0, rc;

    if (ensure_db(p, &db, false, &p->hb_stop, "heartbeat") != 0)
        goto out;
    while (!atomic_load(&p->hb_stop)) {
        rc = heartbeat_tick(p, db);
        if (rc == EV_EDBCONN) {
            /* Retry soon (leases are at stake), but never in a hot loop. */
            if (failures > 0 &&
                wait_flag(p, &p->hb_stop,
                          now_ms() + backoff_ms(p->opts.reconnect_base_ms, p->opts.reconnect_max_ms,
                                                failures - 1)))
                break;
            failures++;
            if (ensure_db(p, &db, false, &p->hb_stop, "heartbeat") != 0)
                break;
            continue;
        }
        failures = 0;
        if (rc != 0)
            ev_log(EV_LOG_WARN, "heartbeat failed: %s (%s)", ev_strerror(rc), ev_db_error(db));
        wait_flag(p, &p->hb_stop, now_ms() + p->heartbeat_ms);
    }
out:
    ev_db_free(db);
    return NULL;
}

void ev_pool_options_from_config(ev_pool_options_t *opts, const ev_config_t *cfg)
{
    opts->database_url = cfg->database_url;
    opts->max_workers = cfg->max_workers;
    opts->worker_stagger_ms = cfg->worker_stagger_ms;
    opts->poll_interval_ms = cfg->poll_interval_ms;
    opts->lease_seconds = cfg->lease_seconds;
    opts->max_attempts = cfg->max_attempts;
    opts->grace_ms = cfg->shutdown_grace_ms;
    opts->requeue_base_ms = cfg->requeue_base_ms;
    opts->requeue_max_ms = cfg->requeue_max_ms;
}

void ev_pool_make_owner(char *buf, size_t len)
{
    char host[65] = "";

    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "unknown");
    snprintf(buf, len, "%s:%ld:%08llx", host, (long)getpid(),
             (unsigned long long)ev_rand_range(0, 0xffffffffLL));
}

static bool options_valid(const ev_pool_options_t *o, const ev_pool_callbacks_t *cb)
{
    return o->database_url != NULL && cb != NULL && cb->process != NULL && o->max_workers >= 1 &&
           o->max_workers <= MAX_WORKERS_LIMIT && o->worker_stagger_ms >= 0 &&
           o->poll_interval_ms >= 1 && o->lease_seconds >= 1 && o->max_attempts >= 1 &&
           o->grace_ms >= 0 && o->heartbeat_ms >= 0 && o->reconnect_base_ms >= 1 &&
           o->reconnect_max_ms >= o->reconnect_base_ms && o->requeue_base_ms >= 1 &&
           o->requeue_max_ms >= o->requeue_base_ms;
}

static void join_all(ev_pool_t *p)
{
    for (int i = 0; i < p->nworkers; i++)
        ev_thread_join(&p->workers[i].thread, NULL);
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->hb_stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    ev_thread_join(&p->hb_thread, NULL);
    p->joined = true;
}

static void pool_destroy(ev_pool_t *p)
{
    if (p == NULL)
        return;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p->database_url);
    free(p);
}

int ev_pool_start(ev_pool_t **out, const ev_pool_options_t *opts, const ev_pool_callbacks_t *cb)
{
    pthread_condattr_t attr;
    ev_pool_t *p = NULL;
    char name[32]; /* ev_thread_create truncates to the 15-char limit */
    int rc;

    *out = NULL;
    if (opts == NULL || !options_valid(opts, cb)) {
        rc = EV_EINVAL;
        goto out;
    }
    p = ev_calloc(1, sizeof(*p));
    p->opts = *opts;
    p->cb = *cb;
    p->database_url = ev_strdup(opts->database_url);
    p->opts.database_url = p->database_url;
    if (opts->owner)
        snprintf(p->owner, sizeof(p->owner), "%s", opts->owner);
    else
        ev_pool_make_owner(p->owner, sizeof(p->owner));
    p->opts.owner = p->owner;
    p->heartbeat_ms =
        opts->heartbeat_ms > 0 ? opts->heartbeat_ms : EV_MAX(1000, opts->lease_seconds * 1000 / 4);
    p->nworkers = opts->max_workers;
    p->workers = ev_calloc((size_t)p->nworkers, sizeof(worker_t));
    EV_ASSERT(pthread_mutex_init(&p->mu, NULL) == 0);
    EV_ASSERT(pthread_condattr_init(&attr) == 0);
    EV_ASSERT(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0);
    EV_ASSERT(pthread_cond_init(&p->cv, &attr) == 0);
    pthread_condattr_destroy(&attr);
    atomic_init(&p->stopping, false);
    atomic_init(&p->hb_stop, false);
    atomic_init(&p->processed, 0);
    p->start_ms = now_ms();

    rc = ev_thread_create(&p->hb_thread, "ev-heartbeat", heartbeat_main, p);
    if (rc != 0)
        goto out;
    for (int i = 0; i < p->nworkers; i++) {
        worker_t *w = &p->workers[i];

        w->pool = p;
        w->index = i;
        atomic_init(&w->stop, false);
        snprintf(name, sizeof(name), "ev-worker%d", i);
        rc = ev_thread_create(&w->thread, name, worker_main, w);
        if (rc != 0)
            goto out;
    }
    ev_log(EV_LOG_INFO, "worker pool started: %d workers, stagger %d ms, owner %s%s", p->nworkers,
           p->opts.worker_stagger_ms, p->owner, p->opts.drain ? ", drain mode" : "");
    *out = p;
    p = NULL;
    rc = 0;
out:
    if (p) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->stopping, true);
        p->hard_stop = true;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        join_all(p);
        pool_destroy(p);
    }
    return rc;
}

void ev_pool_stop(ev_pool_t *p)
{
    struct timespec ts;
    int64_t deadline;
    int busy;

    if (p == NULL || p->joined)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stopping, true);
    pthread_cond_broadcast(&p->cv);
    busy = p->busy;
    pthread_mutex_unlock(&p->mu);
    if (busy > 0)
        ev_log(EV_LOG_INFO, "stopping: %d submission(s) in flight, grace period %d ms", busy,
               p->opts.grace_ms);

    deadline = now_ms() + p->opts.grace_ms;
    ts = ms_to_timespec(deadline);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0 && now_ms() < deadline) {
        if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT)
            break;
    }
    busy = p->busy;
    p->hard_stop = true;
    for (int i = 0; i < p->nworkers; i++)
        atomic_store(&p->workers[i].stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (busy > 0)
        ev_log(EV_LOG_WARN, "grace period over: releasing %d in-flight submission(s)", busy);

    join_all(p);
    ev_log(EV_LOG_INFO, "worker pool stopped");
}

void ev_pool_free(ev_pool_t *p)
{
    if (p == NULL)
        return;
    ev_pool_stop(p);
    pool_destroy(p);
}

bool ev_pool_wait_drained(ev_pool_t *p, int timeout_ms)
{
    int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    struct timespec ts = ms_to_timespec(deadline);
    bool drained;

    pthread_mutex_lock(&p->mu);
    while (!p->drained) {
        if (timeout_ms < 0)
            pthread_cond_wait(&p->cv, &p->mu);
        else if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT)
            break;
    }
    drained = p->drained;
    pthread_mutex_unlock(&p->mu);
    return drained;
}

bool ev_pool_drained(ev_pool_t *p)
{
    return ev_pool_wait_drained(p, 0);
}

int ev_pool_configured(const ev_pool_t *p)
{
    return p->nworkers;
}

int ev_pool_busy(ev_pool_t *p)
{
    int busy;

    pthread_mutex_lock(&p->mu);
    busy = p->busy;
    pthread_mutex_unlock(&p->mu);
    return busy;
}

int64_t ev_pool_processed(const ev_pool_t *p)
{
    return atomic_load_explicit(&p->processed, memory_order_relaxed);
}

const char *ev_pool_owner(const ev_pool_t *p)
{
    return p->owner;
}
