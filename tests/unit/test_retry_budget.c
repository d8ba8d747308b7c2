/*
 * test_retry_budget.c - per-provider retry budget (SPEC §3 RETRY_BUDGET_RATIO).
 *
 * What a user relies on: when a provider struggles, retries add at most 20 %
 * on top of normal traffic (no retry storm), yet a quiet provider can still
 * retry a few times.
 */
#include "ev/clock.h"
#include "ev/error.h"
#include "ev/retry_budget.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdatomic.h>
#include "runner.h"

#define SEC 1000000LL
#define NTHREADS 16

typedef struct {
    ev_fake_clock_t *fc;
    ev_retry_budget_t *rb;
} fixture_t;

static fixture_t make(double ratio, int window_s, int min_retries)
{
    fixture_t f = {0};
    ev_retry_budget_options_t o = {
        .ratio = ratio, .window_s = window_s, .min_retries = min_retries};
    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&f.fc, 500 * SEC, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_retry_budget_new(&f.rb, &o, ev_fake_clock_get(f.fc)), 0);
    return f;
}

static void destroy(fixture_t *f)
{
    ev_retry_budget_free(f->rb);
    ev_fake_clock_free(f->fc);
}

static int retries_granted(fixture_t *f, int tries)
{
    int n = 0;
    for (int i = 0; i < tries; i++)
        n += ev_retry_budget_try_retry(f->rb) == 0;
    return n;
}

static void test_options(void)
{
    ev_fake_clock_t *fc = NULL;
    ev_retry_budget_t *rb = (ev_retry_budget_t *)&fc;
    ev_retry_budget_options_t o = EV_RETRY_BUDGET_OPTIONS_INIT;

    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 0, 0), 0);
    o.ratio = -0.1;
    CU_ASSERT_EQUAL(ev_retry_budget_new(&rb, &o, ev_fake_clock_get(fc)), EV_EINVAL);
    CU_ASSERT_PTR_NULL(rb);
    o = (ev_retry_budget_options_t)EV_RETRY_BUDGET_OPTIONS_INIT;
    o.window_s = 0;
    CU_ASSERT_EQUAL(ev_retry_budget_new(&rb, &o, ev_fake_clock_get(fc)), EV_EINVAL);
    o = (ev_retry_budget_options_t)EV_RETRY_BUDGET_OPTIONS_INIT;
    o.min_retries = -1;
    CU_ASSERT_EQUAL(ev_retry_budget_new(&rb, &o, ev_fake_clock_get(fc)), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_retry_budget_new(&rb, NULL, NULL), EV_EINVAL);
    CU_ASSERT_EQUAL_FATAL(ev_retry_budget_new(&rb, NULL, ev_fake_clock_get(fc)), 0);
    ev_retry_budget_stats_t st;
    ev_retry_budget_stats(rb, &st);
    CU_ASSERT_EQUAL(st.allowed_in_window, 3);
    ev_retry_budget_free(rb);
    ev_retry_budget_free(NULL);
    ev_fake_clock_free(fc);
}

/* A quiet provider: 3 retries per window even with almost no traffic. */
static void test_minimum(void)
{
    fixture_t f = make(0.2, 120, 3);
    ev_retry_budget_note_attempt(f.rb);
    CU_ASSERT_EQUAL(retries_granted(&f, 10), 3);
    ev_retry_budget_stats_t st;
    ev_retry_budget_stats(f.rb, &st);
    CU_ASSERT_EQUAL(st.window_retries, 3);
    CU_ASSERT_EQUAL(st.total_denied, 7);
    destroy(&f);

    /* min 0 and no traffic: no retries at all. */
    f = make(0.2, 120, 0);
    CU_ASSERT_EQUAL(ev_retry_budget_try_retry(f.rb), EV_EBUDGET);
    destroy(&f);
}

