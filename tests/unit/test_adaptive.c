/*
 * test_adaptive.c - the learned request rate (ADAPTIVE_LIMITS).
 *
 * What a user relies on: the configured RPM is never exceeded; when the
 * real quota is lower the service finds it instead of living in a 429
 * storm; when the quota comes back, so does the rate; and a burst of 429s
 * from calls already in flight lowers the rate once, not once per call.
 *
 * The rules are checked one by one on a fake clock, then the controller is
 * run in closed loop against a model of the provider: a sliding-window
 * quota (like the real providers and provider-sim) answering after a
 * latency, several workers each taking slots from the real limiter
 * (ev_limiter) whose rate the controller sets, and a 429 pausing the limiter
 * for the provider's retry hint as the router does. The loop is a
 * discrete-event simulation on the fake clock, so minutes of traffic run in
 * milliseconds and every run is the same.
 */
#include "ev/adaptive.h"
#include "ev/clock.h"
#include "ev/error.h"
#include "ev/limiter.h"
#include "ev/util.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

#define SEC 1000000LL

typedef struct {
    ev_fake_clock_t *fc;
    ev_adaptive_t *a;
} fixture_t;

static fixture_t make(double ceiling_per_s, int64_t hold_us)
{
    fixture_t f = {0};
    ev_adaptive_options_t o = EV_ADAPTIVE_OPTIONS_INIT;
    o.ceiling_per_s = ceiling_per_s;
    o.hold_us = hold_us;
    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&f.fc, 1000 * SEC, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_adaptive_new(&f.a, &o, ev_fake_clock_get(f.fc)), 0);
    return f;
}

static void destroy(fixture_t *f)
{
    ev_adaptive_free(f->a);
    ev_fake_clock_free(f->fc);
}

static int64_t now(fixture_t *f)
{
    return ev_clock_now_us(ev_fake_clock_get(f->fc));
}

static double say(fixture_t *f, bool ok, bool limited, double stated, int64_t released,
                  bool *absorbed)
{
    ev_adaptive_signal_t s = EV_ADAPTIVE_SIGNAL_INIT;
    s.released_us = released;
    s.ok = ok;
    s.rate_limited = limited;
    s.stated_per_min = stated;
    return ev_adaptive_observe(f->a, &s, absorbed);
}

/* ---------- the rules ---------- */

static void test_invalid_options(void)
{
    ev_fake_clock_t *fc;
    ev_adaptive_t *a = (ev_adaptive_t *)1;
    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 0, 0), 0);
    ev_adaptive_options_t o = EV_ADAPTIVE_OPTIONS_INIT;
    o.ceiling_per_s = 0;
    CU_ASSERT_EQUAL(ev_adaptive_new(&a, &o, ev_fake_clock_get(fc)), EV_EINVAL);
    CU_ASSERT_PTR_NULL(a);
    o = (ev_adaptive_options_t)EV_ADAPTIVE_OPTIONS_INIT;
    o.decrease = 1;
    CU_ASSERT_EQUAL(ev_adaptive_new(&a, &o, ev_fake_clock_get(fc)), EV_EINVAL);
    o = (ev_adaptive_options_t)EV_ADAPTIVE_OPTIONS_INIT;
    CU_ASSERT_EQUAL(ev_adaptive_new(&a, &o, NULL), EV_EINVAL);
    ev_adaptive_free(NULL);
    ev_fake_clock_free(fc);
}

static void test_starts_at_ceiling_and_never_above(void)
{
    fixture_t f = make(10, 60 * SEC);
    /* 1 % under the ceiling: the margin that keeps jittered calls out of a
     * window whose limit is exactly the ceiling. */
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_rate_per_s(f.a), 9.9, 1e-9);
    for (int i = 0; i < 1000; i++) {
        ev_fake_clock_advance(f.fc, SEC);
        CU_ASSERT(say(&f, true, false, 0, now(&f), NULL) <= 9.9 + 1e-9);
    }
    destroy(&f);
}

