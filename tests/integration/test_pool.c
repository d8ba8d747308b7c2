/*
 * test_pool.c - the worker pool against a real Postgres (DATABASE_URL).
 *
 * Each test makes its own throwaway database (tests/support/pgtest.h), fills
 * the queue with plain SQL, and drives the pool with a processing function of
 * its own whose behaviour is chosen per test (complete, block until stopped,
 * wait for a gate, kill its own connection, requeue once, hold the lease).
 * Waits are on conditions with generous bounds; nothing asserts speed.
 */
#include "ev/error.h"
#include "ev/log.h"
#include "ev/pool.h"
#include "ev/queue.h"
#include "ev/threads.h"
#include "ev/util.h"
#include "pgtest.h"

#include <CUnit/Basic.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "runner.h"

#define MAX_IDS 1024
#define BOUND_MS 20000

typedef enum {
    MODE_COMPLETE,       /* count the job, complete it as validated */
    MODE_BLOCK,          /* block until `stop`, return EV_ESHUTDOWN */
    MODE_GATE,           /* block until the test opens the gate, then complete */
    MODE_SLOW,           /* take ~300 ms (giving up if stopped), then complete */
    MODE_KILL_SELF_ONCE, /* first job: terminate own backend, return EV_EDBCONN */
    MODE_REQUEUE_ONCE,   /* attempt 1: requeue with a short backoff; later: complete */
    MODE_HOLD,           /* hold the job for hold_ms (or until stop), then complete */
    MODE_ROGUE,          /* return EV_ESHUTDOWN although nobody asked to stop */
    MODE_DB_ERROR,       /* return EV_EDB: a database error that is not a lost connection */
} behaviour_t;

typedef struct tctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    behaviour_t mode;
    int inits, finis;
    int cur_busy, max_busy;
    int started;   /* process() calls */
    int completed; /* ev_queue_complete returned 0 */
    int saw_stop;  /* process() returned because of `stop` */
    int drained_calls;
    int done_calls; /* on_job_done calls */
    int last_rc;    /* rc passed to the latest on_job_done */
    int hold_rc;    /* MODE_HOLD: ev_queue_complete's result */
    bool gate_open;
    bool killed;
    bool names_ok;        /* every worker thread was named ev-worker<i> */
    bool signals_blocked; /* every worker thread had SIGTERM/SIGINT blocked */
    bool index_seen[64];
    int hold_ms;
    int counts[MAX_IDS];
    int64_t start_ms;
    int64_t init_ms[64];
} tctx_t;

typedef struct wstate {
    tctx_t *t;
    int index;
} wstate_t;

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void tctx_init(tctx_t *t, behaviour_t mode)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->mode = mode;
    t->names_ok = true;
    t->signals_blocked = true;
    t->start_ms = mono_ms();
}

