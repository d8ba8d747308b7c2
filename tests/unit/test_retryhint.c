/*
 * test_retryhint.c - the delays providers suggest are read exactly (rounded
 * up, never shorter than asked), and no input, however broken, crashes a
 * parser or yields a bogus hint.
 */
#include "ev/error.h"
#include "ev/retryhint.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

static int64_t ms;

static int64_t gem(const char *s)
{
    return ev_retryhint_gemini_delay(&ms, s) == 0 ? ms : -100;
}
static int64_t ra(const char *s)
{
    return ev_retryhint_retry_after(&ms, s) == 0 ? ms : -100;
}
static int64_t dur(const char *s)
{
    return ev_retryhint_duration(&ms, s) == 0 ? ms : -100;
}
static int64_t msg(const char *s)
{
    return ev_retryhint_from_message(&ms, s) == 0 ? ms : -100;
}

static void test_gemini_delay(void)
{
    CU_ASSERT_EQUAL(gem("26s"), 26000);
    CU_ASSERT_EQUAL(gem("1.5s"), 1500);
    CU_ASSERT_EQUAL(gem("0.5s"), 500);
    CU_ASSERT_EQUAL(gem("0s"), 0);
    CU_ASSERT_EQUAL(gem(" 3s "), 3000);
    CU_ASSERT_EQUAL(gem("53.013523458s"), 53014); /* rounded up */
    CU_ASSERT_EQUAL(gem("0.000000001s"), 1);
    CU_ASSERT_EQUAL(gem(".5s"), 500);
    /* Saturates instead of overflowing. */
    CU_ASSERT_EQUAL(gem("99999999999999999999999999s"), EV_RETRYHINT_MAX_MS);

    const char *bad[] = {"",    "s",    "26",  "-1s",   "+1s",   "1.5", "1.5ms",       "1m",
                         "abc", "1s1s", "1 s", "1..5s", "1.5.s", ".s",  "26s garbage", "0x10s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ms = 42;
        CU_ASSERT_EQUAL(ev_retryhint_gemini_delay(&ms, bad[i]), EV_EPARSE);
        CU_ASSERT_EQUAL(ms, -1);
    }
    CU_ASSERT_EQUAL(ev_retryhint_gemini_delay(&ms, NULL), EV_EINVAL);
    CU_ASSERT_EQUAL(ms, -1);
}

static void test_retry_after(void)
{
    CU_ASSERT_EQUAL(ra("2"), 2000);
    CU_ASSERT_EQUAL(ra("2.5"), 2500);
    CU_ASSERT_EQUAL(ra("0"), 0);
    CU_ASSERT_EQUAL(ra(" 17 "), 17000);
    CU_ASSERT_EQUAL(ra("0.0011"), 2); /* 1.1 ms -> 2 ms: never shorter */
    CU_ASSERT_EQUAL(ra("120"), 120000);

    /* HTTP-dates are accepted but give no relative hint. */
    CU_ASSERT_EQUAL(ev_retryhint_retry_after(&ms, "Wed, 21 Oct 2015 07:28:00 GMT"), 0);
    CU_ASSERT_EQUAL(ms, -1);
    CU_ASSERT_EQUAL(ev_retryhint_retry_after(&ms, "Sunday, 06-Nov-94 08:49:37 GMT"), 0);
    CU_ASSERT_EQUAL(ms, -1);
    CU_ASSERT_EQUAL(ev_retryhint_retry_after(&ms, "Sun Nov  6 08:49:37 1994"), 0);
    CU_ASSERT_EQUAL(ms, -1);

    const char *bad[] = {"",
                         " ",
                         "-1",
                         "soon",
                         "2s",
                         "2 seconds",
                         "1e3",
                         "Wed, garbage",
                         "Wed, 21 Oct 2015 07:28:00 GMT trailing",
                         "NaN",
                         "inf"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ms = 42;
        CU_ASSERT_EQUAL(ev_retryhint_retry_after(&ms, bad[i]), EV_EPARSE);
        CU_ASSERT_EQUAL(ms, -1);
    }
    CU_ASSERT_EQUAL(ev_retryhint_retry_after(&ms, NULL), EV_EINVAL);
}

