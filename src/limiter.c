/*
 * limiter.c - per-provider rate limiter: slot reservation (GCRA) with bounded jitter.
 *
 * What: hands out call slots at `rpm × safety / 60` per second and tells each
 * caller when to wake. How: a theoretical arrival time (TAT) on a fixed grid
 * of interval T; each reservation takes the next slot and moves TAT by T
 * (see limiter.h for the formulas, the jitter mapping and the proof that the
 * long-run rate is exact and the release bound holds). Jitter is a per-caller
 * wake offset in [0, span × T) after its own slot and never touches TAT.
 *
 * Threads: any worker thread reserves, acquires, cancels and pauses; the
 * stats thread takes snapshots.
 *
 * Locking: one lock, `mu`, guards tat_ns, pause_ns, last_seq and the
 * counters. It is a leaf: the clock and the random source are always called
 * before taking it, and nothing else is locked while it is held.
 * `pause_us` mirrors pause_ns as an atomic so sleeping callers can check for
 * a pause without the lock.
 */
#include "ev/limiter.h"

#include "ev/error.h"
#include "ev/util.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

/* TAT of a limiter that has never granted: far enough in the past that the
 * first `burst` reservations are immediate, far enough from INT64_MIN that
 * subtracting (burst - 1) × T cannot overflow. */
#define TAT_NEVER (INT64_MIN / 4)

struct ev_limiter {
    /* Immutable after ev_limiter_new. */
    const ev_clock_t *clock;
    bool unlimited;
    int burst;
    double span; /* jitter offset range as a fraction of T, in [0, 1] */
    int64_t sleep_step_us;
    double (*rand01)(void *ctx);
    void *rand_ctx;

    pthread_mutex_t mu;
    double rate_per_s;          /* guarded by mu (ev_limiter_set_rate) */
    int64_t interval_ns;        /* guarded by mu: T, rounded up so the real rate never
                                 * exceeds rate_per_s */
    int64_t burst_ns;           /* guarded by mu: (burst - 1) × T */
    int64_t tat_ns;             /* guarded by mu: theoretical arrival time */
    int64_t pause_ns;           /* guarded by mu: no slot before this */
    uint64_t seq;               /* guarded by mu: reservations made so far */
    uint64_t last_seq;          /* guarded by mu: the reservation that set tat_ns, 0 if none */
    uint64_t granted;           /* guarded by mu */
    uint64_t rejected;          /* guarded by mu */
    uint64_t cancelled;         /* guarded by mu */
    uint64_t pauses;            /* guarded by mu */
    _Atomic int64_t pause_us;   /* written under mu; read lock-free by sleepers */
    ev_limiter_remote_t remote; /* set before threads start; reserve NULL: none */
};

/* Sets the rate and the intervals derived from it. Requires mu (or an
 * object no other thread can see yet). */
static void set_rate_locked(ev_limiter_t *l, double rate_per_s)
{
    l->rate_per_s = rate_per_s;
    l->interval_ns = (int64_t)ceil(1e9 / rate_per_s);
    if (l->interval_ns < 1)
        l->interval_ns = 1;
    l->burst_ns = (int64_t)(l->burst - 1) * l->interval_ns;
}

static double default_rand01(void *ctx)
{
    (void)ctx;
    return ev_rand01();
}

