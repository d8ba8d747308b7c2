/*
 * test_router.c - the call path of SPEC §6 against the provider simulator,
 * and the "next midnight Pacific" calendar rule behind the daily-quota
 * cool-down.
 *
 * Midnight: fixed winter, summer and DST-switch-day cases, then every
 * 37 minutes of 2020-2030 compared with the system's tz database
 * (America/Los_Angeles via mktime).
 *
 * Call path: retries never exceed MAX_RETRIES (also when full jitter draws a
 * zero delay), the retry budget caps retries, a 429's RetryInfo is waited
 * for (the sim would answer a too-early retry with another 429), a 429 whose
 * hint is too long pauses the whole provider (the next caller falls back
 * without asking), a bad answer is asked again once, the call budget and the
 * stop flag end a call, an invalid key disables the provider, and a daily
 * quota cools it down exactly until midnight Pacific (driven by a fake
 * clock).
 */
#include "ev/budget.h"
#include "ev/clock.h"
#include "ev/config.h"
#include "ev/error.h"
#include "ev/http.h"
#include "ev/availability.h"
#include "ev/providers.h"
#include "ev/router.h"
#include "ev/stats.h"
#include "ev/util.h"

#include "simctl.h"

#include <CUnit/Basic.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "runner.h"

#define US 1000000LL

static simctl_t *sim;
static ev_http_t *http, *http2;

/* ---- next midnight Pacific -------------------------------------------------------- */

static int64_t utc_us(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = s};
    return (int64_t)timegm(&tm) * US;
}

static void expect_midnight(int64_t now_us, int64_t want_us)
{
    int64_t got = ev_gemini_next_pacific_midnight(now_us);
    if (got != want_us)
        fprintf(stderr, "\n  next midnight after %lld: got %lld, expected %lld\n",
                (long long)(now_us / US), (long long)(got / US), (long long)(want_us / US));
    CU_ASSERT_EQUAL(got, want_us);
}

static void test_midnight_fixed_days(void)
{
    /* Winter (PST, UTC-8): midnight is 08:00 UTC. */
    expect_midnight(utc_us(2024, 1, 15, 12, 0, 0), utc_us(2024, 1, 16, 8, 0, 0));
    expect_midnight(utc_us(2024, 1, 16, 7, 59, 59), utc_us(2024, 1, 16, 8, 0, 0));
    expect_midnight(utc_us(2024, 1, 16, 8, 0, 0),
                    utc_us(2024, 1, 17, 8, 0, 0)); /* strictly after */
    expect_midnight(utc_us(2024, 1, 16, 8, 0, 0) - 1, utc_us(2024, 1, 16, 8, 0, 0));
    expect_midnight(utc_us(2025, 1, 1, 3, 0, 0), utc_us(2025, 1, 1, 8, 0, 0)); /* New Year's Eve */
    /* Summer (PDT, UTC-7): 07:00 UTC. */
    expect_midnight(utc_us(2024, 7, 15, 12, 0, 0), utc_us(2024, 7, 16, 7, 0, 0));
    expect_midnight(utc_us(2024, 7, 16, 6, 30, 0), utc_us(2024, 7, 16, 7, 0, 0));
    /* 10 March 2024, clocks go forward at 02:00 PST. */
    expect_midnight(utc_us(2024, 3, 9, 20, 0, 0), utc_us(2024, 3, 10, 8, 0, 0));
    expect_midnight(utc_us(2024, 3, 10, 9, 0, 0), utc_us(2024, 3, 11, 7, 0, 0));  /* 01:00 PST */
    expect_midnight(utc_us(2024, 3, 10, 11, 0, 0), utc_us(2024, 3, 11, 7, 0, 0)); /* 04:00 PDT */
    /* 3 November 2024, clocks go back at 02:00 PDT: 01:xx happens twice. */
    expect_midnight(utc_us(2024, 11, 2, 20, 0, 0), utc_us(2024, 11, 3, 7, 0, 0));
    expect_midnight(utc_us(2024, 11, 3, 7, 30, 0), utc_us(2024, 11, 4, 8, 0, 0)); /* 00:30 PDT */
    expect_midnight(utc_us(2024, 11, 3, 8, 30, 0), utc_us(2024, 11, 4, 8, 0, 0)); /* 01:30 PDT */
    expect_midnight(utc_us(2024, 11, 3, 9, 30, 0), utc_us(2024, 11, 4, 8, 0, 0)); /* 01:30 PST */
    /* 2023's switch days (12 March, 5 November). */
    expect_midnight(utc_us(2023, 3, 12, 12, 0, 0), utc_us(2023, 3, 13, 7, 0, 0));
    expect_midnight(utc_us(2023, 11, 5, 12, 0, 0), utc_us(2023, 11, 6, 8, 0, 0));
}

