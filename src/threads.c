/*
 * threads.c - thread creation, signal masking and the shutdown request.
 *
 * What: ev_thread_create() is the only pthread_create() call in the program.
 * It blocks the termination signals in the creating thread for the duration
 * of pthread_create (a new thread inherits its creator's mask), restores the
 * creator's mask, and the new thread names itself before running its function. The signal thread
 * sigwait()s for SIGTERM/SIGINT and raises the process-wide shutdown request, a flag guarded by a
 * mutex with a condition variable so any thread can wait for it.
 *
 * Threads: any thread may create threads or read/wait for the shutdown
 * request; only the signal thread receives SIGTERM/SIGINT. ev_signals_start
 * and ev_signals_stop are called from main.
 *
 * Lock order: shutdown_state.mu is a leaf lock; nothing else is taken, no callback,
 * libpq or logger call is made while holding it.
 */
#include "ev/threads.h"

#include "ev/error.h"
#include "ev/log.h"
#include "ev/util.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The signals no thread but the signal thread may receive. SIGHUP is blocked
 * too so that a terminal hang-up does not kill workers mid-write; it is not
 * acted upon. */
static void blocked_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGPIPE);
}

/* What a new thread needs before it runs its function; freed by the thread. */
typedef struct start {
    void *(*fn)(void *);
    void *arg;
    char name[16];
} start_t;

/* Names the thread from inside, so the name is in place before fn runs (a
 * name set by the creator could arrive after the thread's first steps). */
static void *trampoline(void *p)
{
    start_t st = *(start_t *)p;

    free(p);
    (void)pthread_setname_np(pthread_self(), st.name);
    return st.fn(st.arg);
}

int ev_thread_create(ev_thread_t *t, const char *name, void *(*fn)(void *), void *arg)
{
    sigset_t block, old;
    start_t *st;
    int rc, err;

    EV_ASSERT(t != NULL && fn != NULL);
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name ? name : "ev");
    st = ev_calloc(1, sizeof(*st));
    st->fn = fn;
    st->arg = arg;
    memcpy(st->name, t->name, sizeof(st->name));
    blocked_set(&block);
    /* The new thread inherits this mask; the creator gets its own back. */
    err = pthread_sigmask(SIG_BLOCK, &block, &old);
    EV_ASSERT(err == 0);
    err = pthread_create(&t->tid, NULL, trampoline, st);
    EV_ASSERT(pthread_sigmask(SIG_SETMASK, &old, NULL) == 0);
    if (err != 0) {
        free(st);
        rc = err == EAGAIN || err == ENOMEM ? EV_ENOMEM : EV_EINVAL;
        goto out;
    }
    t->started = true;
    rc = 0;
out:
    return rc;
}

int ev_thread_join(ev_thread_t *t, void **ret)
{
    if (ret)
        *ret = NULL;
    if (t == NULL || !t->started)
        return 0;
    EV_ASSERT(pthread_join(t->tid, ret) == 0);
    t->started = false;
    return 0;
}

int ev_signals_block_all(void)
{
    sigset_t block;
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) != 0)
        return EV_EINVAL;
    blocked_set(&block);
    return pthread_sigmask(SIG_BLOCK, &block, NULL) == 0 ? 0 : EV_EINVAL;
}

/*
 * The shutdown request. requested/reason/wakeups are guarded by mu; the
 * `fast` mirror is an atomic so hot loops can test it without the lock (it is
 * written under mu together with `requested`).
 */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* uses CLOCK_MONOTONIC; initialised once */
    pthread_once_t once;
    bool requested;   /* guarded by mu */
    int reason;       /* guarded by mu */
    atomic_bool fast; /* atomic mirror of requested */
} shutdown_state = {.mu = PTHREAD_MUTEX_INITIALIZER, .once = PTHREAD_ONCE_INIT};