int ev_limiter_new(ev_limiter_t **out, const ev_limiter_options_t *opts, const ev_clock_t *clock)
{
    static const ev_limiter_options_t defaults = EV_LIMITER_OPTIONS_INIT;
    int rc = 0;
    ev_limiter_t *l = NULL;

    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if (clock == NULL || !(opts->rpm >= 0 && opts->rpm <= 1e7) ||
        (opts->rpm > 0 && !(opts->safety_factor > 0 && opts->safety_factor <= 1)) ||
        (opts->rpm > 0 && opts->rpm * opts->safety_factor < 1e-3) || !(opts->jitter_min >= 0) ||
        !(opts->jitter_max >= opts->jitter_min) || opts->burst < 1 || opts->sleep_step_us < 1) {
        rc = EV_EINVAL;
        goto out;
    }
    l = ev_calloc(1, sizeof(*l));
    l->clock = clock;
    l->unlimited = opts->rpm == 0;
    l->burst = opts->burst;
    if (!l->unlimited)
        set_rate_locked(l, opts->rpm * opts->safety_factor / 60.0);
    l->span = opts->jitter_enabled ? EV_MIN(1.0, opts->jitter_max - opts->jitter_min) : 0.0;
    l->sleep_step_us = opts->sleep_step_us;
    l->rand01 = opts->rand01 ? opts->rand01 : default_rand01;
    l->rand_ctx = opts->rand01 ? opts->rand_ctx : NULL;
    EV_ASSERT(pthread_mutex_init(&l->mu, NULL) == 0);
    l->tat_ns = TAT_NEVER;
    l->pause_ns = TAT_NEVER;
    atomic_init(&l->pause_us, 0);
    *out = l;
out:
    return rc;
}

