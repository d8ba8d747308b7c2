/*
 * test_breaker.c - the per-provider circuit breaker (SPEC §3 CIRCUIT_BREAKER_*, §6).
 *
 * What a user relies on: a failing provider is skipped (fallback) instead of
 * hammered; it is probed again after the cooldown with a bounded number of
 * calls; bad answers and config errors do not count as provider failures;
 * a slow call from an earlier period never decides a trial. Every edge of
 * the state machine is driven on a fake clock; admission races are run with
 * 16 threads.
 */
#include "ev/breaker.h"
#include "ev/clock.h"
#include "ev/error.h"
#include "ev/util.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include "runner.h"

#define SEC 1000000LL
#define NTHREADS 16

typedef struct {
    ev_fake_clock_t *fc;
    ev_breaker_t *b;
} fixture_t;

static fixture_t make(double threshold, int window_s, int cooldown_s, int min_calls, int probes,
                      int probe_timeout_s)
{
    fixture_t f = {0};
    ev_breaker_options_t o = EV_BREAKER_OPTIONS_INIT;
    o.threshold = threshold;
    o.window_s = window_s;
    o.cooldown_s = cooldown_s;
    o.min_calls = min_calls;
    o.half_open_probes = probes;
    o.probe_timeout_s = probe_timeout_s;
    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&f.fc, 1000 * SEC, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_breaker_new(&f.b, &o, ev_fake_clock_get(f.fc)), 0);
    return f;
}

static void destroy(fixture_t *f)
{
    ev_breaker_free(f->b);
    ev_fake_clock_free(f->fc);
}

/* allow + record in one go; returns record's code, or allow's on refusal. */
static int call(fixture_t *f, ev_breaker_outcome_t outcome, ev_breaker_change_t *ch)
{
    ev_breaker_ticket_t t;
    int rc = ev_breaker_allow(f->b, &t, NULL);
    if (rc != 0)
        return rc;
    return ev_breaker_record(f->b, &t, outcome, ch);
}

static ev_breaker_state_t state(fixture_t *f)
{
    return ev_breaker_state(f->b);
}

/* Opens a fresh breaker (threshold 0.5, min 4) by four failures. */
static void open_it(fixture_t *f)
{
    for (int i = 0; i < 4; i++)
        call(f, EV_BREAKER_FAILURE, NULL);
    CU_ASSERT_EQUAL(state(f), EV_BREAKER_OPEN);
}

static void test_options_and_names(void)
{
    ev_fake_clock_t *fc = NULL;
    ev_breaker_t *b = (ev_breaker_t *)&fc;
    ev_breaker_options_t o = EV_BREAKER_OPTIONS_INIT;

    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 0, 0), 0);
    o.threshold = 0;
    CU_ASSERT_EQUAL(ev_breaker_new(&b, &o, ev_fake_clock_get(fc)), EV_EINVAL);
    CU_ASSERT_PTR_NULL(b);
    o = (ev_breaker_options_t)EV_BREAKER_OPTIONS_INIT;
    o.threshold = 1.01;
    CU_ASSERT_EQUAL(ev_breaker_new(&b, &o, ev_fake_clock_get(fc)), EV_EINVAL);
    o = (ev_breaker_options_t)EV_BREAKER_OPTIONS_INIT;
    o.window_s = 0;
    CU_ASSERT_EQUAL(ev_breaker_new(&b, &o, ev_fake_clock_get(fc)), EV_EINVAL);
    o = (ev_breaker_options_t)EV_BREAKER_OPTIONS_INIT;
    o.min_calls = 0;
    CU_ASSERT_EQUAL(ev_breaker_new(&b, &o, ev_fake_clock_get(fc)), EV_EINVAL);
    o = (ev_breaker_options_t)EV_BREAKER_OPTIONS_INIT;
    o.half_open_probes = 0;
    CU_ASSERT_EQUAL(ev_breaker_new(&b, &o, ev_fake_clock_get(fc)), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_breaker_new(&b, NULL, NULL), EV_EINVAL);
    CU_ASSERT_EQUAL_FATAL(ev_breaker_new(&b, NULL, ev_fake_clock_get(fc)), 0);
    CU_ASSERT_EQUAL(ev_breaker_state(b), EV_BREAKER_CLOSED);
    ev_breaker_free(b);
    ev_breaker_free(NULL);
    ev_fake_clock_free(fc);

    CU_ASSERT_STRING_EQUAL(ev_breaker_state_name(EV_BREAKER_CLOSED), "closed");
    CU_ASSERT_STRING_EQUAL(ev_breaker_state_name(EV_BREAKER_OPEN), "open");
    CU_ASSERT_STRING_EQUAL(ev_breaker_state_name(EV_BREAKER_HALF_OPEN), "half_open");
    CU_ASSERT_STRING_EQUAL(ev_breaker_state_name((ev_breaker_state_t)7), "unknown");
}