static void test_midnight_matches_tzdata(void)
{
    char *old_tz = getenv("TZ") ? ev_strdup(getenv("TZ")) : NULL;
    setenv("TZ", "America/Los_Angeles", 1);
    tzset();
    /* The tz database must be there for this comparison to mean anything. */
    struct tm probe;
    time_t summer = (time_t)(utc_us(2024, 7, 1, 0, 0, 0) / US);
    localtime_r(&summer, &probe);
    CU_ASSERT_FATAL(probe.tm_gmtoff == -7 * 3600);

    int mismatches = 0;
    time_t end = (time_t)(utc_us(2031, 1, 1, 0, 0, 0) / US);
    for (time_t t = (time_t)(utc_us(2020, 1, 1, 0, 0, 0) / US); t < end; t += 37 * 60) {
        struct tm tm;
        localtime_r(&t, &tm);
        tm.tm_mday += 1;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        tm.tm_isdst = -1;
        int64_t want = (int64_t)mktime(&tm) * US;
        int64_t got = ev_gemini_next_pacific_midnight((int64_t)t * US + 123456);
        if (got != want && mismatches++ < 5)
            fprintf(stderr, "\n  t=%lld: got %lld, tzdata says %lld\n", (long long)t,
                    (long long)(got / US), (long long)(want / US));
    }
    CU_ASSERT_EQUAL(mismatches, 0);

    if (old_tz)
        setenv("TZ", old_tz, 1);
    else
        unsetenv("TZ");
    tzset();
    free(old_tz);
}

/* ---- the call path against the sim ----------------------------------------------- */

typedef struct env {
    const char *kv[2 * 48];
    int n;
} env_t;

static const char *env_get(const char *name, void *ctx)
{
    const env_t *e = ctx;
    for (int i = e->n - 1; i >= 0; i--) /* the last setting wins, NULL unsets */
        if (strcmp(e->kv[2 * i], name) == 0)
            return e->kv[2 * i + 1];
    return NULL;
}

static void env_set(env_t *e, const char *name, const char *value)
{
    CU_ASSERT_FATAL(e->n < 48);
    e->kv[2 * e->n] = name;
    e->kv[2 * e->n + 1] = value;
    e->n++;
}

typedef struct rt {
    ev_config_t *cfg;
    ev_stats_t *stats;
    ev_fake_clock_t *fc; /* NULL: the system clock */
    ev_router_t *r;
    ev_budget_t *budget;
} rt_t;

/* A router over the sim. overrides: NAME, VALUE pairs (VALUE NULL unsets),
 * NULL-terminated. wall_us > 0 runs it on a fake clock at that wall time. */