static void test_429_lowers_by_ten_percent_once_per_epoch(void)
{
    fixture_t f = make(10, 60 * SEC);
    int64_t before = now(&f);
    ev_fake_clock_advance(f.fc, SEC);
    bool absorbed = false;
    CU_ASSERT_DOUBLE_EQUAL(say(&f, false, true, 0, before, &absorbed), 8.91, 1e-9);
    CU_ASSERT_TRUE(absorbed);
    /* Calls released before the decrease: their 429s are absorbed, the rate
     * stays, and their successes do not raise it either. */
    for (int i = 0; i < 5; i++) {
        absorbed = false;
        CU_ASSERT_DOUBLE_EQUAL(say(&f, false, true, 0, before, &absorbed), 8.91, 1e-9);
        CU_ASSERT_TRUE(absorbed);
    }
    ev_fake_clock_advance(f.fc, SEC / 2);
    CU_ASSERT_DOUBLE_EQUAL(say(&f, true, false, 0, before, NULL), 8.91, 1e-9);
    /* A call released after the decrease that is refused lowers again. */
    CU_ASSERT_DOUBLE_EQUAL(say(&f, false, true, 0, now(&f), NULL), 8.019, 1e-9);
    ev_adaptive_stats_t st;
    ev_adaptive_stats(f.a, &st);
    CU_ASSERT_EQUAL(st.decreases, 2);
    CU_ASSERT_EQUAL(st.absorbed, 5);
    destroy(&f);
}

static void test_success_raises_additively_to_hold_then_ceiling(void)
{
    fixture_t f = make(10, 30 * SEC);
    say(&f, false, true, 0, now(&f), NULL); /* 9.9 -> 8.91, hold cap 9.6525 */
    /* 2 % of the ceiling per second of success: +0.2 per second. */
    for (int i = 0; i < 2; i++) {
        ev_fake_clock_advance(f.fc, SEC);
        say(&f, true, false, 0, now(&f), NULL);
    }
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_rate_per_s(f.a), 9.31, 1e-9);
    /* Held just under the rate of the 429 until the hold ends ... */
    for (int i = 0; i < 20; i++) {
        ev_fake_clock_advance(f.fc, SEC);
        say(&f, true, false, 0, now(&f), NULL);
    }
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_rate_per_s(f.a), 9.6525, 1e-9);
    /* ... then it probes up to 1 % under the ceiling. */
    for (int i = 0; i < 20; i++) {
        ev_fake_clock_advance(f.fc, SEC);
        say(&f, true, false, 0, now(&f), NULL);
    }
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_rate_per_s(f.a), 9.9, 1e-9);
    /* A long lull counts as at most one second of success. */
    say(&f, false, true, 0, now(&f), NULL);
    ev_fake_clock_advance(f.fc, 3600 * SEC);
    CU_ASSERT_DOUBLE_EQUAL(say(&f, true, false, 0, now(&f), NULL), 9.11, 1e-9);
    destroy(&f);
}

static void test_stated_limit_is_adopted_at_once(void)
{
    fixture_t f = make(20, 60 * SEC);
    /* Gemini: quotaValue 600 per minute = 10 per second: 1 % under it. */
    CU_ASSERT_DOUBLE_EQUAL(say(&f, false, true, 600, now(&f), NULL), 9.9, 1e-9);
    ev_adaptive_stats_t st;
    ev_adaptive_stats(f.a, &st);
    CU_ASSERT_DOUBLE_EQUAL(st.stated_per_min, 600, 1e-9);
    /* Held there while the hold lasts ... */
    for (int i = 0; i < 59; i++) {
        ev_fake_clock_advance(f.fc, SEC);
        CU_ASSERT_DOUBLE_EQUAL(say(&f, true, false, 0, now(&f), NULL), 9.9, 1e-9);
    }
    /* ... then probes for a quota that came back, up to the ceiling. */
    for (int i = 0; i < 60; i++) {
        ev_fake_clock_advance(f.fc, SEC);
        say(&f, true, false, 0, now(&f), NULL);
    }
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_rate_per_s(f.a), 19.8, 1e-9);
    /* A 429 under the stated limit steps down, not below 90 % of it. */
    CU_ASSERT_DOUBLE_EQUAL(say(&f, false, true, 600, now(&f), NULL), 9.9, 1e-9);
    ev_fake_clock_advance(f.fc, SEC);
    CU_ASSERT_DOUBLE_EQUAL(say(&f, false, true, 600, now(&f), NULL), 9, 1e-9);
    ev_fake_clock_advance(f.fc, SEC);
    CU_ASSERT_DOUBLE_EQUAL(say(&f, false, true, 600, now(&f), NULL), 9, 1e-9);

    /* A stated limit at or above the ceiling: a 429 under it steps down,
     * then the rate comes back to 1 % under the ceiling and stays. */
    fixture_t g = make(5, 60 * SEC);
    CU_ASSERT_DOUBLE_EQUAL(say(&g, false, true, 6000, now(&g), NULL), 4.5, 1e-9);
    for (int i = 0; i < 300; i++) {
        ev_fake_clock_advance(g.fc, SEC);
        CU_ASSERT(say(&g, true, false, 0, now(&g), NULL) <= 4.95 + 1e-9);
    }
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_rate_per_s(g.a), 4.95, 1e-9);
    destroy(&g);
    destroy(&f);
}