/* 100 % errors do not open before min_calls results were seen. */
static void test_opens_only_after_min_calls(void)
{
    fixture_t f = make(0.5, 120, 60, 10, 1, 0);
    ev_breaker_change_t ch;

    for (int i = 0; i < 9; i++) {
        CU_ASSERT_EQUAL(call(&f, EV_BREAKER_FAILURE, &ch), 0);
        CU_ASSERT_FALSE(ch.changed);
        CU_ASSERT_EQUAL(state(&f), EV_BREAKER_CLOSED);
    }
    CU_ASSERT_EQUAL(call(&f, EV_BREAKER_FAILURE, &ch), 0);
    CU_ASSERT_TRUE(ch.changed);
    CU_ASSERT_EQUAL(ch.from, EV_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(ch.to, EV_BREAKER_OPEN);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_OPEN);
    /* Open: the caller falls back. */
    ev_breaker_ticket_t t;
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &t, NULL), EV_EOPEN);
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &t, EV_BREAKER_SUCCESS, NULL), EV_EINVAL);

    ev_breaker_stats_t st;
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.state, EV_BREAKER_OPEN);
    CU_ASSERT_EQUAL(st.window_calls, 10);
    CU_ASSERT_EQUAL(st.window_failures, 10);
    CU_ASSERT_DOUBLE_EQUAL(st.error_rate, 1.0, 1e-12);
    CU_ASSERT_EQUAL(st.opened, 1);
    CU_ASSERT_EQUAL(st.transitions, 1);
    CU_ASSERT_EQUAL(st.rejected, 1);
    CU_ASSERT_EQUAL(st.open_until_us, 1060 * SEC);
    CU_ASSERT_EQUAL(st.last_change_us, 1000 * SEC);
    destroy(&f);
}

/* 1 failure in 20 calls is exactly 0.05: it opens; 1 in 21 does not. */
static void test_threshold_exactly_reached(void)
{
    fixture_t f = make(0.05, 120, 60, 10, 1, 0);
    for (int i = 0; i < 19; i++)
        CU_ASSERT_EQUAL(call(&f, EV_BREAKER_SUCCESS, NULL), 0);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(call(&f, EV_BREAKER_FAILURE, NULL), 0);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_OPEN);
    destroy(&f);

    f = make(0.05, 120, 60, 10, 1, 0);
    for (int i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(call(&f, EV_BREAKER_SUCCESS, NULL), 0);
    CU_ASSERT_EQUAL(call(&f, EV_BREAKER_FAILURE, NULL), 0);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_CLOSED);
    /* A second failure: 2/22 > 0.05 opens. */
    CU_ASSERT_EQUAL(call(&f, EV_BREAKER_FAILURE, NULL), 0);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_OPEN);
    destroy(&f);

    /* Other thresholds reached exactly by rounding-prone fractions. */
    const struct {
        double thr;
        int calls, fails;
    } cases[] = {{0.1, 10, 1}, {0.3, 10, 3},   {0.7, 10, 7},   {1.0 / 3.0, 3, 1},
                 {0.2, 15, 3}, {0.07, 100, 7}, {0.57, 100, 57}};
    for (size_t k = 0; k < EV_ARRAY_LEN(cases); k++) {
        f = make(cases[k].thr, 120, 60, cases[k].calls, 1, 0);
        for (int i = 0; i < cases[k].calls - cases[k].fails; i++)
            call(&f, EV_BREAKER_SUCCESS, NULL);
        for (int i = 0; i < cases[k].fails - 1; i++)
            call(&f, EV_BREAKER_FAILURE, NULL);
        CU_ASSERT_EQUAL(state(&f), EV_BREAKER_CLOSED);
        call(&f, EV_BREAKER_FAILURE, NULL);
        CU_ASSERT_EQUAL(state(&f), EV_BREAKER_OPEN);
        destroy(&f);
    }
}

