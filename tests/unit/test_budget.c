/*
 * test_budget.c - the per-submission call budget (SPEC §3 MAX_API_CALLS_PER_SUBMISSION).
 *
 * What a user relies on: no submission ever costs more than the limit of
 * HTTP attempts, across checks, retries and fallbacks, and the result
 * record shows every attempt that was made.
 */
#include "ev/budget.h"
#include "ev/clock.h"
#include "ev/error.h"

#include <CUnit/Basic.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include "runner.h"

#define NTHREADS 16

static void test_exhaustion_at_exactly_the_limit(void)
{
    ev_fake_clock_t *fc = NULL;
    ev_budget_t *b = NULL;

    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 0, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_budget_new(&b, 5, ev_fake_clock_get(fc)), 0);
    CU_ASSERT_EQUAL(ev_budget_limit(b), 5);
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(ev_budget_remaining(b), 5 - i);
        CU_ASSERT_EQUAL(ev_budget_take(b), 0);
    }
    CU_ASSERT_EQUAL(ev_budget_used(b), 5);
    CU_ASSERT_EQUAL(ev_budget_refusals(b), 0);
    CU_ASSERT_EQUAL(ev_budget_take(b), EV_EBUDGET);
    CU_ASSERT_EQUAL(ev_budget_take(b), EV_EBUDGET);
    CU_ASSERT_EQUAL(ev_budget_used(b), 5);
    CU_ASSERT_EQUAL(ev_budget_remaining(b), 0);
    CU_ASSERT_EQUAL(ev_budget_refusals(b), 2);
    /* The next submission starts afresh with the same limit. */
    ev_budget_reset(b);
    CU_ASSERT_EQUAL(ev_budget_used(b), 0);
    CU_ASSERT_EQUAL(ev_budget_refusals(b), 0);
    CU_ASSERT_EQUAL(ev_budget_take(b), 0);
    ev_budget_free(b);

    /* Limit 0 refuses the very first call. */
    CU_ASSERT_EQUAL_FATAL(ev_budget_new(&b, 0, ev_fake_clock_get(fc)), 0);
    CU_ASSERT_EQUAL(ev_budget_take(b), EV_EBUDGET);
    ev_budget_free(b);

    b = (ev_budget_t *)fc;
    CU_ASSERT_EQUAL(ev_budget_new(&b, -1, ev_fake_clock_get(fc)), EV_EINVAL);
    CU_ASSERT_PTR_NULL(b);
    CU_ASSERT_EQUAL(ev_budget_new(&b, 5, NULL), EV_EINVAL);
    ev_budget_free(NULL);
    ev_fake_clock_free(fc);
}

static const char *str_field(json_object *o, const char *k)
{
    json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static int64_t int_field(json_object *o, const char *k)
{
    json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : -12345;
}

static void test_history(void)
{
    ev_fake_clock_t *fc = NULL;
    ev_budget_t *b = NULL;

    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 7000000, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_budget_new(&b, 5, ev_fake_clock_get(fc)), 0);
    /* theme: 429 on Gemini, then success; pdf: timeout then Groq fallback. */
    CU_ASSERT_EQUAL(ev_budget_record(b, "theme", "gemini", "rate_limited", 429, 120), 0);
    ev_fake_clock_advance(fc, 2500000);
    CU_ASSERT_EQUAL(ev_budget_record(b, "theme", "gemini", "ok", 200, 900), 0);
    CU_ASSERT_EQUAL(ev_budget_record(b, "pdf", "gemini", "timeout", 0, 60000), 0);
    CU_ASSERT_EQUAL(ev_budget_record(b, "pdf", "groq", "ok", 200, 1500), 0);
    CU_ASSERT_EQUAL(ev_budget_record(b, NULL, "groq", "ok", 200, 1), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_budget_history_count(b, "theme"), 2);
    CU_ASSERT_EQUAL(ev_budget_history_count(b, "pdf"), 2);
    CU_ASSERT_EQUAL(ev_budget_history_count(b, "image"), 0);
    CU_ASSERT_EQUAL(ev_budget_history_count(b, NULL), 4);

    json_object *theme = ev_budget_history_json(b, "theme");
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(theme), 2);
    json_object *e0 = json_object_array_get_idx(theme, 0);
    json_object *e1 = json_object_array_get_idx(theme, 1);
    CU_ASSERT_STRING_EQUAL(str_field(e0, "provider"), "gemini");
    CU_ASSERT_STRING_EQUAL(str_field(e0, "outcome"), "rate_limited");
    CU_ASSERT_EQUAL(int_field(e0, "http_status"), 429);
    CU_ASSERT_EQUAL(int_field(e0, "latency_ms"), 120);
    CU_ASSERT_EQUAL(int_field(e0, "seq"), 1);
    CU_ASSERT_EQUAL(int_field(e0, "t_ms"), 0);
    CU_ASSERT_STRING_EQUAL(str_field(e1, "outcome"), "ok");
    CU_ASSERT_EQUAL(int_field(e1, "t_ms"), 2500);
    CU_ASSERT_FALSE(json_object_object_get_ex(e0, "check", NULL));
    json_object_put(theme);

    json_object *pdf = ev_budget_history_json(b, "pdf");
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(pdf), 2);
    json_object *p0 = json_object_array_get_idx(pdf, 0);
    json_object *status = (json_object *)1;
    /* No HTTP response: status is JSON null. */
    CU_ASSERT_TRUE(json_object_object_get_ex(p0, "http_status", &status));
    CU_ASSERT_PTR_NULL(status);
    CU_ASSERT_EQUAL(int_field(p0, "seq"), 3);
    CU_ASSERT_STRING_EQUAL(str_field(json_object_array_get_idx(pdf, 1), "provider"), "groq");
    json_object_put(pdf);

    json_object *all = ev_budget_history_json(b, NULL);
    CU_ASSERT_EQUAL(json_object_array_length(all), 4);
    CU_ASSERT_STRING_EQUAL(str_field(json_object_array_get_idx(all, 3), "check"), "pdf");
    json_object_put(all);

    json_object *none = ev_budget_history_json(b, "image");
    CU_ASSERT_TRUE(json_object_is_type(none, json_type_array));
    CU_ASSERT_EQUAL(json_object_array_length(none), 0);
    json_object_put(none);

    /* Reset clears the history for the next submission. */
    ev_budget_reset(b);
    CU_ASSERT_EQUAL(ev_budget_history_count(b, NULL), 0);
    json_object *empty = ev_budget_history_json(b, NULL);
    CU_ASSERT_EQUAL(json_object_array_length(empty), 0);
    json_object_put(empty);
    ev_budget_free(b);
    ev_fake_clock_free(fc);
}

