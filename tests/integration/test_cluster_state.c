/*
 * test_cluster_state.c - the shared provider state and the SQL rate grid
 * (migrations/0002_cluster.sql, src/cluster_state.c) on a real Postgres.
 *
 * The property tests hammer ev_rate_reserve() and the advisory-lock slots
 * from many threads, each with its own connection, and check what a
 * provider would notice: slots on the database clock never closer than the
 * interval, never inside a pause, each slot handed out once, the daily cap
 * exact, and never more concurrency slots held than the cap. They assert on
 * the database's slot times, never on elapsed wall time.
 */
#include "ev/cluster_state.h"
#include "ev/error.h"
#include "ev/util.h"
#include "pgtest.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

static char *url;
static ev_db_t *db;

static void sql(const char *script)
{
    CU_ASSERT_FATAL(ev_pgtest_exec(url, script) == 0);
}

static void fresh(void)
{
    sql("UPDATE ev_provider_state SET breaker = 'closed', breaker_reason = NULL,"
        " open_until = '-infinity', probe_owner = NULL, probe_until = '-infinity',"
        " pause_until = '-infinity', pause_reason = NULL, disabled = false,"
        " disabled_reason = NULL;"
        "UPDATE ev_provider_rate SET ceiling_per_min = 0, rate_per_min = 0, burst = 1,"
        " tat = '-infinity', pause_until = '-infinity', rpd_limit = 0, day = NULL,"
        " day_count = 0, granted = 0");
}

static void test_defaults_and_read(void)
{
    fresh();
    ev_cluster_provider_state_t st;
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GEMINI, &st), 0);
    CU_ASSERT_EQUAL(st.breaker, EV_BREAKER_CLOSED);
    CU_ASSERT_FALSE(st.disabled);
    CU_ASSERT_EQUAL(st.pause_remaining_s, 0);
    CU_ASSERT_EQUAL(st.rate_per_min, 0);
    CU_ASSERT_EQUAL(ev_cluster_state_read(db, (ev_provider_id_t)7, &st), EV_EINVAL);
}

static void test_pause_and_resume(void)
{
    fresh();
    ev_cluster_provider_state_t st;
    CU_ASSERT_EQUAL(ev_cluster_state_pause(db, EV_PROVIDER_GROQ, 30, "operator pause", "op"), 0);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GROQ, &st), 0);
    CU_ASSERT(st.pause_remaining_s > 20 && st.pause_remaining_s <= 30);
    CU_ASSERT_STRING_EQUAL(st.pause_reason, "operator pause");
    CU_ASSERT_STRING_EQUAL(st.updated_by, "op");
    /* A shorter pause never shortens a longer one. */
    CU_ASSERT_EQUAL(ev_cluster_state_pause(db, EV_PROVIDER_GROQ, 1, "429", "r1"), 0);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GROQ, &st), 0);
    CU_ASSERT(st.pause_remaining_s > 20);
    /* The grid honours it: a reservation made now waits for its end. */
    int64_t wait_ms = 0;
    CU_ASSERT_EQUAL(
        ev_pgtest_db_i64(db, "SELECT (wait_s * 1000)::bigint FROM ev_rate_reserve('groq', -1)",
                         &wait_ms),
        0);
    CU_ASSERT(wait_ms > 20000);
    CU_ASSERT_EQUAL(ev_cluster_state_pause(db, EV_PROVIDER_GROQ, 0, NULL, "op"), 0);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GROQ, &st), 0);
    CU_ASSERT_EQUAL(st.pause_remaining_s, 0);
    CU_ASSERT_STRING_EQUAL(st.pause_reason, "");
    /* A resume gives the grid back at once, even after a year-long pause. */
    CU_ASSERT_EQUAL(ev_cluster_rate_configure(db, EV_PROVIDER_GROQ, 60, 1, 0), 0);
    CU_ASSERT_EQUAL(ev_cluster_state_pause(db, EV_PROVIDER_GROQ, 365 * 86400.0, "stop", "op"), 0);
    CU_ASSERT_EQUAL(ev_cluster_state_pause(db, EV_PROVIDER_GROQ, 0, NULL, "op"), 0);
    CU_ASSERT_EQUAL(
        ev_pgtest_db_i64(db, "SELECT (wait_s * 1000)::bigint FROM ev_rate_reserve('groq', -1)",
                         &wait_ms),
        0);
    CU_ASSERT(wait_ms < 1000);
}