/* OPEN for exactly cooldown_s, then one probe is admitted (HALF_OPEN). */
static void test_cooldown_then_half_open(void)
{
    fixture_t f = make(0.5, 120, 60, 4, 1, 0);
    ev_breaker_ticket_t t;
    ev_breaker_change_t ch;
    open_it(&f);

    ev_fake_clock_advance(f.fc, 60 * SEC - 1);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &t, &ch), EV_EOPEN);
    CU_ASSERT_FALSE(ch.changed);
    ev_fake_clock_advance(f.fc, 1);
    /* The read-only view already shows the effective state. */
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &t, &ch), 0);
    CU_ASSERT_TRUE(ch.changed);
    CU_ASSERT_EQUAL(ch.from, EV_BREAKER_OPEN);
    CU_ASSERT_EQUAL(ch.to, EV_BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL(t.state, EV_BREAKER_HALF_OPEN);
    /* Only one probe at a time. */
    ev_breaker_ticket_t t2;
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &t2, &ch), EV_EOPEN);
    CU_ASSERT_FALSE(ch.changed);
    ev_breaker_stats_t st;
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.probes_in_flight, 1);
    CU_ASSERT_EQUAL(st.last_change_us, 1060 * SEC);
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &t, EV_BREAKER_SUCCESS, NULL), 0);
    destroy(&f);
}

/* All probes succeed: CLOSED, with an empty window. */
static void test_probe_success_closes(void)
{
    fixture_t f = make(0.5, 120, 60, 4, 3, 0);
    ev_breaker_ticket_t t[4];
    ev_breaker_change_t ch;
    open_it(&f);
    ev_fake_clock_advance(f.fc, 60 * SEC);

    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &t[i], NULL), 0);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &t[3], NULL), EV_EOPEN);
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &t[0], EV_BREAKER_SUCCESS, &ch), 0);
    CU_ASSERT_FALSE(ch.changed);
    /* A success does not free a place: 3 successes are needed, 2 are pending. */
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &t[3], NULL), EV_EOPEN);
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &t[1], EV_BREAKER_SUCCESS, &ch), 0);
    CU_ASSERT_FALSE(ch.changed);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &t[2], EV_BREAKER_SUCCESS, &ch), 0);
    CU_ASSERT_TRUE(ch.changed);
    CU_ASSERT_EQUAL(ch.from, EV_BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL(ch.to, EV_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_CLOSED);

    ev_breaker_stats_t st;
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 0);
    CU_ASSERT_EQUAL(st.transitions, 3);
    /* The old errors are gone: it takes min_calls new ones to reopen. */
    for (int i = 0; i < 3; i++)
        call(&f, EV_BREAKER_FAILURE, NULL);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_CLOSED);
    call(&f, EV_BREAKER_FAILURE, NULL);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_OPEN);
    destroy(&f);
}