static void rt_start(rt_t *t, int64_t wall_us, const char *const *overrides)
{
    memset(t, 0, sizeof(*t));
    CU_ASSERT_EQUAL_FATAL(simctl_reset(sim), 0);
    env_t e = {.n = 0};
    env_set(&e, "GEMINI_API_KEY", SIMCTL_GEMINI_KEY);
    env_set(&e, "GEMINI_BASE_URL", simctl_gemini_url(sim));
    env_set(&e, "GROQ_API_KEY", SIMCTL_GROQ_KEY);
    env_set(&e, "GROQ_BASE_URL", simctl_groq_url(sim));
    env_set(&e, "GEMINI_RPM_LIMIT", "0");
    env_set(&e, "GROQ_RPM_LIMIT", "0");
    env_set(&e, "RETRY_BASE_MS", "10");
    env_set(&e, "RETRY_MAX_MS", "50");
    env_set(&e, "HTTP_TIMEOUT_MS", "10000");
    for (const char *const *o = overrides; o && *o; o += 2)
        env_set(&e, o[0], o[1]);
    char err[256] = "";
    int rc = ev_config_load(&t->cfg, env_get, &e, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "\n  config: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    const ev_clock_t *clock = ev_clock_system();
    if (wall_us > 0) {
        CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&t->fc, 1000 * US, wall_us), 0);
        clock = ev_fake_clock_get(t->fc);
    }
    CU_ASSERT_EQUAL_FATAL(ev_stats_new(&t->stats, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(ev_router_new(&t->r, t->cfg, t->stats, clock), 0);
    CU_ASSERT_EQUAL_FATAL(ev_budget_new(&t->budget, t->cfg->max_api_calls_per_submission, clock),
                          0);
}

static void rt_stop(rt_t *t)
{
    ev_budget_free(t->budget);
    ev_router_free(t->r);
    ev_stats_free(t->stats);
    ev_fake_clock_free(t->fc);
    ev_config_free(t->cfg);
}

/* One theme-like text check through the router, with a fresh budget. */
static int judge_with(rt_t *t, ev_http_t *h, ev_router_result_t *out, const atomic_bool *stop)
{
    ev_llm_request_t req = {
        .system_prompt = "You review submissions to a cooking-robot event. Respond with JSON.",
        .user_text = "Title: Soup stirring robot. Does it fit the theme? Answer in JSON.",
        .text_only = true,
    };
    const ev_llm_request_t *reqs[EV_PROVIDER_COUNT] = {&req, &req, &req};
    ev_budget_reset(t->budget);
    return ev_router_judge(t->r, h, t->budget, "theme", reqs, out, stop);
}

static int judge(rt_t *t, ev_router_result_t *out)
{
    return judge_with(t, http, out, NULL);
}

static int64_t requests(const char *provider)
{
    return simctl_counter(sim, provider, "requests");
}

static void sim_set(const char *provider, const char *json)
{
    CU_ASSERT_EQUAL_FATAL(simctl_set(sim, provider, json), 0);
}

static bool contains(const char *hay, const char *needle)
{
    bool ok = strstr(hay, needle) != NULL;
    if (!ok)
        fprintf(stderr, "\n  \"%s\" does not contain \"%s\"\n", hay, needle);
    return ok;
}

/* A provider's entry of the stats document. */
static json_object *provider_stat(rt_t *t, json_object **root, const char *provider,
                                  const char *key)
{
    json_object *providers = NULL, *p = NULL, *v = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_stats_snapshot_json(root, t->stats, NULL), 0);
    if (json_object_object_get_ex(*root, "providers", &providers) &&
        json_object_object_get_ex(providers, provider, &p))
        json_object_object_get_ex(p, key, &v);
    return v;
}

static int64_t provider_i64(rt_t *t, const char *provider, const char *key)
{
    json_object *root = NULL;
    json_object *v = provider_stat(t, &root, provider, key);
    int64_t n = v ? json_object_get_int64(v) : -1;
    json_object_put(root);
    return n;
}

static bool provider_bool(rt_t *t, const char *provider, const char *key)
{
    json_object *root = NULL;
    json_object *v = provider_stat(t, &root, provider, key);
    bool b = v && json_object_get_boolean(v);
    json_object_put(root);
    return b;
}

static void test_retries_bounded(void)
{
    rt_t t;
    /* A 1-2 ms backoff ceiling: full jitter often draws 0 ms, which must
     * still count as a retry. */
    const char *o[] = {"GROQ_API_KEY",
                       NULL,
                       "MAX_RETRIES",
                       "2",
                       "RETRY_BASE_MS",
                       "1",
                       "RETRY_MAX_MS",
                       "2",
                       "RETRY_BUDGET_RATIO",
                       "10",
                       "GEMINI_CIRCUIT_BREAKER_MIN_CALLS",
                       "1000",
                       "MAX_API_CALLS_PER_SUBMISSION",
                       "50",
                       NULL};
    rt_start(&t, 0, o);
    sim_set("gemini", "{\"fault\": \"overloaded\"}");
    for (int i = 0; i < 8; i++) {
        ev_router_result_t res;
        CU_ASSERT_EQUAL(judge(&t, &res), EV_EUNAVAIL);
        CU_ASSERT_EQUAL(res.http_attempts, 3);
        CU_ASSERT_FALSE(res.has_verdict);
        CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GEMINI);
        CU_ASSERT_TRUE(contains(res.error, "gemini"));
    }
    CU_ASSERT_EQUAL(requests("gemini"), 24);
    CU_ASSERT_EQUAL(provider_i64(&t, "gemini", "retries"), 16);
    CU_ASSERT_EQUAL(provider_i64(&t, "gemini", "calls"), 24);
    rt_stop(&t);
}

