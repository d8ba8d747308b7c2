/*
 * semaphore.c - counting semaphore bounding concurrent HTTP requests per provider.
 *
 * How: a mutex-protected counter with one condition variable (CLOCK_MONOTONIC
 * so timed waits ignore wall-clock jumps). A waiter with a deadline or a stop
 * flag waits in slices of at most EV_SEMAPHORE_POLL_US real time and, between
 * slices, drops the lock to read the injected clock, so deadlines are judged
 * on the injected clock (fake clocks work) and the clock is never called with
 * the lock held.
 *
 * Threads: any worker thread acquires and releases; the stats thread reads the
 * relaxed atomic snapshots (in_flight, max_observed, waiting).
 *
 * Locking: one lock, `mu`, guards the transition of `in_flight` (it is also
 * an atomic so readers need no lock). Lock order: `mu` is a leaf; nothing else
 * is locked or called while holding it.
 */
#include "ev/semaphore.h"

#include "ev/error.h"
#include "ev/util.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct ev_semaphore {
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* signalled on release and wake_all */
    const ev_clock_t *clock;      /* immutable */
    int cap;                      /* immutable */
    atomic_int in_flight;         /* written under mu; read relaxed anywhere */
    atomic_int max_observed;      /* written under mu; read relaxed anywhere */
    atomic_int waiting;           /* written under mu; read relaxed anywhere */
    ev_semaphore_remote_t remote; /* set before threads start; acquire NULL: none */
};

void ev_semaphore_set_remote(ev_semaphore_t *s, const ev_semaphore_remote_t *remote)
{
    s->remote = remote ? *remote : (ev_semaphore_remote_t){0};
}

int ev_semaphore_new(ev_semaphore_t **out, int cap, const ev_clock_t *clock)
{
    int rc = 0;
    ev_semaphore_t *s = NULL;
    pthread_condattr_t attr;

    *out = NULL;
    if (cap < 1 || clock == NULL) {
        rc = EV_EINVAL;
        goto out;
    }
    s = ev_calloc(1, sizeof(*s));
    s->clock = clock;
    s->cap = cap;
    atomic_init(&s->in_flight, 0);
    atomic_init(&s->max_observed, 0);
    atomic_init(&s->waiting, 0);
    EV_ASSERT(pthread_mutex_init(&s->mu, NULL) == 0);
    EV_ASSERT(pthread_condattr_init(&attr) == 0);
    EV_ASSERT(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0);
    EV_ASSERT(pthread_cond_init(&s->cv, &attr) == 0);
    pthread_condattr_destroy(&attr);
    *out = s;
out:
    return rc;
}

void ev_semaphore_free(ev_semaphore_t *s)
{
    if (s == NULL)
        return;
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void release_local(ev_semaphore_t *s);

/* Takes one unit. Requires mu held and a free unit. */
static void take_locked(ev_semaphore_t *s)
{
    int now = atomic_load_explicit(&s->in_flight, memory_order_relaxed) + 1;
    EV_ASSERT(now <= s->cap);
    atomic_store_explicit(&s->in_flight, now, memory_order_relaxed);
    if (now > atomic_load_explicit(&s->max_observed, memory_order_relaxed))
        atomic_store_explicit(&s->max_observed, now, memory_order_relaxed);
}

static bool has_free_locked(const ev_semaphore_t *s)
{
    return atomic_load_explicit(&s->in_flight, memory_order_relaxed) < s->cap;
}

/* Waits on cv for at most EV_SEMAPHORE_POLL_US of real time. Requires mu held. */
static void timed_wait_slice(ev_semaphore_t *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)EV_SEMAPHORE_POLL_US * 1000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
    }
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

int ev_semaphore_acquire(ev_semaphore_t *s, int64_t deadline_us, const atomic_bool *stop)
{
    int rc = 0;
    bool polling = deadline_us >= 0 || stop != NULL;

    pthread_mutex_lock(&s->mu);
    atomic_fetch_add_explicit(&s->waiting, 1, memory_order_relaxed);
    for (;;) {
        if (has_free_locked(s)) {
            take_locked(s);
            break;
        }
        if (stop != NULL && atomic_load(stop)) {
            rc = EV_ESHUTDOWN;
            break;
        }
        if (deadline_us >= 0) {
            /* The clock is an outside callback: read it without the lock,
             * then re-check for a unit released meanwhile. */
            pthread_mutex_unlock(&s->mu);
            int64_t now = ev_clock_now_us(s->clock);
            pthread_mutex_lock(&s->mu);
            if (has_free_locked(s))
                continue;
            if (now >= deadline_us) {
                rc = EV_ETIMEOUT;
                break;
            }
        }
        if (polling)
            timed_wait_slice(s);
        else
            pthread_cond_wait(&s->cv, &s->mu);
    }
    atomic_fetch_sub_explicit(&s->waiting, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->mu);
    /* The remote call may block on the network: never under mu. */
    if (rc == 0 && s->remote.acquire != NULL) {
        rc = s->remote.acquire(s->remote.ctx, deadline_us, stop);
        if (rc < 0)
            release_local(s);
    }
    return rc;
}

int ev_semaphore_try_acquire(ev_semaphore_t *s)
{
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    if (has_free_locked(s))
        take_locked(s);
    else
        rc = EV_EBUSY;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void ev_semaphore_release(ev_semaphore_t *s)
{
    if (s->remote.release != NULL)
        s->remote.release(s->remote.ctx);
    release_local(s);
}

static void release_local(ev_semaphore_t *s)
{
    pthread_mutex_lock(&s->mu);
    int now = atomic_load_explicit(&s->in_flight, memory_order_relaxed) - 1;
    EV_ASSERT(now >= 0);
    atomic_store_explicit(&s->in_flight, now, memory_order_relaxed);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void ev_semaphore_wake_all(ev_semaphore_t *s)
{
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int ev_semaphore_in_flight(const ev_semaphore_t *s)
{
    return atomic_load_explicit(&s->in_flight, memory_order_relaxed);
}

int ev_semaphore_max_observed(const ev_semaphore_t *s)
{
    return atomic_load_explicit(&s->max_observed, memory_order_relaxed);
}

int ev_semaphore_waiting(const ev_semaphore_t *s)
{
    return atomic_load_explicit(&s->waiting, memory_order_relaxed);
}

int ev_semaphore_cap(const ev_semaphore_t *s)
{
    return s->cap;
}