static void tctx_destroy(tctx_t *t)
{
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

/* Waits (bounded) until pred(t) holds under t->mu. */
static bool wait_for(tctx_t *t, bool (*pred)(tctx_t *, int), int arg, int bound_ms)
{
    int64_t deadline = mono_ms() + bound_ms;
    bool ok;

    pthread_mutex_lock(&t->mu);
    while (!(ok = pred(t, arg)) && mono_ms() < deadline) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    pthread_mutex_unlock(&t->mu);
    return ok;
}

static bool started_at_least(tctx_t *t, int n)
{
    return t->started >= n;
}
static bool busy_at_least(tctx_t *t, int n)
{
    return t->cur_busy >= n;
}
static bool inits_at_least(tctx_t *t, int n)
{
    return t->inits >= n;
}
static bool saw_stop_at_least(tctx_t *t, int n)
{
    return t->saw_stop >= n;
}

/* Polls a SQL count on its own connection until it equals `want`. */
static bool wait_sql(const char *url, const char *sql, int64_t want, int bound_ms)
{
    int64_t deadline = mono_ms() + bound_ms, v = -1;

    for (;;) {
        if (ev_pgtest_query_i64(url, sql, &v) == 0 && v == want)
            return true;
        if (mono_ms() >= deadline)
            return false;
        sleep_ms(50);
    }
}

static int64_t sql_i64(const char *url, const char *sql)
{
    int64_t v = -1;

    CU_ASSERT_EQUAL(ev_pgtest_query_i64(url, sql, &v), 0);
    return v;
}

/* ---- callbacks ---------------------------------------------------------- */

static int cb_init(void **state, int index, void *ctx)
{
    tctx_t *t = ctx;
    wstate_t *w = ev_calloc(1, sizeof(*w));
    char name[32] = "", want[32];
    sigset_t mask;

    w->t = t;
    w->index = index;
    *state = w;
    pthread_getname_np(pthread_self(), name, sizeof(name));
    snprintf(want, sizeof(want), "ev-worker%d", index);
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    pthread_mutex_lock(&t->mu);
    t->inits++;
    if (strcmp(name, want) != 0)
        t->names_ok = false;
    if (!sigismember(&mask, SIGTERM) || !sigismember(&mask, SIGINT))
        t->signals_blocked = false;
    if (index < 64) {
        t->index_seen[index] = true;
        t->init_ms[index] = mono_ms();
    }
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return 0;
}

static void cb_fini(void *state, void *ctx)
{
    tctx_t *t = ctx;

    pthread_mutex_lock(&t->mu);
    t->finis++;
    pthread_mutex_unlock(&t->mu);
    free(state);
}

static int complete(tctx_t *t, ev_db_t *db, const ev_job_t *job)
{
    int rc = ev_queue_complete(db, job, "validated", NULL);

    pthread_mutex_lock(&t->mu);
    if (rc == 0)
        t->completed++;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

static int cb_process(void *state, ev_db_t *db, const ev_job_t *job, const atomic_bool *stop,
                      void *ctx)
{
    tctx_t *t = ctx;
    int rc = 0;
    int64_t deadline;

    (void)state;
    pthread_mutex_lock(&t->mu);
    t->started++;
    t->cur_busy++;
    if (t->cur_busy > t->max_busy)
        t->max_busy = t->cur_busy;
    if (job->submission_id > 0 && job->submission_id < MAX_IDS)
        t->counts[job->submission_id]++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);

    switch (t->mode) {
    case MODE_COMPLETE:
        rc = complete(t, db, job);
        break;
    case MODE_BLOCK:
        deadline = mono_ms() + BOUND_MS * 2;
        while (!atomic_load(stop) && mono_ms() < deadline)
            sleep_ms(5);
        rc = EV_ESHUTDOWN;
        pthread_mutex_lock(&t->mu);
        t->saw_stop += atomic_load(stop) ? 1 : 0;
        pthread_mutex_unlock(&t->mu);
        break;
    case MODE_GATE:
        pthread_mutex_lock(&t->mu);
        while (!t->gate_open)
            pthread_cond_wait(&t->cv, &t->mu);
        pthread_mutex_unlock(&t->mu);
        rc = complete(t, db, job);
        break;
    case MODE_SLOW:
        deadline = mono_ms() + 300;
        while (mono_ms() < deadline && !atomic_load(stop))
            sleep_ms(5);
        rc = atomic_load(stop) ? EV_ESHUTDOWN : complete(t, db, job);
        break;
    case MODE_KILL_SELF_ONCE: {
        bool kill_now;

        pthread_mutex_lock(&t->mu);
        kill_now = !t->killed;
        t->killed = true;
        pthread_mutex_unlock(&t->mu);
        if (kill_now) {
            /* The database goes away under the worker's feet. */
            rc = ev_db_exec(db, NULL, "SELECT pg_terminate_backend(pg_backend_pid())", 0, NULL);
            CU_ASSERT_EQUAL(rc, EV_EDBCONN);
            rc = EV_EDBCONN;
        } else {
            rc = complete(t, db, job);
        }
        break;
    }
    case MODE_REQUEUE_ONCE:
        if (job->attempt == 1)
            rc = ev_queue_requeue(db, job, 5, 50, 100, "provider trouble (test)", NULL);
        else
            rc = complete(t, db, job);
        break;
    case MODE_HOLD:
        deadline = mono_ms() + t->hold_ms;
        while (mono_ms() < deadline && !atomic_load(stop))
            sleep_ms(10);
        if (atomic_load(stop)) {
            pthread_mutex_lock(&t->mu);
            t->saw_stop++;
            pthread_cond_broadcast(&t->cv);
            pthread_mutex_unlock(&t->mu);
            rc = EV_ESHUTDOWN;
        } else {
            rc = complete(t, db, job);
            pthread_mutex_lock(&t->mu);
            t->hold_rc = rc;
            pthread_mutex_unlock(&t->mu);
        }
        break;
    case MODE_ROGUE:
        rc = EV_ESHUTDOWN;
        break;
    case MODE_DB_ERROR:
        rc = EV_EDB;
        break;
    }

    pthread_mutex_lock(&t->mu);
    t->cur_busy--;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

static void cb_done(const ev_job_t *job, int rc, void *ctx)
{
    tctx_t *t = ctx;

    (void)job;
    pthread_mutex_lock(&t->mu);
    t->done_calls++;
    t->last_rc = rc;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void cb_drained(void *ctx)
{
    tctx_t *t = ctx;

    pthread_mutex_lock(&t->mu);
    t->drained_calls++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static ev_pool_callbacks_t callbacks(tctx_t *t)
{
    ev_pool_callbacks_t cb = {cb_init, cb_process, cb_fini, cb_done, cb_drained, t};

    return cb;
}

static ev_pool_options_t options(const char *url, int workers)
{
    ev_pool_options_t o = EV_POOL_OPTIONS_INIT;

    o.database_url = url;
    o.max_workers = workers;
    o.worker_stagger_ms = 0;
    o.poll_interval_ms = 200;
    o.heartbeat_ms = 200;
    o.reconnect_base_ms = 20;
    o.reconnect_max_ms = 200;
    o.grace_ms = 5000;
    return o;
}

/* Creates a database with one event (id 1) and n pending submissions. */
static char *make_db(int n)
{
    char *url = NULL;
    char sql[256];

    if (ev_pgtest_create_db(&url) != 0) {
        CU_FAIL("cannot create a test database (is DATABASE_URL set?)");
        return NULL;
    }
    CU_ASSERT_EQUAL(ev_pgtest_exec(url, "INSERT INTO events (id, name, theme) "
                                        "VALUES (1, 'pool test', 'anything')"),
                    0);
    if (n > 0) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO submissions (event_id, title) "
                 "SELECT 1, 'submission ' || g FROM generate_series(1, %d) g",
                 n);
        CU_ASSERT_EQUAL(ev_pgtest_exec(url, sql), 0);
    }
    return url;
}

/* ---- tests -------------------------------------------------------------- */

/* 6 workers, 500 submissions: each processed exactly once, all validated,
 * never more than 6 at a time, exactly 6 worker threads. */
static void test_each_processed_exactly_once(void)
{
    enum { N = 500, W = 6 };
    char *url = make_db(N);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, W);
    ev_pool_callbacks_t cb;
    int64_t min_id, max_id;

    if (!url)
        return;
    tctx_init(&t, MODE_COMPLETE);
    cb = callbacks(&t);
    o.drain = true;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_EQUAL(ev_pool_configured(pool), W);
    CU_ASSERT_TRUE(ev_pool_wait_drained(pool, BOUND_MS * 3));
    ev_pool_stop(pool);

    min_id = sql_i64(url, "SELECT min(id) FROM submissions");
    max_id = sql_i64(url, "SELECT max(id) FROM submissions");
    CU_ASSERT_TRUE_FATAL(min_id >= 1 && max_id < MAX_IDS);
    for (int64_t id = min_id; id <= max_id; id++)
        CU_ASSERT_EQUAL(t.counts[id], 1);
    CU_ASSERT_EQUAL(t.started, N);
    CU_ASSERT_EQUAL(t.completed, N);
    CU_ASSERT_EQUAL(ev_pool_processed(pool), N);
    CU_ASSERT_EQUAL(t.done_calls, N);
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT count(*) FROM submissions WHERE status = 'validated' "
                                 "AND attempts = 1"),
                    N);
    CU_ASSERT_EQUAL(t.inits, W);
    CU_ASSERT_EQUAL(t.finis, W);
    CU_ASSERT_TRUE(t.max_busy >= 1 && t.max_busy <= W);
    CU_ASSERT_TRUE(t.names_ok);
    CU_ASSERT_TRUE(t.signals_blocked);
    CU_ASSERT_EQUAL(t.drained_calls, 1);
    for (int i = 0; i < W; i++)
        CU_ASSERT_TRUE(t.index_seen[i]);
    ev_pool_free(pool);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* With 3 workers and jobs that block, exactly 3 are in flight (no more, no
 * fewer), as seen by the callbacks, ev_pool_busy and the database. */