/* 100 first attempts allow exactly 20 retries; 110 allow 22. */
static void test_ratio(void)
{
    fixture_t f = make(0.2, 120, 3);
    for (int i = 0; i < 100; i++)
        ev_retry_budget_note_attempt(f.rb);
    CU_ASSERT_EQUAL(retries_granted(&f, 50), 20);
    for (int i = 0; i < 10; i++)
        ev_retry_budget_note_attempt(f.rb);
    CU_ASSERT_EQUAL(retries_granted(&f, 50), 2);
    ev_retry_budget_stats_t st;
    ev_retry_budget_stats(f.rb, &st);
    CU_ASSERT_EQUAL(st.window_attempts, 110);
    CU_ASSERT_EQUAL(st.window_retries, 22);
    CU_ASSERT_EQUAL(st.allowed_in_window, 22);
    CU_ASSERT_EQUAL(st.total_retries, 22);
    CU_ASSERT_EQUAL(st.total_denied, 78);
    destroy(&f);

    /* Binary rounding does not cost a retry: 0.1 × 30 = 3, 0.7 × 10 = 7. */
    f = make(0.1, 120, 0);
    for (int i = 0; i < 30; i++)
        ev_retry_budget_note_attempt(f.rb);
    CU_ASSERT_EQUAL(retries_granted(&f, 10), 3);
    destroy(&f);
    f = make(0.7, 120, 0);
    for (int i = 0; i < 10; i++)
        ev_retry_budget_note_attempt(f.rb);
    CU_ASSERT_EQUAL(retries_granted(&f, 10), 7);
    destroy(&f);
}

/* Attempts and retries leave the window after window_s seconds. */
static void test_window_slides(void)
{
    fixture_t f = make(0.2, 60, 3);
    for (int i = 0; i < 100; i++)
        ev_retry_budget_note_attempt(f.rb);
    CU_ASSERT_EQUAL(retries_granted(&f, 30), 20);
    /* 59 s later the retries still count: nothing more allowed. */
    ev_fake_clock_advance(f.fc, 59 * SEC);
    CU_ASSERT_EQUAL(ev_retry_budget_try_retry(f.rb), EV_EBUDGET);
    /* At 60 s both the attempts and the retries have left. */
    ev_fake_clock_advance(f.fc, 1 * SEC);
    ev_retry_budget_stats_t st;
    ev_retry_budget_stats(f.rb, &st);
    CU_ASSERT_EQUAL(st.window_attempts, 0);
    CU_ASSERT_EQUAL(st.window_retries, 0);
    CU_ASSERT_EQUAL(retries_granted(&f, 10), 3);

    /* Spread traffic: only the last window's attempts count. */
    ev_fake_clock_advance(f.fc, 1000 * SEC);
    for (int s = 0; s < 120; s++) {
        for (int i = 0; i < 5; i++)
            ev_retry_budget_note_attempt(f.rb);
        ev_fake_clock_advance(f.fc, SEC);
    }
    ev_retry_budget_stats(f.rb, &st);
    CU_ASSERT_EQUAL(st.window_attempts, 59 * 5); /* seconds 61..119 of the run */
    CU_ASSERT_EQUAL(retries_granted(&f, 100), 59);
    destroy(&f);
}

typedef struct {
    fixture_t *f;
    atomic_int granted, denied;
} race_t;

static void *racer(void *arg)
{
    race_t *r = arg;
    for (int i = 0; i < 1000; i++) {
        ev_retry_budget_note_attempt(r->f->rb);
        for (int k = 0; k < 2; k++) {
            if (ev_retry_budget_try_retry(r->f->rb) == 0)
                atomic_fetch_add(&r->granted, 1);
            else
                atomic_fetch_add(&r->denied, 1);
        }
    }
    return NULL;
}

/* 16 threads each making 1000 first attempts and wanting 2 retries apiece:
 * retries never exceed 20 % of attempts (+ the minimum while traffic is
 * low), and the budget is fully usable. */
static void test_contention_ratio_respected(void)
{
    fixture_t f = make(0.2, 120, 3);
    race_t r = {.f = &f};
    pthread_t th[NTHREADS];

    for (int i = 0; i < NTHREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, racer, &r), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    int granted = atomic_load(&r.granted);
    CU_ASSERT_TRUE(granted <= NTHREADS * 1000 / 5);
    CU_ASSERT_EQUAL(granted + atomic_load(&r.denied), NTHREADS * 2000);
    /* Whatever is left of the allowance can still be used, up to exactly 20 %. */
    CU_ASSERT_EQUAL(granted + retries_granted(&f, 10000), NTHREADS * 1000 / 5);
    ev_retry_budget_stats_t st;
    ev_retry_budget_stats(f.rb, &st);
    CU_ASSERT_EQUAL(st.total_attempts, NTHREADS * 1000);
    CU_ASSERT_EQUAL(st.window_retries, NTHREADS * 1000 / 5);
    destroy(&f);
}

static const ev_test_t retry_budget_tests[] = {
    {"options", test_options},
    {"minimum retries for a quiet provider", test_minimum},
    {"ratio respected", test_ratio},
    {"window slides", test_window_slides},
    {"16 threads: ratio respected", test_contention_ratio_respected},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"retry_budget", NULL, NULL, retry_budget_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