static void test_floor_429_is_not_absorbed(void)
{
    fixture_t f = make(10, 60 * SEC);
    bool absorbed = true;
    for (int i = 0; i < 200; i++)
        say(&f, false, true, 0, now(&f), &absorbed);
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_rate_per_s(f.a), 0.2, 1e-9);
    CU_ASSERT_FALSE(absorbed);
    destroy(&f);
}

static void test_header_pace_caps_the_rate(void)
{
    fixture_t f = make(10, 60 * SEC);
    ev_adaptive_signal_t s = EV_ADAPTIVE_SIGNAL_INIT;
    s.ok = true;
    s.released_us = now(&f);
    s.remaining_requests = 120; /* 120 calls left for the next 60 s: 2 per second */
    s.reset_requests_ms = 60000;
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_observe(f.a, &s, NULL), 2, 1e-9);
    s.remaining_requests = 14000; /* plenty: the learned rate decides again */
    s.reset_requests_ms = 1000;
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_observe(f.a, &s, NULL), 9.9, 1e-9);
    /* Without headers the last pace expires with the hold. */
    s.remaining_requests = 60;
    s.reset_requests_ms = 60000;
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_observe(f.a, &s, NULL), 1, 1e-9);
    ev_fake_clock_advance(f.fc, 61 * SEC);
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_rate_per_s(f.a), 9.9, 1e-9);
    destroy(&f);
}

/* A rate another replica learned (through the shared rate row) becomes
 * ours: lower, with a hold there; higher, within the top. */
static void test_adopt(void)
{
    fixture_t f = make(10, 60 * SEC);
    ev_adaptive_adopt(f.a, 4);
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_rate_per_s(f.a), 4, 1e-9);
    for (int i = 0; i < 30; i++) {
        ev_fake_clock_advance(f.fc, SEC);
        CU_ASSERT_DOUBLE_EQUAL(say(&f, true, false, 0, now(&f), NULL), 4, 1e-9);
    }
    ev_adaptive_adopt(f.a, 50);
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_rate_per_s(f.a), 9.9, 1e-9);
    ev_adaptive_adopt(f.a, 0);
    CU_ASSERT_DOUBLE_EQUAL(ev_adaptive_rate_per_s(f.a), 9.9, 1e-9);
    destroy(&f);
}

/* ---------- closed loop against a sliding-window provider ---------- */

#define WORKERS 6
#define MAX_WIN 100000

typedef struct {
    /* the provider */
    double real_per_s;  /* its quota */
    int64_t window_us;  /* its sliding window */
    bool states_limit;  /* whether its 429 says the limit */
    int64_t latency_us; /* answer time */
    int64_t *admitted;  /* ring of admission times */
    size_t head, len;
    /* the client */
    ev_fake_clock_t *fc;
    ev_limiter_t *lim;
    ev_adaptive_t *a;
    double ceiling_per_s;
    /* what happened, per second of the run */
    int64_t start_us;
    int secs;
    int *ok_at, *r429_at, *released_at;
    double max_rate;
} loop_t;

static void loop_init(loop_t *l, double ceiling_per_s, double real_per_s, bool states, int secs)
{
    memset(l, 0, sizeof(*l));
    l->real_per_s = real_per_s;
    l->window_us = 10 * SEC;
    l->states_limit = states;
    l->latency_us = 200000;
    l->admitted = ev_calloc(MAX_WIN, sizeof(int64_t));
    l->ceiling_per_s = ceiling_per_s;
    l->secs = secs;
    l->ok_at = ev_calloc((size_t)secs, sizeof(int));
    l->r429_at = ev_calloc((size_t)secs, sizeof(int));
    l->released_at = ev_calloc((size_t)secs, sizeof(int));
    l->start_us = 1000 * SEC;
    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&l->fc, l->start_us, 0), 0);
    const ev_clock_t *c = ev_fake_clock_get(l->fc);
    ev_limiter_options_t lo = EV_LIMITER_OPTIONS_INIT;
    lo.rpm = ceiling_per_s * 60;
    lo.safety_factor = 1;
    CU_ASSERT_EQUAL_FATAL(ev_limiter_new(&l->lim, &lo, c), 0);
    ev_adaptive_options_t ao = EV_ADAPTIVE_OPTIONS_INIT;
    ao.ceiling_per_s = ceiling_per_s;
    CU_ASSERT_EQUAL_FATAL(ev_adaptive_new(&l->a, &ao, c), 0);
}