static void test_exactly_max_workers_busy(void)
{
    enum { W = 3 };
    char *url = make_db(10);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, W);
    ev_pool_callbacks_t cb;

    if (!url)
        return;
    tctx_init(&t, MODE_GATE);
    cb = callbacks(&t);
    o.drain = true;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(wait_for(&t, busy_at_least, W, BOUND_MS));
    CU_ASSERT_EQUAL(ev_pool_busy(pool), W);
    CU_ASSERT_TRUE(
        wait_sql(url, "SELECT count(*) FROM submissions WHERE status = 'processing'", W, BOUND_MS));
    pthread_mutex_lock(&t.mu);
    t.gate_open = true;
    pthread_cond_broadcast(&t.cv);
    pthread_mutex_unlock(&t.mu);
    CU_ASSERT_TRUE(ev_pool_wait_drained(pool, BOUND_MS));
    CU_ASSERT_EQUAL(t.max_busy, W);
    CU_ASSERT_EQUAL(ev_pool_busy(pool), 0);
    CU_ASSERT_EQUAL(t.completed, 10);
    ev_pool_free(pool);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* A row inserted with plain SQL while the pool idles is picked up through
 * LISTEN/NOTIFY, long before the (30 s) fallback poll would find it. */
static void test_plain_sql_insert_is_picked_up(void)
{
    char *url = make_db(0);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, 2);
    ev_pool_callbacks_t cb;

    if (!url)
        return;
    tctx_init(&t, MODE_COMPLETE);
    cb = callbacks(&t);
    o.poll_interval_ms = 30000;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_EQUAL(ev_pgtest_exec(url, "INSERT INTO submissions (event_id, title) "
                                        "VALUES (1, 'first')"),
                    0);
    CU_ASSERT_TRUE(
        wait_sql(url, "SELECT count(*) FROM submissions WHERE status = 'validated'", 1, 10000));
    /* The worker that took the first row is now idle, waiting on LISTEN. */
    CU_ASSERT_EQUAL(ev_pgtest_exec(url, "INSERT INTO submissions (event_id, title, priority) "
                                        "VALUES (1, 'second', 3)"),
                    0);
    CU_ASSERT_TRUE(
        wait_sql(url, "SELECT count(*) FROM submissions WHERE status = 'validated'", 2, 10000));
    ev_pool_free(pool);
    CU_ASSERT_EQUAL(t.completed, 2);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* Drain mode returns at once on an empty queue, and waits for requeued work
 * (pending with a future run_after) instead of leaving early. */
