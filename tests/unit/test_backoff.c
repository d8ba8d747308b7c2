/*
 * test_backoff.c - retry delays (SPEC §3 RETRY_*, §6; PROVIDERS.md pitfall 1).
 *
 * What a user relies on: retries back off exponentially up to RETRY_MAX_MS,
 * are spread (full jitter) so threads do not retry in lockstep, and never
 * come back sooner than the provider asked. Random draws are injected, so
 * every assertion is deterministic.
 */
#include "ev/backoff.h"
#include "ev/clock.h"
#include "ev/error.h"

#include <CUnit/Basic.h>
#include <stdatomic.h>
#include <stdbool.h>
#include "runner.h"

/* Constant "random" value. */
static double fixed_rand(void *ctx)
{
    return *(const double *)ctx;
}

/* Seeded xorshift, uniform in [0, 1). */
static double seeded_rand(void *ctx)
{
    uint64_t *s = ctx;
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return (double)(x >> 11) / 9007199254740992.0;
}

static ev_backoff_options_t opts_fixed(const double *u)
{
    ev_backoff_options_t o = EV_BACKOFF_OPTIONS_INIT;
    o.rand01 = fixed_rand;
    o.rand_ctx = (void *)u;
    return o;
}

static void test_options_check(void)
{
    ev_backoff_options_t o = EV_BACKOFF_OPTIONS_INIT;
    CU_ASSERT_EQUAL(ev_backoff_options_check(&o), 0);
    o.base_ms = 0;
    CU_ASSERT_EQUAL(ev_backoff_options_check(&o), EV_EINVAL);
    o = (ev_backoff_options_t)EV_BACKOFF_OPTIONS_INIT;
    o.max_ms = 500;
    CU_ASSERT_EQUAL(ev_backoff_options_check(&o), EV_EINVAL);
    o = (ev_backoff_options_t)EV_BACKOFF_OPTIONS_INIT;
    o.hint_jitter_ms = -1;
    CU_ASSERT_EQUAL(ev_backoff_options_check(&o), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_backoff_options_check(NULL), EV_EINVAL);
}

/* base 1000, cap 60000: 1, 2, 4, ... 32 s, then 60 s for ever. */
static void test_ceiling_and_cap(void)
{
    ev_backoff_options_t o = EV_BACKOFF_OPTIONS_INIT;
    const int64_t expect[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000};
    for (int a = 0; a < 8; a++)
        CU_ASSERT_EQUAL(ev_backoff_ceiling_ms(&o, a), expect[a]);
    CU_ASSERT_EQUAL(ev_backoff_ceiling_ms(&o, -3), 1000);
    CU_ASSERT_EQUAL(ev_backoff_ceiling_ms(&o, 1000), 60000);
    CU_ASSERT_EQUAL(ev_backoff_ceiling_ms(&o, 2147483647), 60000);
    /* A huge cap does not overflow. */
    o.max_ms = INT64_MAX;
    CU_ASSERT_EQUAL(ev_backoff_ceiling_ms(&o, 10), 1024000);
    CU_ASSERT_TRUE(ev_backoff_ceiling_ms(&o, 200) > 0);
}

/* Full jitter spans exactly [0, ceiling]. */
static void test_full_jitter_bounds(void)
{
    const double lo = 0.0, hi = 0.9999999999, mid = 0.5;
    ev_backoff_options_t o;
    for (int a = 0; a < 10; a++) {
        o = opts_fixed(&lo);
        CU_ASSERT_EQUAL(ev_backoff_delay_ms(&o, a, 0), 0);
        o = opts_fixed(&hi);
        CU_ASSERT_EQUAL(ev_backoff_delay_ms(&o, a, 0), ev_backoff_ceiling_ms(&o, a));
        o = opts_fixed(&mid);
        int64_t d = ev_backoff_delay_ms(&o, a, 0);
        CU_ASSERT_TRUE(d >= ev_backoff_ceiling_ms(&o, a) / 2 - 1 &&
                       d <= ev_backoff_ceiling_ms(&o, a) / 2 + 1);
    }
    /* Random draws: always in range, spread over it (mean near the middle). */
    uint64_t seed = 12345;
    o = (ev_backoff_options_t)EV_BACKOFF_OPTIONS_INIT;
    o.rand01 = seeded_rand;
    o.rand_ctx = &seed;
    double sum = 0;
    int64_t mn = INT64_MAX, mx = 0;
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        int64_t d = ev_backoff_delay_ms(&o, 3, 0);
        CU_ASSERT_TRUE(d >= 0 && d <= 8000);
        sum += (double)d;
        mn = d < mn ? d : mn;
        mx = d > mx ? d : mx;
    }
    CU_ASSERT_TRUE(sum / n > 3800 && sum / n < 4200);
    CU_ASSERT_TRUE(mn < 100);
    CU_ASSERT_TRUE(mx > 7900);
    /* The default source also stays in range. */
    ev_backoff_options_t d = EV_BACKOFF_OPTIONS_INIT;
    for (int i = 0; i < 1000; i++) {
        int64_t v = ev_backoff_delay_ms(&d, 20, 0);
        CU_ASSERT_TRUE(v >= 0 && v <= 60000);
    }
}