/* Any probe failure reopens for a whole new cooldown; other probes go stale. */
static void test_probe_failure_reopens(void)
{
    fixture_t f = make(0.5, 120, 60, 4, 2, 0);
    ev_breaker_ticket_t a, b, c;
    ev_breaker_change_t ch;
    open_it(&f);
    ev_fake_clock_advance(f.fc, 60 * SEC);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &a, NULL), 0);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &b, NULL), 0);
    ev_fake_clock_advance(f.fc, 5 * SEC);
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &a, EV_BREAKER_FAILURE, &ch), 0);
    CU_ASSERT_TRUE(ch.changed);
    CU_ASSERT_EQUAL(ch.from, EV_BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL(ch.to, EV_BREAKER_OPEN);
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &b, EV_BREAKER_SUCCESS, &ch), EV_ENOTFOUND);
    CU_ASSERT_FALSE(ch.changed);
    ev_fake_clock_advance(f.fc, 60 * SEC - 1);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &c, NULL), EV_EOPEN);
    ev_fake_clock_advance(f.fc, 1);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &c, NULL), 0);
    ev_breaker_stats_t st;
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.opened, 2);
    CU_ASSERT_EQUAL(st.stale, 1);
    destroy(&f);
}

/* A slow call admitted while CLOSED reports during HALF_OPEN: ignored either way. */
static void test_late_closed_ticket_ignored(void)
{
    fixture_t f = make(0.5, 120, 60, 4, 1, 0);
    ev_breaker_ticket_t slow_ok, slow_bad, probe;
    ev_breaker_change_t ch;

    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &slow_ok, NULL), 0);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &slow_bad, NULL), 0);
    CU_ASSERT_EQUAL(slow_ok.state, EV_BREAKER_CLOSED);
    open_it(&f);
    ev_fake_clock_advance(f.fc, 60 * SEC);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &probe, NULL), 0);

    /* Its success must not close the breaker... */
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &slow_ok, EV_BREAKER_SUCCESS, &ch), EV_ENOTFOUND);
    CU_ASSERT_FALSE(ch.changed);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_HALF_OPEN);
    /* ...and its failure must not reopen it. */
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &slow_bad, EV_BREAKER_FAILURE, &ch), EV_ENOTFOUND);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_HALF_OPEN);
    /* The real probe decides. */
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &probe, EV_BREAKER_SUCCESS, &ch), 0);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_CLOSED);
    /* A stale failure cannot count toward the new CLOSED period either. */
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &slow_bad, EV_BREAKER_FAILURE, &ch), EV_ENOTFOUND);
    ev_breaker_stats_t st;
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 0);
    CU_ASSERT_EQUAL(st.stale, 3);
    destroy(&f);
}

/* A probe that never reports is reclaimed: HALF_OPEN does not stick. */
static void test_unreported_probe_reclaimed(void)
{
    fixture_t f = make(0.5, 120, 60, 4, 1, 30);
    ev_breaker_ticket_t lost, next;
    open_it(&f);
    ev_fake_clock_advance(f.fc, 60 * SEC);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &lost, NULL), 0);
    ev_fake_clock_advance(f.fc, 30 * SEC - 1);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &next, NULL), EV_EOPEN);
    ev_fake_clock_advance(f.fc, 1);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &next, NULL), 0);
    CU_ASSERT_NOT_EQUAL(next.probe_id, lost.probe_id);
    /* The lost probe's late failure is ignored; the new probe decides. */
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &lost, EV_BREAKER_FAILURE, NULL), EV_ENOTFOUND);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &next, EV_BREAKER_SUCCESS, NULL), 0);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_CLOSED);
    ev_breaker_stats_t st;
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.reclaimed, 1);
    destroy(&f);

    /* Default probe timeout is the cooldown. */
    f = make(0.5, 120, 60, 4, 1, 0);
    open_it(&f);
    ev_fake_clock_advance(f.fc, 60 * SEC);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &lost, NULL), 0);
    ev_fake_clock_advance(f.fc, 60 * SEC - 1);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &next, NULL), EV_EOPEN);
    ev_fake_clock_advance(f.fc, 1);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &next, NULL), 0);
    destroy(&f);
}