static void test_drain(void)
{
    char *url = make_db(0);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, 3);
    ev_pool_callbacks_t cb;

    if (!url)
        return;
    tctx_init(&t, MODE_REQUEUE_ONCE);
    cb = callbacks(&t);
    o.drain = true;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(ev_pool_wait_drained(pool, BOUND_MS));
    CU_ASSERT_TRUE(ev_pool_drained(pool));
    ev_pool_free(pool);
    CU_ASSERT_EQUAL(t.started, 0);
    CU_ASSERT_EQUAL(t.drained_calls, 1);

    CU_ASSERT_EQUAL(ev_pgtest_exec(url, "INSERT INTO submissions (event_id, title) "
                                        "SELECT 1, 'r' || g FROM generate_series(1, 20) g"),
                    0);
    pool = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(ev_pool_wait_drained(pool, BOUND_MS));
    ev_pool_free(pool);
    /* Every row went through a requeue and a second attempt before the pool
     * declared the queue drained. */
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT count(*) FROM submissions WHERE status = 'validated' "
                                 "AND attempts = 2"),
                    20);
    CU_ASSERT_EQUAL(t.completed, 20);
    CU_ASSERT_EQUAL(t.started, 40);
    CU_ASSERT_EQUAL(t.drained_calls, 2);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* Stop while a job blocks: after the grace period its `stop` flag is set,
 * processing returns EV_ESHUTDOWN and the job is released unspent. */