static void test_history_cap(void)
{
    ev_fake_clock_t *fc = NULL;
    ev_budget_t *b = NULL;

    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 0, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_budget_new(&b, 5, ev_fake_clock_get(fc)), 0);
    for (int i = 0; i < EV_BUDGET_MAX_HISTORY; i++)
        CU_ASSERT_EQUAL(ev_budget_record(b, "image", "groq", "ok", 200, i), 0);
    CU_ASSERT_EQUAL(ev_budget_record(b, "image", "groq", "ok", 200, 1), EV_ELIMIT);
    CU_ASSERT_EQUAL(ev_budget_history_count(b, "image"), EV_BUDGET_MAX_HISTORY);
    CU_ASSERT_EQUAL(ev_budget_history_dropped(b), 1);
    ev_budget_free(b);
    ev_fake_clock_free(fc);
}

typedef struct {
    ev_budget_t *b;
    atomic_int granted, refused, recorded;
} race_t;

static void *racer(void *arg)
{
    race_t *r = arg;
    static const char *checks[] = {"theme", "pdf", "image"};
    for (int i = 0; i < 200; i++) {
        if (ev_budget_take(r->b) == 0) {
            atomic_fetch_add(&r->granted, 1);
            if (ev_budget_record(r->b, checks[i % 3], "gemini", "ok", 200, i) == 0)
                atomic_fetch_add(&r->recorded, 1);
        } else {
            atomic_fetch_add(&r->refused, 1);
        }
    }
    return NULL;
}

/* 16 threads, 3200 attempts, limit 100: exactly 100 calls are made. */
static void test_contention_exact_limit(void)
{
    ev_fake_clock_t *fc = NULL;
    race_t r = {0};
    pthread_t th[NTHREADS];

    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 0, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_budget_new(&r.b, 100, ev_fake_clock_get(fc)), 0);
    for (int i = 0; i < NTHREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, racer, &r), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(atomic_load(&r.granted), 100);
    CU_ASSERT_EQUAL(atomic_load(&r.refused), NTHREADS * 200 - 100);
    CU_ASSERT_EQUAL(ev_budget_used(r.b), 100);
    CU_ASSERT_EQUAL(ev_budget_refusals(r.b), NTHREADS * 200 - 100);
    CU_ASSERT_EQUAL(atomic_load(&r.recorded), 100);
    CU_ASSERT_EQUAL(ev_budget_history_count(r.b, NULL), 100);
    json_object *all = ev_budget_history_json(r.b, NULL);
    CU_ASSERT_EQUAL(json_object_array_length(all), 100);
    json_object_put(all);
    ev_budget_free(r.b);
    ev_fake_clock_free(fc);
}

static const ev_test_t budget_tests[] = {
    {"exhaustion at exactly the limit", test_exhaustion_at_exactly_the_limit},
    {"history recorded per check", test_history},
    {"history is bounded", test_history_cap},
    {"16 threads: exactly limit calls", test_contention_exact_limit},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"budget", NULL, NULL, budget_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