static void test_breaker_open_one_probe_close(void)
{
    fresh();
    ev_cluster_provider_state_t st;
    bool granted = true;
    CU_ASSERT_EQUAL(ev_cluster_state_open(db, EV_PROVIDER_GEMINI, 60, "error rate", "r1"), 0);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GEMINI, &st), 0);
    CU_ASSERT_EQUAL(st.breaker, EV_BREAKER_OPEN);
    CU_ASSERT(st.open_remaining_s > 50);
    uint64_t gen = st.generation;
    /* Still open: nobody may probe. */
    CU_ASSERT_EQUAL(ev_cluster_state_claim_probe(db, EV_PROVIDER_GEMINI, "r2", 5, &granted), 0);
    CU_ASSERT_FALSE(granted);
    /* Past the opening: exactly one of many claimants gets the probe. */
    sql("UPDATE ev_provider_state SET open_until = clock_timestamp() WHERE provider = 'gemini'");
    int winners = 0;
    for (int i = 0; i < 5; i++) {
        char who[16];
        snprintf(who, sizeof(who), "r%d", i);
        CU_ASSERT_EQUAL(ev_cluster_state_claim_probe(db, EV_PROVIDER_GEMINI, who, 5, &granted), 0);
        winners += granted;
    }
    CU_ASSERT_EQUAL(winners, 1);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GEMINI, &st), 0);
    CU_ASSERT_EQUAL(st.breaker, EV_BREAKER_HALF_OPEN);
    CU_ASSERT_STRING_EQUAL(st.probe_owner, "r0");
    /* A probe that never reports is reclaimed after its timeout. */
    sql("UPDATE ev_provider_state SET probe_until = clock_timestamp() WHERE provider = 'gemini'");
    CU_ASSERT_EQUAL(ev_cluster_state_claim_probe(db, EV_PROVIDER_GEMINI, "r3", 5, &granted), 0);
    CU_ASSERT_TRUE(granted);
    CU_ASSERT_EQUAL(ev_cluster_state_close(db, EV_PROVIDER_GEMINI, "r3"), 0);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GEMINI, &st), 0);
    CU_ASSERT_EQUAL(st.breaker, EV_BREAKER_CLOSED);
    CU_ASSERT(st.generation > gen);
    CU_ASSERT_EQUAL(ev_cluster_state_claim_probe(db, EV_PROVIDER_GEMINI, "r4", 5, &granted), 0);
    CU_ASSERT_FALSE(granted);
}

static void test_disable_and_notify(void)
{
    fresh();
    ev_db_t *listener = NULL;
    CU_ASSERT_FATAL(ev_pgtest_connect(&listener, url) == 0);
    CU_ASSERT_EQUAL_FATAL(ev_db_listen(listener, EV_CLUSTER_STATE_CHANNEL), 0);
    CU_ASSERT_EQUAL(ev_cluster_state_disable(db, EV_PROVIDER_GROQ, true, "HTTP 401", "r1"), 0);
    CU_ASSERT_EQUAL(ev_db_wait_notify(listener, 10000), 1);
    ev_cluster_provider_state_t st;
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GROQ, &st), 0);
    CU_ASSERT_TRUE(st.disabled);
    CU_ASSERT_STRING_EQUAL(st.disabled_reason, "HTTP 401");
    CU_ASSERT_EQUAL(ev_cluster_state_disable(db, EV_PROVIDER_GROQ, false, NULL, "op"), 0);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GROQ, &st), 0);
    CU_ASSERT_FALSE(st.disabled);
    ev_db_free(listener);
}