static void shutdown_init(void)
{
    pthread_condattr_t attr;

    EV_ASSERT(pthread_condattr_init(&attr) == 0);
    EV_ASSERT(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0);
    EV_ASSERT(pthread_cond_init(&shutdown_state.cv, &attr) == 0);
    pthread_condattr_destroy(&attr);
}

void ev_shutdown_request(int reason)
{
    pthread_once(&shutdown_state.once, shutdown_init);
    pthread_mutex_lock(&shutdown_state.mu);
    if (!shutdown_state.requested) {
        shutdown_state.requested = true;
        shutdown_state.reason = reason;
        atomic_store(&shutdown_state.fast, true);
    }
    pthread_cond_broadcast(&shutdown_state.cv);
    pthread_mutex_unlock(&shutdown_state.mu);
}

bool ev_shutdown_requested(void)
{
    return atomic_load(&shutdown_state.fast);
}

int ev_shutdown_reason(void)
{
    int r;

    pthread_mutex_lock(&shutdown_state.mu);
    r = shutdown_state.reason;
    pthread_mutex_unlock(&shutdown_state.mu);
    return r;
}

bool ev_shutdown_wait(int timeout_ms)
{
    struct timespec deadline;
    bool got;

    pthread_once(&shutdown_state.once, shutdown_init);
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms >= 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&shutdown_state.mu);
    while (!shutdown_state.requested) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&shutdown_state.cv, &shutdown_state.mu);
        } else if (pthread_cond_timedwait(&shutdown_state.cv, &shutdown_state.mu, &deadline) ==
                   ETIMEDOUT) {
            break;
        }
    }
    got = shutdown_state.requested;
    pthread_mutex_unlock(&shutdown_state.mu);
    return got;
}

void ev_shutdown_reset(void)
{
    pthread_mutex_lock(&shutdown_state.mu);
    shutdown_state.requested = false;
    shutdown_state.reason = 0;
    atomic_store(&shutdown_state.fast, false);
    pthread_mutex_unlock(&shutdown_state.mu);
}

/*
 * The signal thread. Only main starts and stops it, so its bookkeeping needs
 * no lock beyond the atomics: `quit` tells the thread that the SIGTERM it is
 * about to receive from ev_signals_stop is a wake-up, not a request.
 */
static ev_thread_t sig_thread;
static atomic_bool sig_quit;
static atomic_bool sig_running;

static void *signal_main(void *arg)
{
    sigset_t wait_set;
    int signo, count = 0;

    (void)arg;
    sigemptyset(&wait_set);
    sigaddset(&wait_set, SIGTERM);
    sigaddset(&wait_set, SIGINT);
    for (;;) {
        if (sigwait(&wait_set, &signo) != 0)
            continue;
        if (atomic_load(&sig_quit))
            break;
        count++;
        if (count > 1) {
            /* The operator insists: leave now. In-flight leases expire and
             * are rescued by another worker or the next start. */
            ev_log(EV_LOG_WARN, "second %s received, exiting immediately",
                   signo == SIGINT ? "SIGINT" : "SIGTERM");
            _exit(130);
        }
        ev_shutdown_request(signo);
    }
    return NULL;
}

int ev_signals_start(void)
{
    int rc;

    if (atomic_load(&sig_running))
        return EV_EBUSY;
    atomic_store(&sig_quit, false);
    rc = ev_thread_create(&sig_thread, "ev-signals", signal_main, NULL);
    if (rc == 0)
        atomic_store(&sig_running, true);
    return rc;
}

void ev_signals_stop(void)
{
    if (!atomic_load(&sig_running))
        return;
    atomic_store(&sig_quit, true);
    /* SIGTERM is blocked in the signal thread, so this stays pending for it
     * until its sigwait() consumes it and sees `sig_quit`. */
    pthread_kill(sig_thread.tid, SIGTERM);
    ev_thread_join(&sig_thread, NULL);
    atomic_store(&sig_running, false);
}
