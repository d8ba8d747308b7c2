/*
 * test_semaphore.c - the per-provider concurrency cap (SPEC §1, §3 *_MAX_CONCURRENT).
 *
 * The property that matters to a user: the provider never sees more than
 * *_MAX_CONCURRENT requests at once from us, yet the cap is actually used.
 * Worker threads never call CUnit (it is not thread-safe); they record what
 * they saw in atomics and the main thread asserts.
 */
#include "ev/clock.h"
#include "ev/error.h"
#include "ev/semaphore.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include "runner.h"

#define NTHREADS 16
#define OPS_PER_THREAD 2000

static int64_t real_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Spins (yielding) until pred(arg) holds or 10 s of real time pass. */
static bool wait_until(bool (*pred)(void *), void *arg)
{
    int64_t give_up = real_now_us() + 10 * 1000000;
    while (!pred(arg)) {
        if (real_now_us() > give_up)
            return false;
        sched_yield();
    }
    return true;
}

typedef struct {
    ev_semaphore_t *sem;
    int cap;
    atomic_int in_cs;      /* threads inside the critical section now */
    atomic_int max_in_cs;  /* the most ever seen inside at once */
    atomic_int entries;    /* total entries so far */
    atomic_int violations; /* entries that saw more than cap inside */
    atomic_int errors;     /* unexpected return codes */
    atomic_int cap_waits_failed;
    atomic_bool stop; /* never set: exercises the polling wait path */
} contention_t;

static bool cs_full(void *arg)
{
    contention_t *c = arg;
    return atomic_load(&c->in_cs) >= c->cap;
}

static void *contender(void *arg)
{
    contention_t *c = arg;
    for (int i = 0; i < OPS_PER_THREAD; i++) {
        int rc;
        /* Mix every way of taking a unit. */
        switch (i % 4) {
        case 0:
            rc = ev_semaphore_acquire(c->sem, -1, NULL);
            break;
        case 1:
            rc = ev_semaphore_acquire(c->sem, -1, &c->stop);
            break;
        case 2:
            rc = ev_semaphore_acquire(c->sem, INT64_MAX, NULL);
            break;
        default:
            while ((rc = ev_semaphore_try_acquire(c->sem)) == EV_EBUSY)
                sched_yield();
            break;
        }
        if (rc != 0) {
            atomic_fetch_add(&c->errors, 1);
            continue;
        }
        int inside = atomic_fetch_add(&c->in_cs, 1) + 1;
        if (inside > c->cap)
            atomic_fetch_add(&c->violations, 1);
        int seen = atomic_load(&c->max_in_cs);
        while (inside > seen && !atomic_compare_exchange_weak(&c->max_in_cs, &seen, inside))
            ;
        /* The first `cap` entrants hold their unit until the section is full,
         * which proves the cap is reachable without relying on luck. */
        if (atomic_fetch_add(&c->entries, 1) < c->cap) {
            if (!wait_until(cs_full, c))
                atomic_fetch_add(&c->cap_waits_failed, 1);
        } else {
            sched_yield();
        }
        atomic_fetch_sub(&c->in_cs, 1);
        ev_semaphore_release(c->sem);
    }
    return NULL;
}

static void run_contention(int cap)
{
    ev_fake_clock_t *fc = NULL;
    contention_t c = {.cap = cap};
    pthread_t th[NTHREADS];

    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 0, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_semaphore_new(&c.sem, cap, ev_fake_clock_get(fc)), 0);
    atomic_init(&c.stop, false);
    for (int i = 0; i < NTHREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, contender, &c), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);

    CU_ASSERT_EQUAL(atomic_load(&c.errors), 0);
    CU_ASSERT_EQUAL(atomic_load(&c.violations), 0);
    CU_ASSERT_EQUAL(atomic_load(&c.cap_waits_failed), 0);
    CU_ASSERT_EQUAL(atomic_load(&c.max_in_cs), cap);
    CU_ASSERT_EQUAL(atomic_load(&c.entries), NTHREADS * OPS_PER_THREAD);
    CU_ASSERT_EQUAL(ev_semaphore_max_observed(c.sem), cap);
    CU_ASSERT_EQUAL(ev_semaphore_in_flight(c.sem), 0);
    CU_ASSERT_EQUAL(ev_semaphore_waiting(c.sem), 0);
    ev_semaphore_free(c.sem);
    ev_fake_clock_free(fc);
}