static void test_duration(void)
{
    CU_ASSERT_EQUAL(dur("2m59.56s"), 179560);
    CU_ASSERT_EQUAL(dur("7.66s"), 7660);
    CU_ASSERT_EQUAL(dur("120ms"), 120);
    CU_ASSERT_EQUAL(dur("1h2m3s"), 3723000);
    CU_ASSERT_EQUAL(dur("0"), 0);
    CU_ASSERT_EQUAL(dur("0s"), 0);
    CU_ASSERT_EQUAL(dur("1.5h"), 5400000);
    CU_ASSERT_EQUAL(dur("250us"), 1);         /* rounded up to a whole ms */
    CU_ASSERT_EQUAL(dur("2500\xC2\xB5s"), 3); /* micro sign */
    CU_ASSERT_EQUAL(dur("999999ns"), 1);
    CU_ASSERT_EQUAL(dur("1.0000001ms"), 2);
    CU_ASSERT_EQUAL(dur("24h"), 86400000);
    CU_ASSERT_EQUAL(dur("100000000h"), EV_RETRYHINT_MAX_MS);
    CU_ASSERT_EQUAL(dur(" 7.66s\r\n"), 7660);

    const char *bad[] = {"",    "5",    "s",    "ms", "1x",        "1m30",   "-5s",  "1s-",
                         "1 s", "1.s.", "..5s", "h",  "\xC2\xB5s", "1\xC2s", "5 ms", "1d"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ms = 42;
        CU_ASSERT_EQUAL(ev_retryhint_duration(&ms, bad[i]), EV_EPARSE);
        CU_ASSERT_EQUAL(ms, -1);
    }
    CU_ASSERT_EQUAL(ev_retryhint_duration(&ms, NULL), EV_EINVAL);
}

static void test_message(void)
{
    CU_ASSERT_EQUAL(msg("Quota exceeded for metric: x, limit: 10, model: gemini-2.5-flash\n"
                        "Please retry in 53.01s."),
                    53010);
    CU_ASSERT_EQUAL(msg("Rate limit reached for model `meta-llama/llama-4-scout` on requests per "
                        "minute (RPM): Limit 30, Used 30, Requested 1. Please try again in 2.5s. "
                        "Need more tokens?"),
                    2500);
    CU_ASSERT_EQUAL(msg("... tokens per day (TPD): Limit 500000. Please try again in 2m59.56s."),
                    179560);
    CU_ASSERT_EQUAL(msg("PLEASE TRY AGAIN IN 120ms"), 120);
    /* A phrase without a parsable duration is skipped for a later one. */
    CU_ASSERT_EQUAL(msg("retry in a moment; otherwise retry in 4s."), 4000);

    const char *none[] = {"",
                          "Internal error",
                          "retry in",
                          "retry in .",
                          "try again in soon.",
                          "try again in 5 seconds",
                          "retry in -3s",
                          "retry in s"};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        ms = 42;
        CU_ASSERT_EQUAL(ev_retryhint_from_message(&ms, none[i]), EV_ENOTFOUND);
        CU_ASSERT_EQUAL(ms, -1);
    }
    CU_ASSERT_EQUAL(ev_retryhint_from_message(&ms, NULL), EV_EINVAL);
}

/* Random and adversarial inputs: every parser returns a code and either
 * -1 or a value within [0, MAX]. ASan/UBSan builds catch any overread. */
static void test_garbage_never_crashes(void)
{
    static const char alphabet[] = "0123456789.smhun \xC2\xB5\xCE\xBC-+:,GMTretryin";
    uint32_t seed = 12345;
    char buf[64];
    for (int iter = 0; iter < 200000; iter++) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % (sizeof(buf) - 1);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (seed >> 20) & 1 ? alphabet[(seed >> 8) % (sizeof(alphabet) - 1)]
                                      : (char)((seed >> 8) & 0xff);
            if (buf[i] == '\0')
                buf[i] = '9';
        }
        buf[len] = '\0';
        int (*fns[])(int64_t *, const char *) = {ev_retryhint_gemini_delay,
                                                 ev_retryhint_retry_after, ev_retryhint_duration,
                                                 ev_retryhint_from_message};
        for (size_t f = 0; f < 4; f++) {
            int64_t v = 42;
            int rc = fns[f](&v, buf);
            if (rc == 0) {
                if (!(v == -1 || (v >= 0 && v <= EV_RETRYHINT_MAX_MS)))
                    CU_FAIL("hint out of range");
            } else if (v != -1) {
                CU_FAIL("failed parse left a hint");
            }
        }
    }
    /* Long runs of digits and fraction digits. */
    char big[4096];
    memset(big, '9', sizeof(big) - 2);
    big[sizeof(big) - 2] = 's';
    big[sizeof(big) - 1] = '\0';
    CU_ASSERT_EQUAL(gem(big), EV_RETRYHINT_MAX_MS);
    big[1] = '.';
    CU_ASSERT_EQUAL(dur(big), 10000); /* 9.999...s rounds up to 10 s */
}

static const ev_test_t retryhint_tests[] = {
    {"gemini retryDelay", test_gemini_delay},
    {"retry-after header", test_retry_after},
    {"groq durations", test_duration},
    {"phrases in messages", test_message},
    {"garbage never crashes", test_garbage_never_crashes},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"retryhint", NULL, NULL, retryhint_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