static void test_stop_releases_in_flight_job(void)
{
    char *url = make_db(1);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, 2);
    ev_pool_callbacks_t cb;

    if (!url)
        return;
    tctx_init(&t, MODE_BLOCK);
    cb = callbacks(&t);
    o.grace_ms = 200;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(wait_for(&t, started_at_least, 1, BOUND_MS));
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT attempts FROM submissions"), 1);
    ev_pool_stop(pool);
    CU_ASSERT_EQUAL(t.saw_stop, 1);
    CU_ASSERT_EQUAL(t.last_rc, EV_ESHUTDOWN);
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT count(*) FROM submissions WHERE status = 'pending' "
                                 "AND attempts = 0 AND lease_owner IS NULL"),
                    1);
    CU_ASSERT_EQUAL(ev_pool_processed(pool), 0);
    CU_ASSERT_EQUAL(t.finis, 2);
    ev_pool_free(pool);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* Stop while a short job runs: the grace period lets it finish normally. */
static void test_stop_lets_job_finish_within_grace(void)
{
    char *url = make_db(1);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, 2);
    ev_pool_callbacks_t cb;

    if (!url)
        return;
    tctx_init(&t, MODE_SLOW);
    cb = callbacks(&t);
    o.grace_ms = 30000;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(wait_for(&t, started_at_least, 1, BOUND_MS));
    ev_pool_stop(pool);
    CU_ASSERT_EQUAL(t.completed, 1);
    CU_ASSERT_EQUAL(t.last_rc, 0);
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT count(*) FROM submissions WHERE status = 'validated'"), 1);
    ev_pool_free(pool);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* Processing loses its connection (EV_EDBCONN): the worker reconnects,
 * releases the job without spending the attempt, and processes it again. */
static void test_processing_db_loss_reconnects_and_releases(void)
{
    char *url = make_db(1);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, 1);
    ev_pool_callbacks_t cb;

    if (!url)
        return;
    tctx_init(&t, MODE_KILL_SELF_ONCE);
    cb = callbacks(&t);
    o.drain = true;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(ev_pool_wait_drained(pool, BOUND_MS));
    ev_pool_free(pool);
    CU_ASSERT_EQUAL(t.started, 2);
    CU_ASSERT_EQUAL(t.completed, 1);
    /* The lost attempt was given back: the row shows one attempt only. */
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT count(*) FROM submissions WHERE status = 'validated' "
                                 "AND attempts = 1"),
                    1);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* Every backend of the pool is terminated while it idles: workers and the
 * heartbeat reconnect, and new rows are still processed. */
static void test_killed_connections_reconnect(void)
{
    char *url = make_db(0);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, 2);
    ev_pool_callbacks_t cb;
    const char *pool_backends = "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                "current_database() AND application_name = 'event-validator' "
                                "AND pid <> pg_backend_pid()";

    if (!url)
        return;
    tctx_init(&t, MODE_COMPLETE);
    cb = callbacks(&t);
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    /* 2 workers + the heartbeat thread. */
    CU_ASSERT_TRUE(wait_sql(url, pool_backends, 3, BOUND_MS));
    CU_ASSERT_EQUAL(ev_pgtest_exec(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE datname = current_database() "
                                        "AND pid <> pg_backend_pid()"),
                    0);
    CU_ASSERT_EQUAL(ev_pgtest_exec(url, "INSERT INTO submissions (event_id, title) "
                                        "SELECT 1, 'k' || g FROM generate_series(1, 10) g"),
                    0);
    CU_ASSERT_TRUE(
        wait_sql(url, "SELECT count(*) FROM submissions WHERE status = 'validated'", 10, BOUND_MS));
    CU_ASSERT_TRUE(wait_sql(url, pool_backends, 3, BOUND_MS));
    ev_pool_free(pool);
    CU_ASSERT_EQUAL(t.completed, 10);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* A job held longer than lease_seconds is kept alive by the heartbeat: it is
 * not rescued, and completing it still succeeds. */