static void test_cap_never_exceeded_cap1(void)
{
    run_contention(1);
}

static void test_cap_never_exceeded_cap2(void)
{
    run_contention(2);
}

static void test_cap_never_exceeded_cap5(void)
{
    run_contention(5);
}

static void test_try_acquire_and_counters(void)
{
    ev_fake_clock_t *fc = NULL;
    ev_semaphore_t *s = NULL;

    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 0, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_semaphore_new(&s, 2, ev_fake_clock_get(fc)), 0);
    CU_ASSERT_EQUAL(ev_semaphore_cap(s), 2);
    CU_ASSERT_EQUAL(ev_semaphore_try_acquire(s), 0);
    CU_ASSERT_EQUAL(ev_semaphore_in_flight(s), 1);
    CU_ASSERT_EQUAL(ev_semaphore_try_acquire(s), 0);
    CU_ASSERT_EQUAL(ev_semaphore_try_acquire(s), EV_EBUSY);
    CU_ASSERT_EQUAL(ev_semaphore_in_flight(s), 2);
    ev_semaphore_release(s);
    CU_ASSERT_EQUAL(ev_semaphore_in_flight(s), 1);
    CU_ASSERT_EQUAL(ev_semaphore_try_acquire(s), 0);
    ev_semaphore_release(s);
    ev_semaphore_release(s);
    CU_ASSERT_EQUAL(ev_semaphore_in_flight(s), 0);
    CU_ASSERT_EQUAL(ev_semaphore_max_observed(s), 2);
    ev_semaphore_free(s);
    ev_fake_clock_free(fc);
}

static void test_bad_arguments(void)
{
    ev_fake_clock_t *fc = NULL;
    ev_semaphore_t *s = (ev_semaphore_t *)&fc;

    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 0, 0), 0);
    CU_ASSERT_EQUAL(ev_semaphore_new(&s, 0, ev_fake_clock_get(fc)), EV_EINVAL);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_EQUAL(ev_semaphore_new(&s, 1, NULL), EV_EINVAL);
    CU_ASSERT_PTR_NULL(s);
    ev_semaphore_free(NULL);
    ev_fake_clock_free(fc);
}

typedef struct {
    ev_semaphore_t *sem;
    int64_t deadline_us;
    const atomic_bool *stop;
    atomic_int rc;
    atomic_bool done;
} waiter_t;

static void *waiter(void *arg)
{
    waiter_t *w = arg;
    atomic_store(&w->rc, ev_semaphore_acquire(w->sem, w->deadline_us, w->stop));
    atomic_store(&w->done, true);
    return NULL;
}

static bool one_waiting(void *arg)
{
    return ev_semaphore_waiting(arg) == 1;
}

static bool waiter_done(void *arg)
{
    waiter_t *w = arg;
    return atomic_load(&w->done);
}

/* A full semaphore with a deadline gives up when the (fake) clock reaches it. */
static void test_deadline_on_injected_clock(void)
{
    ev_fake_clock_t *fc = NULL;
    waiter_t w = {0};
    pthread_t th;

    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 1000000, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_semaphore_new(&w.sem, 1, ev_fake_clock_get(fc)), 0);
    CU_ASSERT_EQUAL(ev_semaphore_try_acquire(w.sem), 0);
    w.deadline_us = 1000000 + 5000000;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, waiter, &w), 0);
    CU_ASSERT_TRUE(wait_until(one_waiting, w.sem));
    /* Short of the deadline the waiter keeps waiting. */
    ev_fake_clock_advance(fc, 4999999);
    ev_semaphore_wake_all(w.sem);
    CU_ASSERT_FALSE(atomic_load(&w.done));
    ev_fake_clock_advance(fc, 1);
    CU_ASSERT_TRUE(wait_until(waiter_done, &w));
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(atomic_load(&w.rc), EV_ETIMEOUT);
    /* Nothing was taken by the timed-out waiter. */
    CU_ASSERT_EQUAL(ev_semaphore_in_flight(w.sem), 1);
    ev_semaphore_release(w.sem);
    ev_semaphore_free(w.sem);
    ev_fake_clock_free(fc);
}

