/*
 * test_cluster.c - two coordinators (two "replicas") in one process on one
 * real Postgres: the concurrency cap holds across them under contention, a
 * dead coordination session gives its slots back, a breaker opened by one is
 * honoured by the other with one probe for both, a disable reaches the
 * other, and a replica whose session is cut runs on its share and is charged
 * for it when the session returns.
 *
 * Waits are on conditions with generous bounds; nothing asserts elapsed time.
 */
#include "ev/cluster.h"
#include "ev/error.h"
#include "ev/util.h"
#include "pgtest.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "runner.h"

static char *url;

typedef struct replica {
    ev_cluster_t *c;
    ev_limiter_t *limiter;
    ev_semaphore_t *sem;
    ev_breaker_t *breaker;
    atomic_bool disabled;
} replica_t;

static void on_disable(void *ctx, const char *reason)
{
    (void)reason;
    atomic_store(&((replica_t *)ctx)->disabled, true);
}

/* A replica with `cap` slots and `rpm` calls per minute for provider p. */
static void replica_up(replica_t *r, const char *id, ev_provider_id_t p, int cap, double rpm)
{
    memset(r, 0, sizeof(*r));
    atomic_init(&r->disabled, false);
    ev_cluster_options_t o = EV_CLUSTER_OPTIONS_INIT;
    o.database_url = url;
    o.replica_id = id;
    o.heartbeat_ms = 100;
    o.expire_s = 5;
    o.slot_poll_ms = 2;
    char err[256] = "";
    CU_ASSERT_EQUAL_FATAL(ev_cluster_new(&r->c, &o, err, sizeof(err)), 0);
    ev_limiter_options_t lo = EV_LIMITER_OPTIONS_INIT;
    lo.rpm = rpm;
    lo.safety_factor = 1;
    lo.jitter_enabled = false;
    CU_ASSERT_EQUAL_FATAL(ev_limiter_new(&r->limiter, &lo, ev_clock_system()), 0);
    CU_ASSERT_EQUAL_FATAL(ev_semaphore_new(&r->sem, cap, ev_clock_system()), 0);
    ev_breaker_options_t bo = EV_BREAKER_OPTIONS_INIT;
    bo.threshold = 0.5;
    bo.min_calls = 2;
    bo.cooldown_s = 1;
    CU_ASSERT_EQUAL_FATAL(ev_breaker_new(&r->breaker, &bo, ev_clock_system()), 0);
    ev_cluster_provider_t cp = {.limiter = r->limiter,
                                .sem = r->sem,
                                .breaker = r->breaker,
                                .ceiling_per_min = rpm,
                                .burst = 1,
                                .rpd_limit = 0,
                                .max_concurrent = cap,
                                .probe_timeout_s = 30,
                                .disable = on_disable,
                                .ctx = r};
    CU_ASSERT_EQUAL_FATAL(ev_cluster_attach(r->c, p, &cp), 0);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_start(r->c), 0);
}

static void replica_down(replica_t *r)
{
    ev_cluster_free(r->c);
    ev_limiter_free(r->limiter);
    ev_semaphore_free(r->sem);
    ev_breaker_free(r->breaker);
}

/* Polls cond(arg) every 10 ms for up to 20 s. */
static bool eventually(bool (*cond)(void *), void *arg)
{
    for (int i = 0; i < 2000; i++) {
        if (cond(arg))
            return true;
        usleep(10000);
    }
    return false;
}

static void reset_rows(void)
{
    CU_ASSERT_FATAL(ev_pgtest_exec(url, "UPDATE ev_provider_state SET breaker = 'closed',"
                                        " open_until = '-infinity', probe_owner = NULL,"
                                        " probe_until = '-infinity', disabled = false,"
                                        " generation = generation + 1;"
                                        "UPDATE ev_provider_rate SET tat = '-infinity',"
                                        " pause_until = '-infinity', granted = 0") == 0);
}

/* ---- concurrency ---- */