/* The server's delay is a floor, plus a little spread on top. */
static void test_hint_honoured(void)
{
    const double lo = 0.0, hi = 0.9999999999;
    ev_backoff_options_t o = opts_fixed(&lo);
    /* Gemini RetryInfo "26s" on the first retry: at least 26 s, not 0-1 s. */
    CU_ASSERT_EQUAL(ev_backoff_delay_ms(&o, 0, 26000), 26000);
    o = opts_fixed(&hi);
    CU_ASSERT_EQUAL(ev_backoff_delay_ms(&o, 0, 26000), 27000);
    /* A hint longer than max_ms is still honoured. */
    o = opts_fixed(&lo);
    CU_ASSERT_EQUAL(ev_backoff_delay_ms(&o, 0, 90000), 90000);
    /* A tiny hint gets at most its own size on top. */
    o = opts_fixed(&hi);
    CU_ASSERT_EQUAL(ev_backoff_delay_ms(&o, 0, 200), 1000); /* full jitter 1000 wins */
    o.base_ms = 1;
    o.max_ms = 1;
    CU_ASSERT_EQUAL(ev_backoff_delay_ms(&o, 0, 200), 400);
    /* When exponential backoff is already longer, it wins. */
    o = opts_fixed(&hi);
    CU_ASSERT_EQUAL(ev_backoff_delay_ms(&o, 5, 1500), 32000);

    /* Many threads with the same hint do not come back together. */
    uint64_t seed = 99;
    o = (ev_backoff_options_t)EV_BACKOFF_OPTIONS_INIT;
    o.rand01 = seeded_rand;
    o.rand_ctx = &seed;
    int64_t mn = INT64_MAX, mx = 0;
    for (int i = 0; i < 5000; i++) {
        int64_t d = ev_backoff_delay_ms(&o, 0, 5000);
        CU_ASSERT_TRUE(d >= 5000 && d <= 6000);
        mn = d < mn ? d : mn;
        mx = d > mx ? d : mx;
    }
    CU_ASSERT_TRUE(mx - mn > 900);
    /* hint_jitter_ms 0: exactly the hint. */
    o.hint_jitter_ms = 0;
    CU_ASSERT_EQUAL(ev_backoff_delay_ms(&o, 0, 5000), 5000);
}

static void test_deterministic_with_seed(void)
{
    uint64_t s1 = 777, s2 = 777;
    ev_backoff_options_t a = EV_BACKOFF_OPTIONS_INIT, b = EV_BACKOFF_OPTIONS_INIT;
    a.rand01 = seeded_rand;
    a.rand_ctx = &s1;
    b.rand01 = seeded_rand;
    b.rand_ctx = &s2;
    for (int i = 0; i < 100; i++)
        CU_ASSERT_EQUAL(ev_backoff_delay_ms(&a, i % 8, i % 3 ? 0 : 3000),
                        ev_backoff_delay_ms(&b, i % 8, i % 3 ? 0 : 3000));
}

static void test_sleep(void)
{
    ev_fake_clock_t *fc = NULL;
    atomic_bool stop;

    atomic_init(&stop, false);
    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 1000, 0), 0);
    const ev_clock_t *c = ev_fake_clock_get(fc);
    CU_ASSERT_EQUAL(ev_backoff_sleep(c, 2500, &stop), 0);
    CU_ASSERT_EQUAL(ev_clock_now_us(c), 1000 + 2500000);
    CU_ASSERT_EQUAL(ev_backoff_sleep(c, 0, NULL), 0);
    CU_ASSERT_EQUAL(ev_clock_now_us(c), 1000 + 2500000);
    atomic_store(&stop, true);
    CU_ASSERT_EQUAL(ev_backoff_sleep(c, 60000, &stop), EV_ESHUTDOWN);
    CU_ASSERT_EQUAL(ev_clock_now_us(c), 1000 + 2500000);
    ev_fake_clock_free(fc);
}

static const ev_test_t backoff_tests[] = {
    {"options check", test_options_check},
    {"ceiling doubles up to the cap", test_ceiling_and_cap},
    {"full jitter bounds", test_full_jitter_bounds},
    {"server hint honoured plus spread", test_hint_honoured},
    {"deterministic with a seed", test_deterministic_with_seed},
    {"sleep on the clock, stop", test_sleep},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"backoff", NULL, NULL, backoff_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