static void test_retry_budget(void)
{
    rt_t t;
    /* Ratio 0 leaves the floor of 3 retries per window for the provider. */
    const char *o[] = {"GROQ_API_KEY",
                       NULL,
                       "MAX_RETRIES",
                       "10",
                       "RETRY_BUDGET_RATIO",
                       "0",
                       "GEMINI_CIRCUIT_BREAKER_MIN_CALLS",
                       "1000",
                       "MAX_API_CALLS_PER_SUBMISSION",
                       "50",
                       NULL};
    rt_start(&t, 0, o);
    sim_set("gemini", "{\"fault\": \"overloaded\"}");
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), EV_EUNAVAIL);
    CU_ASSERT_EQUAL(res.http_attempts, 4);
    CU_ASSERT_TRUE(contains(res.error, "retry budget exhausted"));
    CU_ASSERT_EQUAL(judge(&t, &res), EV_EUNAVAIL);
    CU_ASSERT_EQUAL(res.http_attempts, 1);
    CU_ASSERT_TRUE(contains(res.error, "retry budget exhausted"));
    CU_ASSERT_EQUAL(requests("gemini"), 5);
    rt_stop(&t);
}

static void test_429_retry_info_honoured(void)
{
    rt_t t;
    const char *o[] = {"GROQ_API_KEY", NULL, NULL};
    rt_start(&t, 0, o);
    /* One request per sliding second: the second call gets a 429 whose
     * RetryInfo says "1s"; retrying any earlier would get another 429. */
    sim_set("gemini", "{\"rpm\": 60, \"window_s\": 1}");
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.http_attempts, 1);
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_TRUE(res.has_verdict);
    CU_ASSERT_EQUAL(res.http_attempts, 2);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "rate_limited"), 1);
    CU_ASSERT_EQUAL(requests("gemini"), 3);
    CU_ASSERT_EQUAL(provider_i64(&t, "gemini", "rate_limited"), 1);
    CU_ASSERT_EQUAL(provider_i64(&t, "gemini", "retries"), 1);
    rt_stop(&t);
}

static void test_429_pauses_whole_provider(void)
{
    rt_t t;
    const char *o[] = {"RETRY_MAX_WAIT_MS", "1000", NULL};
    rt_start(&t, 0, o);
    /* One request per 5 s: the 429's hint is longer than RETRY_MAX_WAIT_MS. */
    sim_set("gemini", "{\"rpm\": 12, \"window_s\": 5}");
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GEMINI);
    /* The 429 falls back at once... */
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GROQ);
    CU_ASSERT_EQUAL(res.http_attempts, 2);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "rate_limited"), 1);
    /* ...and pauses Gemini for everyone: another worker's call falls back
     * without asking Gemini. */
    CU_ASSERT_EQUAL(judge_with(&t, http2, &res, NULL), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GROQ);
    CU_ASSERT_EQUAL(res.http_attempts, 1);
    CU_ASSERT_EQUAL(requests("gemini"), 2);
    CU_ASSERT_EQUAL(requests("groq"), 2);
    rt_stop(&t);
}

/* A 429 asking for a minute pauses the provider for PROVIDER_MAX_PAUSE_MS at
 * most, and /stats says so: paused, why, until when. */
static void test_429_pause_is_capped_and_shown(void)
{
    rt_t t;
    const char *o[] = {"RETRY_MAX_WAIT_MS", "1000", "PROVIDER_MAX_PAUSE_MS", "30000", NULL};
    rt_start(&t, 0, o);
    sim_set("gemini", "{\"rpm\": 1, \"window_s\": 60}");
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GEMINI);
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GROQ);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "rate_limited"), 1);
    json_object *root = NULL;
    json_object *pause = provider_stat(&t, &root, "gemini", "pause");
    CU_ASSERT_PTR_NOT_NULL_FATAL(pause);
    json_object *v = NULL;
    CU_ASSERT_TRUE(json_object_object_get_ex(pause, "reason", &v) &&
                   strstr(json_object_get_string(v), "capped") != NULL);
    CU_ASSERT_TRUE(json_object_object_get_ex(pause, "remaining_s", &v));
    double left = v ? json_object_get_double(v) : -1;
    CU_ASSERT_TRUE(left > 0 && left <= 30.0);
    CU_ASSERT_TRUE(json_object_object_get_ex(pause, "until_unix", &v) &&
                   json_object_get_int64(v) > 0);
    json_object_put(root);
    rt_stop(&t);
}