static void test_rate_set_and_configure(void)
{
    fresh();
    ev_cluster_provider_state_t st;
    CU_ASSERT_EQUAL(ev_cluster_rate_configure(db, EV_PROVIDER_GEMINI, 540, 1, 1000), 0);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GEMINI, &st), 0);
    CU_ASSERT_DOUBLE_EQUAL(st.rate_per_min, 540, 1e-9);
    CU_ASSERT_EQUAL(st.rpd_limit, 1000);
    /* A learned rate stays when a replica restarts with the same ceiling... */
    CU_ASSERT_EQUAL(ev_cluster_rate_set(db, EV_PROVIDER_GEMINI, 300), 0);
    CU_ASSERT_EQUAL(ev_cluster_rate_configure(db, EV_PROVIDER_GEMINI, 540, 1, 1000), 0);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GEMINI, &st), 0);
    CU_ASSERT_DOUBLE_EQUAL(st.rate_per_min, 300, 1e-9);
    /* ...is clamped to the ceiling, and a new ceiling resets it. */
    CU_ASSERT_EQUAL(ev_cluster_rate_set(db, EV_PROVIDER_GEMINI, 9000), 0);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GEMINI, &st), 0);
    CU_ASSERT_DOUBLE_EQUAL(st.rate_per_min, 540, 1e-9);
    CU_ASSERT_EQUAL(ev_cluster_rate_set(db, EV_PROVIDER_GEMINI, 100), 0);
    CU_ASSERT_EQUAL(ev_cluster_rate_configure(db, EV_PROVIDER_GEMINI, 270, 1, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_cluster_state_read(db, EV_PROVIDER_GEMINI, &st), 0);
    CU_ASSERT_DOUBLE_EQUAL(st.rate_per_min, 270, 1e-9);
    CU_ASSERT_EQUAL(ev_cluster_rate_set(db, EV_PROVIDER_GEMINI, 0), EV_EINVAL);
}

/* ---- property tests under contention ---- */

#define THREADS 8
#define PER_THREAD 60

typedef struct {
    int index;
    int64_t slots_us[PER_THREAD]; /* database time of each granted slot */
    int granted;
    int refused_daily;
    int failed;
} reserver_t;

static void *reserver_main(void *arg)
{
    reserver_t *r = arg;
    ev_db_t *c = NULL;
    if (ev_pgtest_connect(&c, url) != 0) {
        r->failed++;
        return NULL;
    }
    for (int i = 0; i < PER_THREAD; i++) {
        PGresult *res = NULL;
        /* Every third thread also pauses the grid now and then, as a 429 does. */
        if (r->index % 3 == 0 && i % 20 == 10 &&
            ev_db_exec(c, NULL, "SELECT ev_rate_pause('gemini', 0.05)", 0, NULL) != 0)
            r->failed++;
        if (ev_db_exec(c, &res,
                       "SELECT ok, why, (extract(epoch FROM slot_at) * 1e6)::bigint"
                       " FROM ev_rate_reserve('gemini', -1)",
                       0, NULL) != 0) {
            r->failed++;
        } else if (PQgetvalue(res, 0, 0)[0] == 't') {
            r->slots_us[r->granted++] = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
        } else if (strcmp(PQgetvalue(res, 0, 1), "daily") == 0) {
            r->refused_daily++;
        } else {
            r->failed++;
        }
        PQclear(res);
    }
    ev_db_free(c);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Runs THREADS reservers and returns every granted slot, sorted. */
static int64_t *run_reservers(int *n, int *daily)
{
    pthread_t th[THREADS];
    reserver_t *rs = ev_calloc(THREADS, sizeof(*rs));
    for (int i = 0; i < THREADS; i++) {
        rs[i].index = i;
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, reserver_main, &rs[i]) == 0);
    }
    int64_t *all = ev_calloc(THREADS * PER_THREAD, sizeof(*all));
    *n = 0;
    *daily = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(rs[i].failed, 0);
        memcpy(all + *n, rs[i].slots_us, (size_t)rs[i].granted * sizeof(int64_t));
        *n += rs[i].granted;
        *daily += rs[i].refused_daily;
    }
    qsort(all, (size_t)*n, sizeof(*all), cmp_i64);
    free(rs);
    return all;
}

/* 8 connections racing for slots of a 60000/min grid (1 ms apart): every slot
 * is distinct and at least one interval after the previous one, so any
 * window of W ms holds at most W + 1 calls: the whole cluster never exceeds
 * the rate, whoever asks. */