typedef struct {
    replica_t *r;
    atomic_int *holding, *max_holding, *done;
} worker_t;

static void *slot_worker(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < 40; i++) {
        if (ev_semaphore_acquire(w->r->sem, -1, NULL) != 0)
            continue;
        int now = atomic_fetch_add(w->holding, 1) + 1;
        int seen = atomic_load(w->max_holding);
        while (now > seen && !atomic_compare_exchange_weak(w->max_holding, &seen, now))
            ;
        usleep(300);
        atomic_fetch_sub(w->holding, 1);
        ev_semaphore_release(w->r->sem);
        atomic_fetch_add(w->done, 1);
    }
    return NULL;
}

/* 3 threads in each of two replicas, cap 2 configured in each: never more
 * than 2 in flight across both. */
static void test_cap_holds_across_replicas(void)
{
    replica_t a, b;
    reset_rows();
    replica_up(&a, "A", EV_PROVIDER_GROQ, 2, 0);
    replica_up(&b, "B", EV_PROVIDER_GROQ, 2, 0);
    atomic_int holding = 0, max_holding = 0, done = 0;
    pthread_t th[6];
    worker_t w[6];
    for (int i = 0; i < 6; i++) {
        w[i] = (worker_t){i % 2 ? &a : &b, &holding, &max_holding, &done};
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, slot_worker, &w[i]) == 0);
    }
    for (int i = 0; i < 6; i++)
        pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(atomic_load(&done), 6 * 40);
    CU_ASSERT(atomic_load(&max_holding) <= 2);
    CU_ASSERT(atomic_load(&max_holding) >= 1);
    replica_down(&a);
    replica_down(&b);
}

static bool b_acquires(void *arg)
{
    replica_t *b = arg;
    return ev_semaphore_acquire(b->sem, ev_clock_now_us(ev_clock_system()) + 20000, NULL) == 0;
}

/* A replica whose session dies (as after kill -9) while holding both slots
 * gives them back at once: Postgres drops the session and its locks. */
static void test_dead_session_returns_slots(void)
{
    replica_t a, b;
    reset_rows();
    replica_up(&a, "A", EV_PROVIDER_GROQ, 2, 0);
    replica_up(&b, "B", EV_PROVIDER_GROQ, 2, 0);
    CU_ASSERT_EQUAL(ev_semaphore_acquire(a.sem, -1, NULL), 0);
    CU_ASSERT_EQUAL(ev_semaphore_acquire(a.sem, -1, NULL), 0);
    int64_t now = ev_clock_now_us(ev_clock_system());
    CU_ASSERT_EQUAL(ev_semaphore_acquire(b.sem, now + 50000, NULL), EV_ETIMEOUT);
    CU_ASSERT_FATAL(ev_pgtest_exec(url, "SELECT pg_terminate_backend(coord_pid)"
                                        " FROM ev_cluster_replicas WHERE id = 'A'") == 0);
    CU_ASSERT_TRUE(eventually(b_acquires, &b));
    ev_semaphore_release(b.sem);
    ev_semaphore_release(a.sem);
    ev_semaphore_release(a.sem);
    replica_down(&a);
    replica_down(&b);
}

static int64_t advisory_locks(void)
{
    int64_t n = -1;
    CU_ASSERT_EQUAL(ev_pgtest_query_i64(url,
                                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                        " AND objid < 64 AND classid = ev_slot_class('groq')",
                                        &n),
                    0);
    return n;
}

static bool no_advisory_locks(void *arg)
{
    (void)arg;
    return advisory_locks() == 0;
}

/* Alone in the cluster a replica keeps its slot lock for the next call (no
 * round trip); once another replica is alive it gives it back, so the cap
 * stays shared. */
