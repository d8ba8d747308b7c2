/*
 * semaphore.h - counting semaphore bounding in-flight HTTP requests per provider.
 *
 * One semaphore per provider, capacity *_MAX_CONCURRENT (SPEC §3). A worker
 * holds one unit around the HTTP request only (never around the limiter wait,
 * a backoff sleep or response parsing), so the cap is exactly the number of
 * requests the provider sees at once from this process.
 *
 * All functions are thread-safe. The semaphore never logs and never calls the
 * injected clock while holding its lock.
 */
#ifndef EV_SEMAPHORE_H
#define EV_SEMAPHORE_H

#include "ev/clock.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct ev_semaphore ev_semaphore_t;

/*
 * Creates a semaphore with `cap` units (cap >= 1). `clock` is used for
 * acquire deadlines (pass ev_clock_system() in production, a fake clock in
 * tests); it must outlive the semaphore. On success *out is set and 0 is
 * returned; EV_EINVAL for cap < 1 or a NULL clock (then *out is NULL).
 * Free with ev_semaphore_free().
 */
int ev_semaphore_new(ev_semaphore_t **out, int cap, const ev_clock_t *clock);

/* Frees the semaphore; accepts NULL. No thread may be using it. */
void ev_semaphore_free(ev_semaphore_t *s);

/*
 * Takes one unit, blocking while all `cap` units are held.
 *
 * `deadline_us` is an absolute time on the semaphore's clock; pass -1 to wait
 * without a deadline. `stop` (may be NULL) is an abort flag such as the
 * process's shutdown flag. While a deadline or a stop flag is given the
 * waiter re-checks them at least every EV_SEMAPHORE_POLL_US of real time (a
 * fake clock is read at each check, so tests advance it and the waiter
 * notices); ev_semaphore_wake_all() makes waiters re-check at once.
 *
 * Returns 0 with one unit taken, EV_ETIMEOUT when the clock reached the
 * deadline first, or EV_ESHUTDOWN when *stop became true first; on an error
 * nothing is taken. A free unit is always taken in preference to reporting
 * a deadline or stop that happen at the same moment.
 */
int ev_semaphore_acquire(ev_semaphore_t *s, int64_t deadline_us, const atomic_bool *stop);

/* Real-time interval at which waiters re-check their deadline and stop flag. */
#define EV_SEMAPHORE_POLL_US 20000

/* Takes one unit if one is free right now: 0, or EV_EBUSY without waiting. */
int ev_semaphore_try_acquire(ev_semaphore_t *s);

/*
 * Returns one unit taken by acquire/try_acquire and wakes one waiter.
 * Releasing more units than were taken is a bug and aborts (EV_ASSERT).
 */
void ev_semaphore_release(ev_semaphore_t *s);

/* Wakes every waiter so it re-checks its stop flag and deadline now. */
void ev_semaphore_wake_all(ev_semaphore_t *s);

/*
 * A cluster-wide cap behind this semaphore (src/cluster.c). With a remote
 * set, ev_semaphore_acquire takes a local unit first and then one remote
 * unit (same deadline and stop), giving the local unit back if that fails;
 * ev_semaphore_release gives the remote unit back first. try_acquire stays
 * local (it is only used by tests).
 */
typedef struct ev_semaphore_remote {
    /* 0, EV_ETIMEOUT or EV_ESHUTDOWN, as ev_semaphore_acquire. Thread-safe. */
    int (*acquire)(void *ctx, int64_t deadline_us, const atomic_bool *stop);
    void (*release)(void *ctx);
    void *ctx;
} ev_semaphore_remote_t;

/* Installs (NULL: removes) the remote. Call before any thread uses the
 * semaphore; `remote` is copied, its ctx must outlive the semaphore. */
void ev_semaphore_set_remote(ev_semaphore_t *s, const ev_semaphore_remote_t *remote);

/* Units held right now (a relaxed snapshot for stats). */
int ev_semaphore_in_flight(const ev_semaphore_t *s);

/* Highest number of units ever held at once (high-water mark, <= cap). */
int ev_semaphore_max_observed(const ev_semaphore_t *s);

/* Threads blocked in ev_semaphore_acquire right now (snapshot). */
int ev_semaphore_waiting(const ev_semaphore_t *s);

/* The capacity given to ev_semaphore_new (immutable). */
int ev_semaphore_cap(const ev_semaphore_t *s);

#endif