static double provider_double(rt_t *t, const char *provider, const char *key)
{
    json_object *root = NULL;
    json_object *v = provider_stat(t, &root, provider, key);
    double d = v ? json_object_get_double(v) : -1;
    json_object_put(root);
    return d;
}

/* ADAPTIVE_LIMITS: the configured 600 per minute is a ceiling; the 429
 * states the real quota (60 per minute) and the rate drops under it at once,
 * without counting against the breaker. */
static void test_429_teaches_the_stated_limit(void)
{
    rt_t t;
    const char *o[] = {"GROQ_API_KEY", NULL, "GEMINI_RPM_LIMIT", "600", NULL};
    rt_start(&t, 0, o);
    sim_set("gemini", "{\"rpm\": 60, \"window_s\": 1}");
    CU_ASSERT_DOUBLE_EQUAL(provider_double(&t, "gemini", "rpm_ceiling"), 540, 1e-6);
    CU_ASSERT(provider_double(&t, "gemini", "rpm_limit") <= 540);
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_TRUE(res.has_verdict);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "rate_limited"), 1);
    /* 60 per minute x safety 0.9, 1 % under: 53.46. */
    CU_ASSERT_DOUBLE_EQUAL(provider_double(&t, "gemini", "rpm_limit"), 53.46, 0.01);
    CU_ASSERT_DOUBLE_EQUAL(provider_double(&t, "gemini", "rpm_ceiling"), 540, 1e-6);
    json_object *root = NULL;
    json_object *b = provider_stat(&t, &root, "gemini", "breaker");
    CU_ASSERT_STRING_EQUAL(b ? json_object_get_string(b) : "", "closed");
    json_object_put(root);
    rt_stop(&t);

    /* With ADAPTIVE_LIMITS=false the rate stays as configured. */
    const char *fixed[] = {"GROQ_API_KEY", NULL, "GEMINI_RPM_LIMIT", "600", "ADAPTIVE_LIMITS",
                           "false",        NULL};
    rt_start(&t, 0, fixed);
    sim_set("gemini", "{\"rpm\": 60, \"window_s\": 1}");
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_DOUBLE_EQUAL(provider_double(&t, "gemini", "rpm_limit"), 540, 1e-6);
    rt_stop(&t);
}

/* Groq's token headers announce its tokens-per-minute limit: the meter
 * adopts it and /stats shows the tokens used. */
static void test_token_limit_from_headers(void)
{
    rt_t t;
    const char *o[] = {"GEMINI_API_KEY", NULL, NULL};
    rt_start(&t, 0, o);
    sim_set("groq", "{\"tpm\": 5000}");
    CU_ASSERT_EQUAL(provider_i64(&t, "groq", "tpm_limit"), 0);
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GROQ);
    CU_ASSERT_EQUAL(provider_i64(&t, "groq", "tpm_limit"), 5000);
    /* The estimate was replaced by the usage Groq reported. */
    CU_ASSERT_EQUAL(provider_i64(&t, "groq", "tpm_used"), res.tokens_in + res.tokens_out);
    rt_stop(&t);
}

static void test_bad_answer_asked_once(void)
{
    rt_t t;
    rt_start(&t, 0, NULL);
    sim_set("gemini", "{\"fault\": \"garbage\", \"fail_next\": 1}");
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GEMINI);
    CU_ASSERT_EQUAL(res.http_attempts, 2);

    sim_set("gemini", "{\"fault\": \"fenced\"}");
    CU_ASSERT_EQUAL(judge(&t, &res), 0); /* fences are stripped, not a bad answer */
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GEMINI);
    CU_ASSERT_EQUAL(res.http_attempts, 1);

    sim_set("gemini", "{\"fault\": \"truncated\"}");
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GROQ);
    CU_ASSERT_EQUAL(res.http_attempts, 3);
    CU_ASSERT_EQUAL(requests("gemini"), 5);
    rt_stop(&t);
}

