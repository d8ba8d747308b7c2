/*
 * test_availability.c - the table of models set aside: a model is marked
 * once however many threads see it fail at the same moment, every
 * subscriber hears of it exactly once, and readers never see it come back.
 */
#include "ev/availability.h"
#include "ev/error.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include "runner.h"

#define THREADS 8
#define ROUNDS 2000

static atomic_int heard;

static void count(void *ctx, ev_provider_id_t p, const char *model, ev_model_status_t st,
                  const char *msg)
{
    (void)p;
    (void)model;
    (void)st;
    (void)msg;
    atomic_fetch_add((atomic_int *)ctx, 1);
}

static void test_mark_and_ask(void)
{
    ev_availability_t *a = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_availability_new(&a), 0);
    atomic_int n = 0;
    CU_ASSERT_EQUAL(ev_availability_on_change(a, count, &n), 0);
    CU_ASSERT_TRUE(ev_availability_is_available(a, EV_PROVIDER_GROQ, "m1"));
    CU_ASSERT_TRUE(ev_availability_mark(a, EV_PROVIDER_GROQ, "m1", EV_MODEL_RETIRED, "gone"));
    CU_ASSERT_FALSE(ev_availability_mark(a, EV_PROVIDER_GROQ, "m1", EV_MODEL_UNKNOWN, "again"));
    CU_ASSERT_EQUAL(ev_availability_status(a, EV_PROVIDER_GROQ, "m1"), EV_MODEL_RETIRED);
    /* The same name at another provider is another model. */
    CU_ASSERT_TRUE(ev_availability_is_available(a, EV_PROVIDER_GEMINI, "m1"));
    CU_ASSERT_EQUAL(ev_availability_count(a, EV_PROVIDER_GROQ), 1);
    CU_ASSERT_EQUAL(ev_availability_count(a, EV_PROVIDER_GEMINI), 0);
    CU_ASSERT_EQUAL(atomic_load(&n), 1);
    for (int i = 1; i < EV_AVAILABILITY_MAX_SUBSCRIBERS; i++)
        CU_ASSERT_EQUAL(ev_availability_on_change(a, count, &n), 0);
    CU_ASSERT_EQUAL(ev_availability_on_change(a, count, &n), EV_ELIMIT);
    CU_ASSERT_TRUE(ev_availability_mark(a, EV_PROVIDER_GEMINI, "m2", EV_MODEL_UNUSABLE, NULL));
    CU_ASSERT_EQUAL(atomic_load(&n), 1 + EV_AVAILABILITY_MAX_SUBSCRIBERS);
    ev_availability_free(a);
}

typedef struct arg {
    ev_availability_t *a;
    int won;
    int regressions;
} arg_t;

/* Every thread marks the same models in the same order and keeps asking:
 * once a thread has seen a model unavailable it must never see it back. */
static void *hammer(void *p)
{
    arg_t *x = p;
    char model[32];
    for (int i = 0; i < ROUNDS; i++) {
        snprintf(model, sizeof(model), "model-%d", i % 24);
        if (ev_availability_mark(x->a, (ev_provider_id_t)(i % EV_PROVIDER_COUNT), model,
                                 EV_MODEL_RETIRED, "shut down"))
            x->won++;
        if (ev_availability_is_available(x->a, (ev_provider_id_t)(i % EV_PROVIDER_COUNT), model))
            x->regressions++;
    }
    return NULL;
}

static void test_contention(void)
{
    ev_availability_t *a = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_availability_new(&a), 0);
    atomic_store(&heard, 0);
    CU_ASSERT_EQUAL(ev_availability_on_change(a, count, &heard), 0);
    pthread_t t[THREADS];
    arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (arg_t){a, 0, 0};
        CU_ASSERT_FATAL(pthread_create(&t[i], NULL, hammer, &args[i]) == 0);
    }
    int won = 0, regressions = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        won += args[i].won;
        regressions += args[i].regressions;
    }
    /* 24 names spread over the providers: i % 24 and i % 3 pair each name
     * with exactly one provider, so 24 distinct models, each marked once. */
    CU_ASSERT_EQUAL(won, 24);
    CU_ASSERT_EQUAL(atomic_load(&heard), 24);
    CU_ASSERT_EQUAL(regressions, 0);
    size_t total = 0;
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        total += ev_availability_count(a, (ev_provider_id_t)p);
    CU_ASSERT_EQUAL(total, 24);
    ev_availability_free(a);
}

static const ev_test_t tests[] = {
    {"mark, ask, subscribe", test_mark_and_ask},
    {"one mark under contention, never undone", test_contention},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"availability", NULL, NULL, tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
