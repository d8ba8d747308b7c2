/*
 * test_threads.c - thread creation, signal masking and the shutdown request.
 *
 * Threads made by ev_thread_create are named and never receive SIGTERM,
 * SIGINT, SIGHUP or SIGPIPE, whatever their creator's mask; the shutdown
 * request wakes every waiter; the signal thread turns a real SIGTERM sent to
 * the process into a shutdown request and stops cleanly without one.
 */
#include "ev/error.h"
#include "ev/threads.h"
#include "ev/util.h"

#include <CUnit/Basic.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "runner.h"

#define BOUND_MS 20000

typedef struct probe {
    char name[32];
    bool term_blocked, int_blocked, hup_blocked, pipe_blocked;
} probe_t;

static void *probe_main(void *arg)
{
    probe_t *p = arg;
    sigset_t mask;

    pthread_getname_np(pthread_self(), p->name, sizeof(p->name));
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    p->term_blocked = sigismember(&mask, SIGTERM);
    p->int_blocked = sigismember(&mask, SIGINT);
    p->hup_blocked = sigismember(&mask, SIGHUP);
    p->pipe_blocked = sigismember(&mask, SIGPIPE);
    return p;
}

static void test_create_names_and_masks(void)
{
    sigset_t none, before, after;
    ev_thread_t t;
    probe_t p;
    void *ret = NULL;

    /* The creator has everything unblocked; the new thread still must not
     * see the termination signals, and the creator's mask is unchanged. */
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, &before);
    memset(&p, 0, sizeof(p));
    CU_ASSERT_EQUAL_FATAL(ev_thread_create(&t, "probe-thread-with-a-long-name", probe_main, &p), 0);
    CU_ASSERT_TRUE(t.started);
    CU_ASSERT_EQUAL(ev_thread_join(&t, &ret), 0);
    CU_ASSERT_PTR_EQUAL(ret, &p);
    CU_ASSERT_FALSE(t.started);
    pthread_sigmask(SIG_SETMASK, &before, &after);
    CU_ASSERT_FALSE(sigismember(&after, SIGTERM));
    CU_ASSERT_STRING_EQUAL(p.name, "probe-thread-wi"); /* the 15-char kernel limit */
    CU_ASSERT_TRUE(p.term_blocked);
    CU_ASSERT_TRUE(p.int_blocked);
    CU_ASSERT_TRUE(p.hup_blocked);
    CU_ASSERT_TRUE(p.pipe_blocked);

    /* Joining a thread that never started is a no-op. */
    memset(&t, 0, sizeof(t));
    CU_ASSERT_EQUAL(ev_thread_join(&t, &ret), 0);
    CU_ASSERT_PTR_NULL(ret);
    CU_ASSERT_EQUAL(ev_thread_join(NULL, NULL), 0);
}

/* Many threads creating threads at once: every one runs exactly once. */
static atomic_int ran;

static void *leaf_main(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return NULL;
}

static void *spawner_main(void *arg)
{
    ev_thread_t kids[20];

    (void)arg;
    for (int i = 0; i < 20; i++)
        EV_ASSERT(ev_thread_create(&kids[i], "leaf", leaf_main, NULL) == 0);
    for (int i = 0; i < 20; i++)
        ev_thread_join(&kids[i], NULL);
    return NULL;
}

static void test_create_under_contention(void)
{
    ev_thread_t spawners[8];

    atomic_store(&ran, 0);
    for (int i = 0; i < 8; i++)
        CU_ASSERT_EQUAL_FATAL(ev_thread_create(&spawners[i], "spawner", spawner_main, NULL), 0);
    for (int i = 0; i < 8; i++)
        ev_thread_join(&spawners[i], NULL);
    CU_ASSERT_EQUAL(atomic_load(&ran), 160);
}

static atomic_int woken;

static void *waiter_main(void *arg)
{
    (void)arg;
    if (ev_shutdown_wait(-1))
        atomic_fetch_add(&woken, 1);
    return NULL;
}

static void test_shutdown_wakes_every_waiter(void)
{
    ev_thread_t waiters[8];

    ev_shutdown_reset();
    atomic_store(&woken, 0);
    CU_ASSERT_FALSE(ev_shutdown_requested());
    CU_ASSERT_FALSE(ev_shutdown_wait(0));
    CU_ASSERT_FALSE(ev_shutdown_wait(30));
    for (int i = 0; i < 8; i++)
        CU_ASSERT_EQUAL_FATAL(ev_thread_create(&waiters[i], "waiter", waiter_main, NULL), 0);
    ev_shutdown_request(0);
    ev_shutdown_request(SIGINT); /* the first reason wins */
    for (int i = 0; i < 8; i++)
        ev_thread_join(&waiters[i], NULL);
    CU_ASSERT_EQUAL(atomic_load(&woken), 8);
    CU_ASSERT_TRUE(ev_shutdown_requested());
    CU_ASSERT_TRUE(ev_shutdown_wait(-1));
    CU_ASSERT_EQUAL(ev_shutdown_reason(), 0);
    ev_shutdown_reset();
    CU_ASSERT_FALSE(ev_shutdown_requested());
}

static void test_signal_thread(void)
{
    int fds[2];

    ev_shutdown_reset();
    CU_ASSERT_EQUAL_FATAL(ev_signals_block_all(), 0);
    CU_ASSERT_EQUAL_FATAL(ev_signals_start(), 0);
    CU_ASSERT_EQUAL(ev_signals_start(), EV_EBUSY);

    /* A real SIGTERM to the process becomes a shutdown request. */
    CU_ASSERT_EQUAL(kill(getpid(), SIGTERM), 0);
    CU_ASSERT_TRUE(ev_shutdown_wait(BOUND_MS));
    CU_ASSERT_EQUAL(ev_shutdown_reason(), SIGTERM);
    ev_signals_stop();

    /* Started and stopped without a signal: no request appears. */
    ev_shutdown_reset();
    CU_ASSERT_EQUAL_FATAL(ev_signals_start(), 0);
    ev_signals_stop();
    CU_ASSERT_FALSE(ev_shutdown_requested());
    ev_signals_stop(); /* idempotent */

    /* SIGPIPE never kills the process: the write just fails with EPIPE. */
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    close(fds[0]);
    errno = 0;
    CU_ASSERT_EQUAL(write(fds[1], "x", 1), -1);
    CU_ASSERT_EQUAL(errno, EPIPE);
    close(fds[1]);
}

static const ev_test_t threads_tests[] = {
    {"create: name and signal mask", test_create_names_and_masks},
    {"create under contention", test_create_under_contention},
    {"shutdown wakes every waiter", test_shutdown_wakes_every_waiter},
    {"signal thread", test_signal_thread},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"threads", NULL, NULL, threads_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