static void loop_free(loop_t *l)
{
    ev_adaptive_free(l->a);
    ev_limiter_free(l->lim);
    ev_fake_clock_free(l->fc);
    free(l->admitted);
    free(l->ok_at);
    free(l->r429_at);
    free(l->released_at);
}

/* The provider's sliding window: admits, or says how long until it would. */
static bool provider_admit(loop_t *l, int64_t t, int64_t *retry_us)
{
    int64_t cap = (int64_t)(l->real_per_s * (double)l->window_us / 1e6);
    while (l->len > 0 && l->admitted[l->head] <= t - l->window_us) {
        l->head = (l->head + 1) % MAX_WIN;
        l->len--;
    }
    if ((int64_t)l->len >= cap) {
        *retry_us = l->admitted[l->head] + l->window_us - t;
        return false;
    }
    l->admitted[(l->head + l->len) % MAX_WIN] = t;
    l->len++;
    return true;
}

typedef enum { W_SLOT, W_SEND, W_ANSWER } wphase_t;

typedef struct {
    wphase_t phase;
    int64_t at, released;
    bool ok;
    int64_t retry_us;
} worker_t;

/* One event of a worker at its time `w->at` (the clock is already there). */
static void worker_step(loop_t *l, worker_t *w)
{
    int64_t t = w->at;
    int sec = (int)((t - l->start_us) / SEC);
    switch (w->phase) {
    case W_SLOT: {
        ev_limiter_reservation_t r;
        CU_ASSERT_EQUAL(ev_limiter_reserve(l->lim, &r, -1), 0);
        w->at = EV_MAX(t, r.wake_us);
        w->phase = W_SEND;
        break;
    }
    case W_SEND:
        w->released = t;
        if (sec < l->secs)
            l->released_at[sec]++;
        w->ok = provider_admit(l, t, &w->retry_us);
        w->at = t + l->latency_us;
        w->phase = W_ANSWER;
        break;
    case W_ANSWER: {
        ev_adaptive_signal_t s = EV_ADAPTIVE_SIGNAL_INIT;
        s.released_us = w->released;
        s.ok = w->ok;
        s.rate_limited = !w->ok;
        s.stated_per_min = l->states_limit ? l->real_per_s * 60 : 0;
        double rate = ev_adaptive_observe(l->a, &s, NULL);
        l->max_rate = EV_MAX(l->max_rate, rate);
        CU_ASSERT_EQUAL(ev_limiter_set_rate(l->lim, rate), 0);
        if (!w->ok)
            ev_limiter_pause_until(l->lim, t + EV_MAX(w->retry_us, (int64_t)1000));
        if (sec < l->secs)
            (w->ok ? l->ok_at : l->r429_at)[sec]++;
        w->phase = W_SLOT;
        break;
    }
    }
}

/* Runs until second `to` of the run; `change` (may be NULL) is called at each
 * whole second to change the provider. */
static void loop_run(loop_t *l, int to, void (*change)(loop_t *, int))
{
    static worker_t w[WORKERS];
    static int64_t next_sec;
    if (ev_clock_now_us(ev_fake_clock_get(l->fc)) == l->start_us) {
        for (int i = 0; i < WORKERS; i++)
            w[i] = (worker_t){.phase = W_SLOT, .at = l->start_us + i * 1000};
        next_sec = 0;
    }
    for (;;) {
        int k = 0;
        for (int i = 1; i < WORKERS; i++)
            if (w[i].at < w[k].at)
                k = i;
        int64_t t = w[k].at;
        while (change && l->start_us + next_sec * SEC <= t) {
            change(l, (int)next_sec);
            next_sec++;
        }
        if (t >= l->start_us + (int64_t)to * SEC)
            return;
        ev_fake_clock_set(l->fc, t);
        worker_step(l, &w[k]);
    }
}

static void sum(const loop_t *l, int from, int to, int64_t *ok, int64_t *r429)
{
    *ok = *r429 = 0;
    for (int s = from; s < to && s < l->secs; s++) {
        *ok += l->ok_at[s];
        *r429 += l->r429_at[s];
    }
    if (getenv("EV_TEST_TRACE"))
        fprintf(stderr, "  [%d, %d): %lld ok, %lld 429\n", from, to, (long long)*ok,
                (long long)*r429);
}