/* Bad answers and config errors say nothing about provider health. */
static void test_neutral_not_counted(void)
{
    fixture_t f = make(0.5, 120, 60, 4, 1, 0);
    ev_breaker_ticket_t p1, p2;

    for (int i = 0; i < 100; i++)
        CU_ASSERT_EQUAL(call(&f, EV_BREAKER_NEUTRAL, NULL), 0);
    /* Neutral results are not calls: 3 failures stay below min_calls 4. */
    for (int i = 0; i < 3; i++)
        call(&f, EV_BREAKER_FAILURE, NULL);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_CLOSED);
    ev_breaker_stats_t st;
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 3);
    CU_ASSERT_EQUAL(st.neutral, 100);
    /* ...and do not dilute the error rate: 1 success + 3 failures opens. */
    call(&f, EV_BREAKER_SUCCESS, NULL);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_OPEN);

    /* A neutral probe neither closes nor reopens; it frees its place. */
    ev_fake_clock_advance(f.fc, 60 * SEC);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &p1, NULL), 0);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &p2, NULL), EV_EOPEN);
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &p1, EV_BREAKER_NEUTRAL, NULL), 0);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &p2, NULL), 0);
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &p2, EV_BREAKER_SUCCESS, NULL), 0);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_CLOSED);
    destroy(&f);
}

/* Errors older than the window drop out. */
static void test_window_slides(void)
{
    fixture_t f = make(0.5, 120, 60, 10, 1, 0);
    ev_breaker_stats_t st;

    for (int i = 0; i < 9; i++)
        call(&f, EV_BREAKER_FAILURE, NULL);
    /* 119 s later the failures still count: one more call judges 10 calls. */
    ev_fake_clock_advance(f.fc, 119 * SEC);
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.window_failures, 9);
    /* At 120 s they are out of the window. */
    ev_fake_clock_advance(f.fc, 1 * SEC);
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 0);
    CU_ASSERT_EQUAL(st.error_rate, 0.0);
    /* 10 successes + 1 failure: 1/11 < 0.5. Counting the old ones would give 10/20. */
    for (int i = 0; i < 10; i++)
        call(&f, EV_BREAKER_SUCCESS, NULL);
    call(&f, EV_BREAKER_FAILURE, NULL);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_CLOSED);
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 11);
    CU_ASSERT_EQUAL(st.window_failures, 1);
    destroy(&f);

    /* Partial slide: failures spread over time leave one by one. */
    f = make(0.5, 10, 60, 100, 1, 0);
    for (int s = 0; s < 10; s++) {
        call(&f, EV_BREAKER_FAILURE, NULL);
        ev_fake_clock_advance(f.fc, SEC);
    }
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 9); /* the one from 10 s ago has left */
    ev_fake_clock_advance(f.fc, 5 * SEC);
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 4);
    ev_fake_clock_advance(f.fc, 1000 * SEC);
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 0);
    destroy(&f);
}

/* Daily quota: open until a given instant, extended but never shortened. */
static void test_force_open(void)
{
    fixture_t f = make(0.5, 120, 60, 4, 1, 0);
    ev_breaker_ticket_t t;
    ev_breaker_change_t ch;
    int64_t until = 1000 * SEC + 5 * 3600 * SEC;

    ev_breaker_force_open(f.b, until, &ch);
    CU_ASSERT_TRUE(ch.changed);
    CU_ASSERT_EQUAL(ch.to, EV_BREAKER_OPEN);
    ev_breaker_force_open(f.b, until - 3600 * SEC, &ch);
    CU_ASSERT_FALSE(ch.changed);
    ev_fake_clock_set(f.fc, until - 1);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &t, NULL), EV_EOPEN);
    ev_breaker_stats_t st;
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(st.open_until_us, until);
    ev_fake_clock_set(f.fc, until);
    CU_ASSERT_EQUAL(ev_breaker_allow(f.b, &t, NULL), 0);
    CU_ASSERT_EQUAL(t.state, EV_BREAKER_HALF_OPEN);
    /* Forcing open during HALF_OPEN turns the probe stale. */
    ev_breaker_force_open(f.b, until + 100 * SEC, &ch);
    CU_ASSERT_TRUE(ch.changed);
    CU_ASSERT_EQUAL(ch.from, EV_BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL(ev_breaker_record(f.b, &t, EV_BREAKER_SUCCESS, NULL), EV_ENOTFOUND);
    CU_ASSERT_EQUAL(state(&f), EV_BREAKER_OPEN);
    destroy(&f);
}