static void test_call_budget_and_stop(void)
{
    rt_t t;
    const char *o[] = {"MAX_RETRIES", "5", "MAX_API_CALLS_PER_SUBMISSION", "2", NULL};
    rt_start(&t, 0, o);
    sim_set("gemini", "{\"fault\": \"overloaded\"}");
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), EV_EBUDGET);
    CU_ASSERT_EQUAL(res.http_attempts, 2);
    CU_ASSERT_TRUE(contains(res.error, "budget of 2"));
    CU_ASSERT_EQUAL(ev_budget_used(t.budget), 2);
    CU_ASSERT(ev_budget_refusals(t.budget) > 0);
    CU_ASSERT_EQUAL(requests("gemini") + requests("groq"), 2);

    atomic_bool stop = true;
    CU_ASSERT_EQUAL(judge_with(&t, http, &res, &stop), EV_ESHUTDOWN);
    CU_ASSERT_EQUAL(res.http_attempts, 0);
    CU_ASSERT_EQUAL(requests("gemini") + requests("groq"), 2);
    rt_stop(&t);
}

static void test_invalid_key_disables(void)
{
    rt_t t;
    const char *o[] = {"GEMINI_API_KEY", "not-the-sim-key", NULL};
    rt_start(&t, 0, o);
    CU_ASSERT_TRUE(ev_router_usable(t.r, EV_PROVIDER_GEMINI));
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GROQ);
    CU_ASSERT_FALSE(ev_router_usable(t.r, EV_PROVIDER_GEMINI));
    CU_ASSERT_TRUE(ev_router_usable(t.r, EV_PROVIDER_GROQ));
    CU_ASSERT_TRUE(provider_bool(&t, "gemini", "disabled"));
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.http_attempts, 1);
    CU_ASSERT_EQUAL(requests("gemini"), 1);

    /* Nothing usable left: a clear error, no call. */
    const ev_llm_request_t *none[EV_PROVIDER_COUNT] = {NULL, NULL, NULL};
    CU_ASSERT_EQUAL(ev_router_judge(t.r, http, t.budget, "theme", none, &res, NULL), EV_EUNAVAIL);
    CU_ASSERT_EQUAL(res.provider, -1);
    CU_ASSERT(strlen(res.error) > 0);
    rt_stop(&t);
}

static void test_daily_quota_until_pacific_midnight(void)
{
    rt_t t;
    /* 12:00 UTC on 15 January 2024 is 04:00 PST: the quota comes back at
     * 08:00 UTC on the 16th, 20 hours later. */
    rt_start(&t, utc_us(2024, 1, 15, 12, 0, 0), NULL);
    sim_set("gemini", "{\"fault\": \"daily_quota\", \"fail_next\": 1}");
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GROQ);
    CU_ASSERT_TRUE(provider_bool(&t, "gemini", "quota_cooldown"));
    CU_ASSERT_TRUE(ev_router_usable(t.r, EV_PROVIDER_GEMINI));

    ev_fake_clock_advance(t.fc, 20 * 3600 * US - 60 * US);
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GROQ);
    CU_ASSERT_EQUAL(requests("gemini"), 1);

    ev_fake_clock_advance(t.fc, 61 * US);
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GEMINI);
    CU_ASSERT_EQUAL(requests("gemini"), 2);
    CU_ASSERT_FALSE(provider_bool(&t, "gemini", "quota_cooldown"));
    json_object *root = NULL;
    json_object *breaker = provider_stat(&t, &root, "gemini", "breaker");
    CU_ASSERT_STRING_EQUAL(breaker ? json_object_get_string(breaker) : "", "closed");
    json_object_put(root);
    rt_stop(&t);
}

static void test_groq_daily_quota_until_its_reset(void)
{
    rt_t t;
    const char *o[] = {"GEMINI_API_KEY", NULL, NULL};
    rt_start(&t, utc_us(2024, 1, 15, 12, 0, 0), o);
    /* 1000 requests per rolling day: one frees up every 86.4 s, and Groq
     * says so. Waiting for midnight Pacific would waste 20 hours of it. */
    sim_set("groq", "{\"fault\": \"daily_quota\", \"fail_next\": 1, \"rpd\": 1000}");
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), EV_EUNAVAIL);
    CU_ASSERT_TRUE(contains(res.error, "groq"));
    CU_ASSERT_TRUE(provider_bool(&t, "groq", "quota_cooldown"));

    ev_fake_clock_advance(t.fc, 60 * US);
    CU_ASSERT_EQUAL(judge(&t, &res), EV_EUNAVAIL);
    CU_ASSERT_EQUAL(res.http_attempts, 0);
    CU_ASSERT_EQUAL(requests("groq"), 1);

    ev_fake_clock_advance(t.fc, 30 * US);
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GROQ);
    CU_ASSERT_EQUAL(requests("groq"), 2);
    CU_ASSERT_FALSE(provider_bool(&t, "groq", "quota_cooldown"));
    rt_stop(&t);
}