static void test_heartbeat_keeps_lease(void)
{
    char *url = make_db(1);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, 1);
    ev_pool_callbacks_t cb;

    if (!url)
        return;
    tctx_init(&t, MODE_HOLD);
    t.hold_ms = 2500;
    cb = callbacks(&t);
    o.lease_seconds = 1;
    o.drain = true;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(ev_pool_wait_drained(pool, BOUND_MS));
    ev_pool_free(pool);
    CU_ASSERT_EQUAL(t.started, 1);
    CU_ASSERT_EQUAL(t.hold_rc, 0);
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT count(*) FROM submissions WHERE status = 'validated' "
                                 "AND attempts = 1 AND lease_expiries = 0"),
                    1);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* The lease is taken away (another owner): the heartbeat notices and raises
 * the worker's `stop` flag; the pool's release then changes nothing. */
static void test_lost_lease_stops_worker(void)
{
    char *url = make_db(1);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, 1);
    ev_pool_callbacks_t cb;

    if (!url)
        return;
    tctx_init(&t, MODE_HOLD);
    t.hold_ms = BOUND_MS * 2;
    cb = callbacks(&t);
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(wait_for(&t, started_at_least, 1, BOUND_MS));
    CU_ASSERT_EQUAL(ev_pgtest_exec(url, "UPDATE submissions SET lease_owner = 'elsewhere:1:1'"), 0);
    CU_ASSERT_TRUE(wait_for(&t, saw_stop_at_least, 1, BOUND_MS));
    ev_pool_free(pool);
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT count(*) FROM submissions WHERE status = 'processing' "
                                 "AND lease_owner = 'elsewhere:1:1' AND attempts = 1"),
                    1);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* A processing function that returns EV_ESHUTDOWN unprompted must not make
 * the pool release and re-claim the job forever: the attempt is spent. */
static void test_rogue_shutdown_spends_attempt(void)
{
    char *url = make_db(1);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, 1);
    ev_pool_callbacks_t cb;

    if (!url)
        return;
    tctx_init(&t, MODE_ROGUE);
    cb = callbacks(&t);
    o.max_attempts = 1;
    o.drain = true;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(ev_pool_wait_drained(pool, BOUND_MS));
    ev_pool_free(pool);
    CU_ASSERT_EQUAL(t.started, 1);
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT count(*) FROM submissions WHERE status = 'needs_review' "
                                 "AND attempts = 1 AND last_error IS NOT NULL"),
                    1);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* A database error that is not a lost connection (EV_EDB) would fail the
 * same way if retried at once: the job is requeued with backoff and its
 * attempt spent, so it ends in needs_review instead of looping forever. */
static void test_db_error_spends_attempt(void)
{
    char *url = make_db(1);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, 1);
    ev_pool_callbacks_t cb;

    if (!url)
        return;
    tctx_init(&t, MODE_DB_ERROR);
    cb = callbacks(&t);
    o.max_attempts = 2;
    o.requeue_base_ms = 10;
    o.requeue_max_ms = 20;
    o.drain = true;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(ev_pool_wait_drained(pool, BOUND_MS));
    ev_pool_free(pool);
    CU_ASSERT_EQUAL(t.started, 2);
    CU_ASSERT_EQUAL(sql_i64(url, "SELECT count(*) FROM submissions WHERE status = 'needs_review' "
                                 "AND attempts = 2 AND last_error IS NOT NULL"),
                    1);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* Worker i starts no earlier than i * worker_stagger_ms after start, and a
 * stop during the stagger wait does not wait for it. */