static void test_alone_keeps_then_shares(void)
{
    replica_t a, b;
    reset_rows();
    replica_up(&a, "A", EV_PROVIDER_GROQ, 1, 0);
    CU_ASSERT_EQUAL(ev_semaphore_acquire(a.sem, -1, NULL), 0);
    ev_semaphore_release(a.sem);
    CU_ASSERT_EQUAL(advisory_locks(), 1);
    ev_cluster_stats_t before, after;
    ev_cluster_stats(a.c, &before);
    CU_ASSERT_EQUAL(ev_semaphore_acquire(a.sem, -1, NULL), 0);
    ev_semaphore_release(a.sem);
    ev_cluster_stats(a.c, &after);
    /* Reused: no lock was asked of the database for the second call. */
    CU_ASSERT_EQUAL(after.slot_acquisitions, before.slot_acquisitions);
    replica_up(&b, "B", EV_PROVIDER_GROQ, 1, 0);
    CU_ASSERT_TRUE(eventually(no_advisory_locks, NULL));
    CU_ASSERT_EQUAL(ev_semaphore_acquire(b.sem, -1, NULL), 0);
    ev_semaphore_release(b.sem);
    replica_down(&a);
    replica_down(&b);
}

/* ---- breaker ---- */

static bool is_open(void *arg)
{
    return ev_breaker_state(arg) == EV_BREAKER_OPEN;
}

static bool is_closed(void *arg)
{
    return ev_breaker_state(arg) == EV_BREAKER_CLOSED;
}

typedef struct {
    replica_t *r[2];
    int admitted;
    ev_breaker_ticket_t ticket;
    int who;
} probe_race_t;

/* Both replicas ask; true once either got the probe. */
static bool someone_probes(void *arg)
{
    probe_race_t *pr = arg;
    for (int i = 0; i < 2; i++) {
        ev_breaker_ticket_t t;
        if (ev_breaker_allow(pr->r[i]->breaker, &t, NULL) == 0) {
            pr->admitted++;
            pr->ticket = t;
            pr->who = i;
        }
    }
    return pr->admitted > 0;
}

static void test_breaker_shared_one_probe(void)
{
    replica_t a, b;
    reset_rows();
    replica_up(&a, "A", EV_PROVIDER_GEMINI, 2, 0);
    replica_up(&b, "B", EV_PROVIDER_GEMINI, 2, 0);
    /* A alone sees the failures. */
    for (int i = 0; i < 2; i++) {
        ev_breaker_ticket_t t;
        CU_ASSERT_EQUAL(ev_breaker_allow(a.breaker, &t, NULL), 0);
        ev_breaker_record(a.breaker, &t, EV_BREAKER_FAILURE, NULL);
    }
    CU_ASSERT_EQUAL(ev_breaker_state(a.breaker), EV_BREAKER_OPEN);
    CU_ASSERT_TRUE(eventually(is_open, b.breaker));
    /* After the cooldown, exactly one probe for the two of them. */
    probe_race_t pr = {.r = {&a, &b}};
    CU_ASSERT_TRUE_FATAL(eventually(someone_probes, &pr));
    CU_ASSERT_EQUAL(pr.admitted, 1);
    for (int k = 0; k < 5; k++) {
        ev_breaker_ticket_t t;
        CU_ASSERT_EQUAL(ev_breaker_allow(a.breaker, &t, NULL) == 0 && pr.who != 0, false);
        CU_ASSERT_EQUAL(ev_breaker_allow(b.breaker, &t, NULL) == 0 && pr.who != 1, false);
    }
    /* The probe succeeds: both close. */
    ev_breaker_record(pr.r[pr.who]->breaker, &pr.ticket, EV_BREAKER_SUCCESS, NULL);
    CU_ASSERT_TRUE(eventually(is_closed, a.breaker));
    CU_ASSERT_TRUE(eventually(is_closed, b.breaker));
    replica_down(&a);
    replica_down(&b);
}

static bool is_disabled(void *arg)
{
    return atomic_load(&((replica_t *)arg)->disabled);
}