/* ---- main --------------------------------------------------------------------------- */

static int init_suite(void)
{
    if (ev_http_global_init() != 0)
        return 1;
    if (simctl_start(&sim, NULL) != 0)
        return 1;
    if (ev_http_new(&http) != 0 || ev_http_new(&http2) != 0)
        return 1;
    ev_log_set_level(EV_LOG_OFF);
    return 0;
}

static int clean_suite(void)
{
    ev_http_free(http);
    ev_http_free(http2);
    simctl_free(sim);
    ev_http_global_cleanup();
    return 0;
}

/* PROVIDER_ORDER sets the chain, and the OpenAI-compatible provider is a
 * provider like the others (the simulator's /openai/v1 endpoint). */
static void test_provider_order_and_openai_compat(void)
{
    rt_t t;
    const char *o[] = {"PROVIDER_ORDER", "groq,gemini", NULL};
    rt_start(&t, 0, o);
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GROQ);
    CU_ASSERT_EQUAL(requests("gemini"), 0);
    sim_set("groq", "{\"fault\": \"overloaded\"}");
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GEMINI);
    rt_stop(&t);

    const char *c[] = {
        "OPENAI_COMPAT_API_KEY",  SIMCTL_GROQ_KEY, /* --groq-key applies to /openai too */
        "OPENAI_COMPAT_BASE_URL", simctl_openai_url(sim),    "OPENAI_COMPAT_MODELS",
        "llama-3.1-8b-instant",   "OPENAI_COMPAT_RPM_LIMIT", "0",
        "PROVIDER_ORDER",         "openai_compat,gemini",    NULL};
    rt_start(&t, 0, c);
    CU_ASSERT_TRUE(ev_router_usable(t.r, EV_PROVIDER_OPENAI_COMPAT));
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_OPENAI_COMPAT);
    CU_ASSERT_STRING_EQUAL(res.model, "llama-3.1-8b-instant");
    CU_ASSERT_EQUAL(provider_i64(&t, "openai_compat", "calls"), 1);
    CU_ASSERT_EQUAL(requests("openai"), 1);
    CU_ASSERT_EQUAL(requests("gemini"), 0);
    CU_ASSERT_EQUAL(requests("groq"), 0);
    /* Its own breaker and fallback: an outage there moves on to Gemini,
     * then Groq, which PROVIDER_ORDER left out but is configured. */
    sim_set("openai", "{\"fault\": \"overloaded\"}");
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GEMINI);
    rt_stop(&t);
}

/* A model the provider no longer knows costs one failed call for the whole
 * process and never the submission's call budget: the next model answers at
 * once, and later calls go straight to it. */
static void test_retired_model_set_aside_once(void)
{
    rt_t t;
    const char *o[] = {"GEMINI_MODELS", "gemini-2.5-flash,gemini-3.5-flash-lite", "GROQ_API_KEY",
                       NULL, NULL};
    rt_start(&t, 0, o);
    sim_set("gemini", "{\"retired_models\": \"gemini-2.5-flash\"}");
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GEMINI);
    CU_ASSERT_STRING_EQUAL(res.model, "gemini-3.5-flash-lite");
    CU_ASSERT_EQUAL(res.http_attempts, 2);
    /* The failed call was given back: one call of the budget spent. */
    CU_ASSERT_EQUAL(ev_budget_remaining(t.budget), t.cfg->max_api_calls_per_submission - 1);
    CU_ASSERT_EQUAL(provider_i64(&t, "gemini", "models_unavailable"), 1);
    CU_ASSERT_FALSE(ev_availability_is_available(ev_router_availability(t.r), EV_PROVIDER_GEMINI,
                                                 "gemini-2.5-flash"));
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(judge(&t, &res), 0);
        CU_ASSERT_EQUAL(res.http_attempts, 1);
    }
    CU_ASSERT_EQUAL(requests("gemini"), 5);
    CU_ASSERT_TRUE(ev_router_usable(t.r, EV_PROVIDER_GEMINI));

    /* Retired mid-run, the last one too: the provider is done, like a bad key. */
    sim_set("gemini", "{\"retired_models\": \"gemini-2.5-flash,gemini-3.5-flash-lite\"}");
    CU_ASSERT_EQUAL(judge(&t, &res), EV_EUNAVAIL);
    CU_ASSERT_FALSE(ev_router_usable(t.r, EV_PROVIDER_GEMINI));
    CU_ASSERT_FALSE(ev_router_any_usable(t.r));
    CU_ASSERT_TRUE(provider_bool(&t, "gemini", "disabled"));
    CU_ASSERT_EQUAL(provider_i64(&t, "gemini", "models_unavailable"), 2);
    CU_ASSERT_EQUAL(judge(&t, &res), EV_EUNAVAIL);
    CU_ASSERT_EQUAL(res.http_attempts, 0);
    CU_ASSERT_EQUAL(requests("gemini"), 6);
    rt_stop(&t);
}