/* Most calls released in any 10 s (on whole seconds). */
static int max_released_10s(const loop_t *l, int from, int to)
{
    int best = 0;
    for (int s = from; s + 10 <= to; s++) {
        int n = 0;
        for (int i = s; i < s + 10; i++)
            n += l->released_at[i];
        best = EV_MAX(best, n);
    }
    return best;
}

static void test_loop_exact_ceiling(void)
{
    loop_t l;
    loop_init(&l, 10, 10, true, 300);
    loop_run(&l, 300, NULL);
    int64_t ok, r429;
    sum(&l, 0, 300, &ok, &r429);
    CU_ASSERT(l.max_rate <= 10 + 1e-9);
    CU_ASSERT(ok >= (int64_t)(0.97 * 10 * 300));
    CU_ASSERT(r429 * 1000 <= ok + r429);
    CU_ASSERT(max_released_10s(&l, 0, 300) <= 10 * 10 + 2);
    loop_free(&l);
}

static void check_overestimated(bool states)
{
    loop_t l;
    loop_init(&l, 20, 10, states, 600);
    loop_run(&l, 600, NULL);
    int64_t ok, r429;
    sum(&l, 30, 600, &ok, &r429);
    double secs = 570;
    CU_ASSERT(l.max_rate <= 20 + 1e-9);
    /* After 30 s: at least 90 % of the real quota, at most 2 % 429s. */
    CU_ASSERT(ok >= (int64_t)(0.9 * 10 * secs));
    CU_ASSERT(r429 * 50 <= ok + r429);
    /* No 429 storm anywhere after the start: at most a few per 10 s. */
    for (int s = 30; s + 10 <= 600; s += 10) {
        int64_t o, r;
        sum(&l, s, s + 10, &o, &r);
        CU_ASSERT(r <= 8);
    }
    loop_free(&l);
}

static void test_loop_overestimated_stated(void)
{
    check_overestimated(true);
}

static void test_loop_overestimated_unstated(void)
{
    check_overestimated(false);
}

/* The quota halves at 100 s and comes back at 250 s. */
static void quota_cut(loop_t *l, int sec)
{
    if (sec == 100)
        l->real_per_s = 5;
    if (sec == 250)
        l->real_per_s = 10;
}

static void test_loop_quota_cut_and_back(void)
{
    for (int stated = 0; stated <= 1; stated++) {
        loop_t l;
        loop_init(&l, 10, 10, stated, 450);
        loop_run(&l, 450, quota_cut);
        int64_t ok, r429;
        /* Follows it down: 20 s after the cut, under the new quota with few
         * 429s; close to it when the provider states its limit (without, the
         * 429s of its draining window are read as a still lower limit). */
        sum(&l, 120, 250, &ok, &r429);
        CU_ASSERT(ok >= (int64_t)((stated ? 0.9 : 0.6) * 5 * 130));
        CU_ASSERT(ok <= 5 * 130 + 50);
        CU_ASSERT(r429 * 20 <= ok + r429);
        /* And back up within the hold plus the climb. */
        sum(&l, 400, 450, &ok, &r429);
        CU_ASSERT(ok >= (int64_t)(0.9 * 10 * 50));
        loop_free(&l);
    }
}

static const ev_test_t rule_tests[] = {
    {"invalid options", test_invalid_options},
    {"starts at the ceiling and never goes above", test_starts_at_ceiling_and_never_above},
    {"a 429 lowers by 10 % once per epoch", test_429_lowers_by_ten_percent_once_per_epoch},
    {"success raises additively, held under the last 429",
     test_success_raises_additively_to_hold_then_ceiling},
    {"a stated limit is adopted at once", test_stated_limit_is_adopted_at_once},
    {"a 429 at the floor is not absorbed", test_floor_429_is_not_absorbed},
    {"header pace caps the rate", test_header_pace_caps_the_rate},
    {"a rate learned by another replica is adopted", test_adopt},
    EV_TEST_END,
};

static const ev_test_t loop_tests[] = {
    {"ceiling = real quota: >= 97 %, <= 1 429 per 1000", test_loop_exact_ceiling},
    {"ceiling 2x, limit stated: converges, <= 2 % 429s", test_loop_overestimated_stated},
    {"ceiling 2x, limit not stated: converges, <= 2 % 429s", test_loop_overestimated_unstated},
    {"quota halves and returns: the rate follows", test_loop_quota_cut_and_back},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"adaptive rules", NULL, NULL, rule_tests, NULL, NULL},
    {"adaptive closed loop", NULL, NULL, loop_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