static void test_disable_reaches_other(void)
{
    replica_t a, b;
    reset_rows();
    replica_up(&a, "A", EV_PROVIDER_GROQ, 1, 0);
    replica_up(&b, "B", EV_PROVIDER_GROQ, 1, 0);
    ev_cluster_report_disabled(a.c, EV_PROVIDER_GROQ, "HTTP 401: invalid key");
    CU_ASSERT_TRUE(eventually(is_disabled, &b));
    replica_down(&a);
    replica_down(&b);
}

/* ---- database trouble ---- */

static bool coordinated(void *arg)
{
    ev_cluster_stats_t cs;
    ev_cluster_stats(arg, &cs);
    return cs.coordinated;
}

static void test_cut_session_runs_on_share(void)
{
    replica_t a, b;
    reset_rows();
    replica_up(&a, "A", EV_PROVIDER_GEMINI, 2, 60);
    replica_up(&b, "B", EV_PROVIDER_GEMINI, 2, 60);
    CU_ASSERT_EQUAL(ev_limiter_acquire(a.limiter, NULL, 0, NULL), 0);
    CU_ASSERT_FATAL(ev_pgtest_exec(url, "SELECT pg_terminate_backend(coord_pid)"
                                        " FROM ev_cluster_replicas WHERE id = 'A'") == 0);
    /* The grid's next slot is a second away, and this replica's share of it
     * is one call every two seconds: a call is still granted now (the
     * share's own grid is idle), never the whole rate. */
    int64_t waited = 0;
    CU_ASSERT_EQUAL(ev_limiter_acquire(a.limiter, &waited, -1, NULL), 0);
    ev_cluster_stats_t cs;
    ev_cluster_stats(a.c, &cs);
    CU_ASSERT_EQUAL(cs.fallback_grants, 1);
    CU_ASSERT_TRUE(eventually(coordinated, a.c));
    CU_ASSERT_STRING_EQUAL(ev_cluster_scope(a.c, EV_PROVIDER_GEMINI), "cluster");
    /* Back on the grid, the share's call is charged with the next one. */
    CU_ASSERT_EQUAL(ev_limiter_acquire(a.limiter, NULL, -1, NULL), 0);
    int64_t granted = 0;
    CU_ASSERT_EQUAL(
        ev_pgtest_query_i64(url, "SELECT granted FROM ev_provider_rate WHERE provider = 'gemini'",
                            &granted),
        0);
    CU_ASSERT_EQUAL(granted, 3);
    replica_down(&a);
    replica_down(&b);
}

static void test_registry(void)
{
    replica_t a, b;
    reset_rows();
    replica_up(&a, "A", EV_PROVIDER_GROQ, 1, 0);
    replica_up(&b, "B", EV_PROVIDER_GROQ, 1, 0);
    int64_t n = 0;
    CU_ASSERT_EQUAL(ev_pgtest_query_i64(url, "SELECT count(*) FROM ev_cluster_replicas", &n), 0);
    CU_ASSERT_EQUAL(n, 2);
    ev_cluster_stats_t cs;
    ev_cluster_stats(b.c, &cs);
    CU_ASSERT_EQUAL(cs.replicas_alive, 2);
    replica_down(&a);
    CU_ASSERT_EQUAL(ev_pgtest_query_i64(url, "SELECT count(*) FROM ev_cluster_replicas", &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    replica_down(&b);
}

static int suite_init(void)
{
    return ev_pgtest_create_db(&url) != 0;
}

static int suite_clean(void)
{
    ev_pgtest_drop_db(url);
    return 0;
}

static const ev_test_t cluster_tests[] = {
    {"registry: join, count, leave", test_registry},
    {"cap holds across replicas under contention", test_cap_holds_across_replicas},
    {"a dead session returns its slots", test_dead_session_returns_slots},
    {"alone: keeps its slot, gives it back when another joins", test_alone_keeps_then_shares},
    {"breaker shared, one probe for the cluster", test_breaker_shared_one_probe},
    {"disable reaches the other replica", test_disable_reaches_other},
    {"cut session: share, then charged on return", test_cut_session_runs_on_share},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"cluster", suite_init, suite_clean, cluster_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