/* A thinking budget a model refuses sets that model aside (it would refuse
 * every call) and the next model of the list answers; Groq's decommissioned
 * models likewise. */
static void test_unusable_and_decommissioned_models(void)
{
    rt_t t;
    const char *o[] = {"GEMINI_MODELS",
                       "gemini-3.5-flash-lite,gemini-2.0-flash",
                       "GEMINI_THINKING_BUDGET",
                       "0",
                       "GROQ_MODELS",
                       "llama-3.3-70b-versatile,openai/gpt-oss-20b",
                       "PROVIDER_ORDER",
                       "groq,gemini",
                       NULL};
    rt_start(&t, 0, o);
    sim_set("groq", "{\"retired_models\": \"llama-3.3-70b-versatile\"}");
    ev_router_result_t res;
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GROQ);
    CU_ASSERT_STRING_EQUAL(res.model, "openai/gpt-oss-20b");
    CU_ASSERT_EQUAL(ev_availability_status(ev_router_availability(t.r), EV_PROVIDER_GROQ,
                                           "llama-3.3-70b-versatile"),
                    EV_MODEL_RETIRED);
    sim_set("groq", "{\"fault\": \"overloaded\"}");
    CU_ASSERT_EQUAL(judge(&t, &res), 0);
    CU_ASSERT_EQUAL(res.provider, EV_PROVIDER_GEMINI);
    CU_ASSERT_STRING_EQUAL(res.model, "gemini-2.0-flash");
    CU_ASSERT_EQUAL(ev_availability_status(ev_router_availability(t.r), EV_PROVIDER_GEMINI,
                                           "gemini-3.5-flash-lite"),
                    EV_MODEL_UNUSABLE);
    rt_stop(&t);
}

static const ev_test_t pacific_midnight_tests[] = {
    {"winter, summer and DST switch days", test_midnight_fixed_days},
    {"every 37 minutes of 2020-2030 agrees with tzdata", test_midnight_matches_tzdata},
    EV_TEST_END,
};

static const ev_test_t call_path_tests[] = {
    {"retries never exceed MAX_RETRIES", test_retries_bounded},
    {"the retry budget caps retries", test_retry_budget},
    {"a 429's RetryInfo is waited for", test_429_retry_info_honoured},
    {"a 429 teaches the stated limit", test_429_teaches_the_stated_limit},
    {"the token limit comes from the headers", test_token_limit_from_headers},
    {"a long 429 hint pauses the whole provider", test_429_pauses_whole_provider},
    {"a 429 pause is capped and shown", test_429_pause_is_capped_and_shown},
    {"a bad answer is asked again once", test_bad_answer_asked_once},
    {"call budget and stop end a call", test_call_budget_and_stop},
    {"an invalid key disables the provider", test_invalid_key_disables},
    {"daily quota cools down until midnight Pacific", test_daily_quota_until_pacific_midnight},
    {"groq's daily quota cools down until its announced reset",
     test_groq_daily_quota_until_its_reset},
    {"PROVIDER_ORDER and the OpenAI-compatible provider", test_provider_order_and_openai_compat},
    {"a retired model costs one call per process", test_retired_model_set_aside_once},
    {"unusable and decommissioned models", test_unusable_and_decommissioned_models},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"pacific midnight", NULL, NULL, pacific_midnight_tests, NULL, NULL},
    {"call path", init_suite, clean_suite, call_path_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