void ev_limiter_free(ev_limiter_t *l)
{
    if (l == NULL)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* Nanoseconds to microseconds, rounding up (a slot is never reported early). */
static int64_t ns_to_us_ceil(int64_t ns)
{
    int64_t us = ns / 1000;
    if (ns % 1000 > 0)
        us++;
    return us;
}

/* Jitter offset in µs for a draw u in [0, 1): floor(u × span × T), < T,
 * with T = interval_ns as read under the lock by the caller. */
static int64_t jitter_offset_us(const ev_limiter_t *l, double u, int64_t interval_ns)
{
    if (l->span <= 0 || l->unlimited)
        return 0;
    if (!(u >= 0) || u >= 1)
        u = 0; /* a broken random source must not break the bound */
    int64_t off = (int64_t)floor(u * l->span * (double)interval_ns / 1000.0);
    int64_t max_off = interval_ns / 1000; /* keep offset_us < T even after flooring */
    if (off >= max_off)
        off = max_off > 0 ? max_off - 1 : 0;
    return off < 0 ? 0 : off;
}

int ev_limiter_reserve(ev_limiter_t *l, ev_limiter_reservation_t *out, int64_t max_wait_us)
{
    int rc = 0;
    /* The clock and the random source are outside calls: before the lock. */
    int64_t now_us = ev_clock_now_us(l->clock);
    double u = l->span > 0 ? l->rand01(l->rand_ctx) : 0.0;
    int64_t now_ns = now_us * 1000;

    pthread_mutex_lock(&l->mu);
    int64_t slot_ns;
    if (l->unlimited)
        slot_ns = EV_MAX(now_ns, l->pause_ns);
    else
        slot_ns = EV_MAX(now_ns, l->tat_ns - l->burst_ns);
    int64_t slot_us = ns_to_us_ceil(slot_ns);
    int64_t slot_wait = EV_MAX(0, slot_us - now_us);

    out->slot_us = slot_us;
    out->wake_us = slot_us;
    out->wait_us = slot_wait;
    out->seq = 0;
    out->tat_before_ns = l->tat_ns;
    if (max_wait_us >= 0 && slot_wait > max_wait_us) {
        l->rejected++;
        rc = EV_ELIMIT;
        pthread_mutex_unlock(&l->mu);
        goto out;
    }
    if (!l->unlimited)
        l->tat_ns = EV_MAX(l->tat_ns, slot_ns) + l->interval_ns;
    out->seq = ++l->seq;
    l->last_seq = out->seq;
    l->granted++;
    int64_t interval_ns = l->interval_ns;
    pthread_mutex_unlock(&l->mu);

    int64_t off = jitter_offset_us(l, u, interval_ns);
    if (max_wait_us >= 0)
        off = EV_MIN(off, max_wait_us - slot_wait);
    out->wake_us = slot_us + off;
    out->wait_us = EV_MAX(0, out->wake_us - now_us);
out:
    return rc;
}

int ev_limiter_cancel(ev_limiter_t *l, const ev_limiter_reservation_t *r)
{
    int rc = EV_EBUSY;

    pthread_mutex_lock(&l->mu);
    if (r->seq != 0 && r->seq == l->last_seq) {
        l->tat_ns = r->tat_before_ns;
        l->last_seq = 0;
        l->granted--;
        l->cancelled++;
        rc = 0;
    }
    pthread_mutex_unlock(&l->mu);
    return rc;
}

void ev_limiter_set_remote(ev_limiter_t *l, const ev_limiter_remote_t *remote)
{
    l->remote = remote ? *remote : (ev_limiter_remote_t){0};
}

/* Sleeps until wake_us in steps, as long as no pause covers slot_us. Returns
 * 0 at the wake time, 1 when a pause voided the slot (reserve again),
 * EV_ESHUTDOWN when *stop became true. */
static int sleep_until_wake(ev_limiter_t *l, int64_t slot_us, int64_t wake_us,
                            const atomic_bool *stop)
{
    for (;;) {
        if (stop != NULL && atomic_load(stop))
            return EV_ESHUTDOWN;
        if (atomic_load(&l->pause_us) > slot_us)
            return 1;
        int64_t now = ev_clock_now_us(l->clock);
        if (now >= wake_us)
            return 0;
        ev_clock_sleep_us(l->clock, EV_MIN(l->sleep_step_us, wake_us - now));
    }
}

/* ev_limiter_acquire through the remote grid. */
static int acquire_remote(ev_limiter_t *l, int64_t start, int64_t max_wait_us,
                          const atomic_bool *stop)
{
    int rc = 0;
    for (;;) {
        if (stop != NULL && atomic_load(stop)) {
            rc = EV_ESHUTDOWN;
            break;
        }
        int64_t now = ev_clock_now_us(l->clock);
        int64_t left = max_wait_us < 0 ? -1 : EV_MAX(0, max_wait_us - (now - start));
        double u = l->span > 0 ? l->rand01(l->rand_ctx) : 0.0;
        int64_t wait = 0;
        rc = l->remote.reserve(l->remote.ctx, left, &wait);
        pthread_mutex_lock(&l->mu);
        if (rc == 0)
            l->granted++;
        else if (rc == EV_ELIMIT)
            l->rejected++;
        int64_t interval_ns = l->interval_ns;
        pthread_mutex_unlock(&l->mu);
        if (rc < 0)
            break;
        int64_t slot = ev_clock_now_us(l->clock) + EV_MAX(0, wait);
        int64_t off = jitter_offset_us(l, u, interval_ns);
        if (left >= 0)
            off = EV_MAX(0, EV_MIN(off, left - wait));
        rc = sleep_until_wake(l, slot, slot + off, stop);
        if (rc <= 0)
            break;
    }
    return rc;
}

int ev_limiter_acquire(ev_limiter_t *l, int64_t *waited_us, int64_t max_wait_us,
                       const atomic_bool *stop)
{
    int rc = 0;
    ev_limiter_reservation_t r;
    int64_t start = ev_clock_now_us(l->clock);
    int64_t now = start;
    bool reserved = false;

    if (l->remote.reserve != NULL) {
        rc = acquire_remote(l, start, max_wait_us, stop);
        goto out;
    }
    for (;;) {
        if (stop != NULL && atomic_load(stop)) {
            if (reserved)
                ev_limiter_cancel(l, &r);
            rc = EV_ESHUTDOWN;
            goto out;
        }
        if (!reserved) {
            int64_t left = -1;
            if (max_wait_us >= 0)
                left = EV_MAX(0, max_wait_us - (now - start));
            rc = ev_limiter_reserve(l, &r, left);
            if (rc < 0)
                goto out;
            reserved = true;
        }
        /* A pause that began after this reservation and covers its slot
         * voids it: the provider said it is out of quota until then. */
        if (atomic_load(&l->pause_us) > r.slot_us) {
            reserved = false;
            continue;
        }
        if (now >= r.wake_us)
            break;
        ev_clock_sleep_us(l->clock, EV_MIN(l->sleep_step_us, r.wake_us - now));
        now = ev_clock_now_us(l->clock);
    }
out:
    if (waited_us != NULL)
        *waited_us = ev_clock_now_us(l->clock) - start;
    return rc;
}

void ev_limiter_pause_until(ev_limiter_t *l, int64_t until_us)
{
    /* Clamp so the nanosecond grid cannot overflow (about 73 years of µs). */
    until_us = EV_MIN(until_us, INT64_MAX / 4000);
    int64_t until_ns = until_us * 1000;

    pthread_mutex_lock(&l->mu);
    if (until_ns > l->pause_ns) {
        l->pause_ns = until_ns;
        /* The first slot after the pause is `until`, the next one T later:
         * the burst is drained so the provider does not get a volley. */
        if (!l->unlimited)
            l->tat_ns = EV_MAX(l->tat_ns, until_ns + l->burst_ns);
        /* Giving back an older slot could now reopen time inside the pause. */
        l->last_seq = 0;
        l->pauses++;
        atomic_store(&l->pause_us, until_us);
    }
    pthread_mutex_unlock(&l->mu);
    if (l->remote.paused != NULL)
        l->remote.paused(l->remote.ctx, until_us);
}

void ev_limiter_pause_clear(ev_limiter_t *l)
{
    int64_t now_ns = ev_clock_now_us(l->clock) * 1000;

    pthread_mutex_lock(&l->mu);
    /* The pause had drained the grid to its end: slots restart now. */
    if (l->pause_ns > now_ns)
        l->tat_ns = EV_MIN(l->tat_ns, now_ns + l->burst_ns);
    l->pause_ns = TAT_NEVER;
    l->last_seq = 0;
    atomic_store(&l->pause_us, 0);
    pthread_mutex_unlock(&l->mu);
}

double ev_limiter_rate_per_s(ev_limiter_t *l)
{
    pthread_mutex_lock(&l->mu);
    double r = l->rate_per_s;
    pthread_mutex_unlock(&l->mu);
    return r;
}

int ev_limiter_set_rate(ev_limiter_t *l, double rate_per_s)
{
    if (l->unlimited || !(rate_per_s > 0 && rate_per_s <= 1e7 / 60))
        return EV_EINVAL;
    pthread_mutex_lock(&l->mu);
    bool changed = rate_per_s != l->rate_per_s;
    if (changed) {
        /* TAT is the last slot plus the old interval: re-base it on the new
         * interval so a slower rate takes effect from the very next slot. */
        int64_t last_slot = l->tat_ns == TAT_NEVER ? TAT_NEVER : l->tat_ns - l->interval_ns;
        set_rate_locked(l, rate_per_s);
        if (last_slot != TAT_NEVER)
            l->tat_ns = last_slot + l->interval_ns;
        /* A faster rate must not reopen time inside a pause. */
        if (l->pause_ns != TAT_NEVER)
            l->tat_ns = EV_MAX(l->tat_ns, l->pause_ns + l->burst_ns);
        l->last_seq = 0; /* a cancel would restore a TAT of the old interval */
    }
    pthread_mutex_unlock(&l->mu);
    if (changed && l->remote.rate_changed != NULL)
        l->remote.rate_changed(l->remote.ctx, rate_per_s);
    return 0;
}

void ev_limiter_stats(ev_limiter_t *l, ev_limiter_stats_t *out)
{
    int64_t now_us = ev_clock_now_us(l->clock);

    pthread_mutex_lock(&l->mu);
    out->rate_per_s = l->rate_per_s;
    out->interval_us = l->unlimited ? 0 : ns_to_us_ceil(l->interval_ns);
    out->granted = l->granted;
    out->rejected = l->rejected;
    out->cancelled = l->cancelled;
    out->pauses = l->pauses;
    out->pause_until_us = l->pause_ns == TAT_NEVER ? 0 : ns_to_us_ceil(l->pause_ns);
    if (l->unlimited)
        out->next_slot_us = EV_MAX(now_us, out->pause_until_us);
    else
        out->next_slot_us = EV_MAX(now_us, ns_to_us_ceil(l->tat_ns - l->burst_ns));
    pthread_mutex_unlock(&l->mu);
}