/* ---------- contention ---------- */

#define ROUNDS 300

typedef struct {
    fixture_t *f;
    pthread_barrier_t start, done;
    ev_breaker_ticket_t tickets[NTHREADS];
    int rcs[NTHREADS];
    bool changed[NTHREADS];
} race_t;

typedef struct {
    race_t *r;
    int idx;
} race_arg_t;

static void *racer(void *arg)
{
    race_arg_t *a = arg;
    race_t *r = a->r;
    for (int round = 0; round < ROUNDS; round++) {
        pthread_barrier_wait(&r->start);
        ev_breaker_change_t ch;
        r->rcs[a->idx] = ev_breaker_allow(r->f->b, &r->tickets[a->idx], &ch);
        r->changed[a->idx] = ch.changed;
        pthread_barrier_wait(&r->done);
    }
    return NULL;
}

/* Sixteen threads race for admission right after the cooldown: exactly
 * `probes` are admitted, the rest fall back, and exactly one thread learns
 * of the OPEN -> HALF_OPEN change. Repeated over many rounds. */
static void run_half_open_race(int probes)
{
    fixture_t f = make(0.5, 120, 60, 4, probes, 0);
    race_t r = {.f = &f};
    pthread_t th[NTHREADS];
    race_arg_t args[NTHREADS];
    int bad_admitted = 0, bad_changed = 0, bad_ids = 0;

    open_it(&f);
    pthread_barrier_init(&r.start, NULL, NTHREADS + 1);
    pthread_barrier_init(&r.done, NULL, NTHREADS + 1);
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (race_arg_t){&r, i};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, racer, &args[i]), 0);
    }
    for (int round = 0; round < ROUNDS; round++) {
        ev_fake_clock_advance(f.fc, 60 * SEC);
        pthread_barrier_wait(&r.start);
        pthread_barrier_wait(&r.done);
        int admitted = 0, changed = 0, first = -1;
        for (int i = 0; i < NTHREADS; i++) {
            if (r.rcs[i] == 0) {
                admitted++;
                if (first < 0)
                    first = i;
                for (int j = 0; j < i; j++)
                    if (r.rcs[j] == 0 && r.tickets[j].probe_id == r.tickets[i].probe_id)
                        bad_ids++;
            } else if (r.rcs[i] != EV_EOPEN) {
                bad_admitted++;
            }
            changed += r.changed[i];
        }
        bad_admitted += admitted != probes;
        bad_changed += changed != 1;
        /* Alternate: a failed probe reopens; on odd rounds all succeed and
         * then fresh failures reopen it. */
        if (first >= 0 && round % 2 == 0) {
            ev_breaker_record(f.b, &r.tickets[first], EV_BREAKER_FAILURE, NULL);
        } else {
            for (int i = 0; i < NTHREADS; i++)
                if (r.rcs[i] == 0)
                    ev_breaker_record(f.b, &r.tickets[i], EV_BREAKER_SUCCESS, NULL);
            if (state(&f) != EV_BREAKER_CLOSED)
                bad_admitted++;
            open_it(&f);
        }
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(bad_admitted, 0);
    CU_ASSERT_EQUAL(bad_changed, 0);
    CU_ASSERT_EQUAL(bad_ids, 0);
    pthread_barrier_destroy(&r.start);
    pthread_barrier_destroy(&r.done);
    destroy(&f);
}