static void test_stagger(void)
{
    char *url = make_db(0);
    tctx_t t;
    ev_pool_t *pool = NULL;
    ev_pool_options_t o = options(url, 3);
    ev_pool_callbacks_t cb;
    int64_t start;

    if (!url)
        return;
    tctx_init(&t, MODE_COMPLETE);
    cb = callbacks(&t);
    o.worker_stagger_ms = 150;
    start = mono_ms();
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(wait_for(&t, inits_at_least, 3, BOUND_MS));
    for (int i = 0; i < 3; i++)
        CU_ASSERT_TRUE(t.init_ms[i] - start >= (int64_t)i * 150);
    ev_pool_free(pool);

    /* A stagger of an hour: stop returns without waiting for it. */
    tctx_destroy(&t);
    tctx_init(&t, MODE_COMPLETE);
    cb = callbacks(&t);
    o.worker_stagger_ms = 3600 * 1000;
    pool = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(wait_for(&t, inits_at_least, 1, BOUND_MS));
    ev_pool_free(pool);
    CU_ASSERT_EQUAL(t.inits, 1);
    CU_ASSERT_EQUAL(t.finis, 1);
    tctx_destroy(&t);
    ev_pgtest_drop_db(url);
}

/* Bad options are refused; a database that is down at start is retried in
 * the background and does not block stop. */
static void test_options_and_unreachable_db(void)
{
    tctx_t t;
    ev_pool_t *pool = (ev_pool_t *)&t;
    ev_pool_options_t o = options("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", 2);
    ev_pool_callbacks_t cb;
    char owner[96];

    tctx_init(&t, MODE_COMPLETE);
    cb = callbacks(&t);
    o.max_workers = 0;
    CU_ASSERT_EQUAL(ev_pool_start(&pool, &o, &cb), EV_EINVAL);
    CU_ASSERT_PTR_NULL(pool);
    o.max_workers = 2;
    cb.process = NULL;
    CU_ASSERT_EQUAL(ev_pool_start(&pool, &o, &cb), EV_EINVAL);
    cb.process = cb_process;

    CU_ASSERT_EQUAL_FATAL(ev_pool_start(&pool, &o, &cb), 0);
    CU_ASSERT_TRUE(wait_for(&t, inits_at_least, 2, BOUND_MS));
    CU_ASSERT_EQUAL(ev_pool_busy(pool), 0);
    CU_ASSERT_PTR_NOT_NULL(strchr(ev_pool_owner(pool), ':'));
    ev_pool_free(pool);
    CU_ASSERT_EQUAL(t.started, 0);
    CU_ASSERT_EQUAL(t.finis, 2);

    ev_pool_make_owner(owner, sizeof(owner));
    CU_ASSERT_TRUE(strlen(owner) > 0 && strlen(owner) < sizeof(((ev_job_t *)0)->lease_owner));
    tctx_destroy(&t);
}

static const ev_test_t pool_tests[] = {
    {"each submission processed exactly once", test_each_processed_exactly_once},
    {"exactly max_workers busy", test_exactly_max_workers_busy},
    {"plain SQL insert picked up", test_plain_sql_insert_is_picked_up},
    {"drain", test_drain},
    {"stop releases in-flight job", test_stop_releases_in_flight_job},
    {"stop lets job finish within grace", test_stop_lets_job_finish_within_grace},
    {"EV_EDBCONN: reconnect and release", test_processing_db_loss_reconnects_and_releases},
    {"killed connections reconnect", test_killed_connections_reconnect},
    {"heartbeat keeps lease", test_heartbeat_keeps_lease},
    {"lost lease stops worker", test_lost_lease_stops_worker},
    {"rogue EV_ESHUTDOWN spends the attempt", test_rogue_shutdown_spends_attempt},
    {"EV_EDB: requeued, attempt spent", test_db_error_spends_attempt},
    {"stagger", test_stagger},
    {"options and unreachable db", test_options_and_unreachable_db},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"pool", NULL, NULL, pool_tests, NULL, NULL},
    EV_SUITE_END,
};

int main(int argc, char **argv)
{
    /* Keep the pool's own log lines out of the test report. */
    ev_log_set_level(EV_LOG_ERROR);
    return ev_test_run(argc, argv, suites);
}