static void test_grid_under_contention(void)
{
    fresh();
    CU_ASSERT_EQUAL(ev_cluster_rate_configure(db, EV_PROVIDER_GEMINI, 60000, 1, 0), 0);
    int n = 0, daily = 0;
    int64_t *all = run_reservers(&n, &daily);
    CU_ASSERT_EQUAL(n, THREADS * PER_THREAD);
    CU_ASSERT_EQUAL(daily, 0);
    int closer = 0;
    for (int i = 1; i < n; i++)
        if (all[i] - all[i - 1] < 1000)
            closer++;
    CU_ASSERT_EQUAL(closer, 0);
    int64_t granted = 0;
    CU_ASSERT_EQUAL(
        ev_pgtest_db_i64(db, "SELECT granted FROM ev_provider_rate WHERE provider = 'gemini'",
                         &granted),
        0);
    CU_ASSERT_EQUAL(granted, n);
    free(all);
}

/* The daily cap is exact under contention: exactly rpd requests granted. */
static void test_daily_cap_under_contention(void)
{
    fresh();
    CU_ASSERT_EQUAL(ev_cluster_rate_configure(db, EV_PROVIDER_GEMINI, 0, 1, 100), 0);
    int n = 0, daily = 0;
    int64_t *all = run_reservers(&n, &daily);
    CU_ASSERT_EQUAL(n, 100);
    CU_ASSERT_EQUAL(daily, THREADS * PER_THREAD - 100);
    free(all);
}

typedef struct {
    int cap;
    atomic_int *holding;
    atomic_int *max_holding;
    int failed;
} slotter_t;

static void *slotter_main(void *arg)
{
    slotter_t *s = arg;
    ev_db_t *c = NULL;
    char cap[8];
    snprintf(cap, sizeof(cap), "%d", s->cap);
    if (ev_pgtest_connect(&c, url) != 0) {
        s->failed++;
        return NULL;
    }
    for (int i = 0; i < 200; i++) {
        int64_t slot = -1;
        PGresult *res = NULL;
        const char *params[] = {cap};
        if (ev_db_exec(c, &res, "SELECT ev_slot_try('groq', $1::int, '{}')", 1, params) != 0) {
            s->failed++;
            break;
        }
        slot = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        if (slot < 0)
            continue;
        int now = atomic_fetch_add(s->holding, 1) + 1;
        int seen = atomic_load(s->max_holding);
        while (now > seen && !atomic_compare_exchange_weak(s->max_holding, &seen, now))
            ;
        atomic_fetch_sub(s->holding, 1);
        char sl[24];
        snprintf(sl, sizeof(sl), "%lld", (long long)slot);
        const char *up[] = {sl};
        if (ev_db_exec(c, NULL, "SELECT pg_advisory_unlock(ev_slot_class('groq'), $1::int)", 1,
                       up) != 0)
            s->failed++;
    }
    ev_db_free(c);
    return NULL;
}

/* 8 sessions competing for 2 advisory-lock slots never hold more than 2. */
static void test_slots_under_contention(void)
{
    atomic_int holding = 0, max_holding = 0;
    pthread_t th[THREADS];
    slotter_t ss[THREADS];
    for (int i = 0; i < THREADS; i++) {
        ss[i] = (slotter_t){.cap = 2, .holding = &holding, .max_holding = &max_holding};
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, slotter_main, &ss[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(ss[i].failed, 0);
    }
    CU_ASSERT(atomic_load(&max_holding) >= 1);
    CU_ASSERT(atomic_load(&max_holding) <= 2);
}

static int suite_init(void)
{
    return ev_pgtest_open(&url, &db) != 0;
}

static int suite_clean(void)
{
    ev_pgtest_close(url, db);
    return 0;
}

static const ev_test_t state_tests[] = {
    {"defaults and read", test_defaults_and_read},
    {"pause and resume", test_pause_and_resume},
    {"breaker open, one probe, close", test_breaker_open_one_probe_close},
    {"disable and NOTIFY", test_disable_and_notify},
    {"rate set and configure", test_rate_set_and_configure},
    EV_TEST_END,
};

static const ev_test_t property_tests[] = {
    {"grid under contention: never closer than the interval", test_grid_under_contention},
    {"daily cap exact under contention", test_daily_cap_under_contention},
    {"advisory slots never above the cap", test_slots_under_contention},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"cluster_state", suite_init, suite_clean, state_tests, NULL, NULL},
    {"cluster_sql_properties", suite_init, suite_clean, property_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