/* A waiter blocked on a full semaphore leaves promptly when told to stop. */
static void test_stop_flag(void)
{
    ev_fake_clock_t *fc = NULL;
    atomic_bool stop;
    waiter_t w = {0};
    pthread_t th;

    atomic_init(&stop, false);
    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 0, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_semaphore_new(&w.sem, 1, ev_fake_clock_get(fc)), 0);
    CU_ASSERT_EQUAL(ev_semaphore_try_acquire(w.sem), 0);
    w.deadline_us = -1;
    w.stop = &stop;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, waiter, &w), 0);
    CU_ASSERT_TRUE(wait_until(one_waiting, w.sem));
    atomic_store(&stop, true);
    ev_semaphore_wake_all(w.sem);
    CU_ASSERT_TRUE(wait_until(waiter_done, &w));
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(atomic_load(&w.rc), EV_ESHUTDOWN);
    CU_ASSERT_EQUAL(ev_semaphore_in_flight(w.sem), 1);
    /* A stop flag already set does not prevent taking a free unit. */
    ev_semaphore_release(w.sem);
    CU_ASSERT_EQUAL(ev_semaphore_acquire(w.sem, -1, &stop), 0);
    ev_semaphore_release(w.sem);
    ev_semaphore_free(w.sem);
    ev_fake_clock_free(fc);
}

/* release() hands the unit to a thread blocked without deadline or stop flag. */
static void test_release_wakes_waiter(void)
{
    ev_fake_clock_t *fc = NULL;
    waiter_t w = {0};
    pthread_t th;

    CU_ASSERT_EQUAL_FATAL(ev_fake_clock_new(&fc, 0, 0), 0);
    CU_ASSERT_EQUAL_FATAL(ev_semaphore_new(&w.sem, 1, ev_fake_clock_get(fc)), 0);
    CU_ASSERT_EQUAL(ev_semaphore_try_acquire(w.sem), 0);
    w.deadline_us = -1;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, waiter, &w), 0);
    CU_ASSERT_TRUE(wait_until(one_waiting, w.sem));
    CU_ASSERT_FALSE(atomic_load(&w.done));
    ev_semaphore_release(w.sem);
    CU_ASSERT_TRUE(wait_until(waiter_done, &w));
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(atomic_load(&w.rc), 0);
    CU_ASSERT_EQUAL(ev_semaphore_in_flight(w.sem), 1);
    CU_ASSERT_EQUAL(ev_semaphore_waiting(w.sem), 0);
    ev_semaphore_release(w.sem);
    ev_semaphore_free(w.sem);
    ev_fake_clock_free(fc);
}

static const ev_test_t semaphore_tests[] = {
    {"cap 1 never exceeded, reached, 16 threads", test_cap_never_exceeded_cap1},
    {"cap 2 never exceeded, reached, 16 threads", test_cap_never_exceeded_cap2},
    {"cap 5 never exceeded, reached, 16 threads", test_cap_never_exceeded_cap5},
    {"try_acquire and counters", test_try_acquire_and_counters},
    {"bad arguments", test_bad_arguments},
    {"deadline on the injected clock", test_deadline_on_injected_clock},
    {"stop flag", test_stop_flag},
    {"release wakes a waiter", test_release_wakes_waiter},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"semaphore", NULL, NULL, semaphore_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