static void test_half_open_race_one_probe(void)
{
    run_half_open_race(1);
}

static void test_half_open_race_three_probes(void)
{
    run_half_open_race(3);
}

#define OPS 4000

typedef struct {
    fixture_t *f;
    atomic_int admitted, refused, counted, ignored, other;
} mix_t;

static void *mixer(void *arg)
{
    mix_t *m = arg;
    for (int i = 0; i < OPS; i++) {
        ev_breaker_ticket_t t;
        int rc = ev_breaker_allow(m->f->b, &t, NULL);
        if (rc == EV_EOPEN) {
            atomic_fetch_add(&m->refused, 1);
            ev_fake_clock_advance(m->f->fc, 1000);
            continue;
        }
        if (rc != 0) {
            atomic_fetch_add(&m->other, 1);
            continue;
        }
        atomic_fetch_add(&m->admitted, 1);
        ev_breaker_outcome_t o = (i % 7 == 0)   ? EV_BREAKER_FAILURE
                                 : (i % 5 == 0) ? EV_BREAKER_NEUTRAL
                                                : EV_BREAKER_SUCCESS;
        rc = ev_breaker_record(m->f->b, &t, o, NULL);
        if (rc == 0)
            atomic_fetch_add(&m->counted, 1);
        else if (rc == EV_ENOTFOUND)
            atomic_fetch_add(&m->ignored, 1);
        else
            atomic_fetch_add(&m->other, 1);
        ev_fake_clock_advance(m->f->fc, 2000);
    }
    return NULL;
}

/* Mixed traffic from 16 threads with the clock moving: the books balance. */
static void test_mixed_contention_accounting(void)
{
    fixture_t f = make(0.15, 2, 1, 10, 2, 1);
    mix_t m = {.f = &f};
    pthread_t th[NTHREADS];

    for (int i = 0; i < NTHREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, mixer, &m), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    ev_breaker_stats_t st;
    ev_breaker_stats(f.b, &st);
    CU_ASSERT_EQUAL(atomic_load(&m.other), 0);
    CU_ASSERT_EQUAL(atomic_load(&m.admitted) + atomic_load(&m.refused), NTHREADS * OPS);
    CU_ASSERT_EQUAL((uint64_t)atomic_load(&m.refused), st.rejected);
    CU_ASSERT_EQUAL((uint64_t)atomic_load(&m.counted), st.successes + st.failures + st.neutral);
    CU_ASSERT_EQUAL((uint64_t)atomic_load(&m.ignored), st.stale);
    CU_ASSERT_EQUAL(atomic_load(&m.counted) + atomic_load(&m.ignored), atomic_load(&m.admitted));
    /* Every thread's first call fails, so the first ten results open it. */
    CU_ASSERT_TRUE(st.opened >= 1);
    CU_ASSERT_TRUE(st.transitions >= st.opened);
    destroy(&f);
}

static const ev_test_t breaker_tests[] = {
    {"options and state names", test_options_and_names},
    {"closed->open only after min_calls", test_opens_only_after_min_calls},
    {"threshold exactly reached opens", test_threshold_exactly_reached},
    {"cooldown -> half_open", test_cooldown_then_half_open},
    {"probe success -> closed", test_probe_success_closes},
    {"probe failure -> open", test_probe_failure_reopens},
    {"late CLOSED-era result ignored in half_open", test_late_closed_ticket_ignored},
    {"unreported probe reclaimed", test_unreported_probe_reclaimed},
    {"neutral outcomes not counted", test_neutral_not_counted},
    {"window slides out old errors", test_window_slides},
    {"force open (daily quota)", test_force_open},
    {"half-open race, 16 threads, 1 probe", test_half_open_race_one_probe},
    {"half-open race, 16 threads, 3 probes", test_half_open_race_three_probes},
    {"mixed contention accounting", test_mixed_contention_accounting},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"breaker", NULL, NULL, breaker_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
