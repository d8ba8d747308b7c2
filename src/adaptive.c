/*
 * adaptive.c - a provider's request rate learned from its 429s, stated
 * limits and rate-limit headers (AIMD under a ceiling; see adaptive.h).
 *
 * What: turns each finished call into the rate the limiter should use. How:
 * a multiplicative decrease per 429 epoch (jumping straight to a limit the
 * provider stated), an additive, time-based increase on success, capped by
 * the ceiling, by the rate of the last 429 while its hold lasts, and by the
 * pace the Groq headers allow.
 *
 * Threads: any worker thread observes; the stats thread snapshots.
 *
 * Locking: one leaf lock, `mu`, guards every mutable field. The clock is
 * read before taking it; nothing is called while it is held.
 */
#include "ev/adaptive.h"

#include "ev/error.h"
#include "ev/util.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

/* Most of one second of success counts towards an increase at a time, so a
 * lull followed by one success does not jump the rate to the ceiling. */
#define MAX_STEP_US 1000000

struct ev_adaptive {
    /* Immutable after ev_adaptive_new. */
    const ev_clock_t *clock;
    ev_adaptive_options_t o;
    double floor_per_s;
    double top_per_s; /* the ceiling less the jitter margin */

    pthread_mutex_t mu;
    double rate;              /* guarded by mu: the learned (AIMD) rate */
    double hold_cap;          /* guarded by mu: cap while now < hold_until_us */
    int64_t hold_until_us;    /* guarded by mu */
    int64_t last_change_us;   /* guarded by mu: last increase or decrease */
    int64_t last_decrease_us; /* guarded by mu: INT64_MIN before the first */
    double stated_per_min;    /* guarded by mu */
    bool stated_at_ceiling;   /* guarded by mu: the last stated limit is >= the ceiling */
    double header_cap;        /* guarded by mu: pace the headers allow */
    int64_t header_until_us;  /* guarded by mu */
    uint64_t decreases;       /* guarded by mu */
    uint64_t absorbed;        /* guarded by mu */
};

int ev_adaptive_new(ev_adaptive_t **out, const ev_adaptive_options_t *opts, const ev_clock_t *clock)
{
    int rc = 0;
    ev_adaptive_t *a = NULL;

    *out = NULL;
    if (clock == NULL || opts == NULL || !(opts->ceiling_per_s > 0 && opts->ceiling_per_s < 1e9) ||
        !(opts->safety_factor > 0 && opts->safety_factor <= 1) ||
        !(opts->decrease > 0 && opts->decrease < 1) ||
        !(opts->increase_per_s > 0 && opts->increase_per_s <= 100) ||
        !(opts->floor_fraction > 0 && opts->floor_fraction <= 1) || opts->hold_us < 0) {
        rc = EV_EINVAL;
        goto out;
    }
    a = ev_calloc(1, sizeof(*a));
    a->clock = clock;
    a->o = *opts;
    a->floor_per_s = opts->ceiling_per_s * opts->floor_fraction;
    a->top_per_s = EV_MAX(a->floor_per_s, opts->ceiling_per_s * (1 - opts->decrease / 10));
    EV_ASSERT(pthread_mutex_init(&a->mu, NULL) == 0);
    a->rate = a->top_per_s;
    a->hold_cap = a->top_per_s;
    a->last_change_us = ev_clock_now_us(clock);
    a->last_decrease_us = INT64_MIN;
    *out = a;
out:
    return rc;
}

void ev_adaptive_free(ev_adaptive_t *a)
{
    if (a == NULL)
        return;
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* The rate to use now. Requires mu. */
static double effective(const ev_adaptive_t *a, int64_t now)
{
    double r = a->rate;
    if (now < a->header_until_us)
        r = EV_MIN(r, a->header_cap);
    return EV_MAX(r, a->floor_per_s);
}

/* A per-minute 429 of a call released at or after the last decrease.
 * Requires mu. Returns whether it was absorbed (the rate went down). */
static bool on_rate_limited(ev_adaptive_t *a, const ev_adaptive_signal_t *s, int64_t now)
{
    double bad = a->rate;
    double next = bad * (1 - a->o.decrease);
    /* Without a stated limit the real one is somewhere under `bad`. */
    double cap = bad * (1 - a->o.decrease / 4);

    if (s->stated_per_min > 0) {
        /* The provider said what its limit is: go just under it at once.
         * A 429 below it means the provider's window is still full of
         * calls made at the old rate, or someone else shares the quota:
         * step down, but not below one decrease under the stated limit. */
        double target = EV_MIN(a->o.ceiling_per_s, s->stated_per_min * a->o.safety_factor / 60);
        double keep = EV_MIN(a->top_per_s, target * (1 - a->o.decrease / 10));
        if (bad > keep)
            next = keep;
        else
            next = EV_MIN(bad, EV_MAX(next, target * (1 - a->o.decrease)));
        cap = keep;
        a->stated_per_min = s->stated_per_min;
        a->stated_at_ceiling = target >= a->o.ceiling_per_s;
    }
    if (bad <= a->floor_per_s)
        return false;
    a->rate = EV_MAX(next, a->floor_per_s);
    a->hold_cap = EV_MAX(cap, a->rate);
    a->hold_until_us = now + a->o.hold_us;
    a->last_decrease_us = now;
    a->last_change_us = now;
    a->decreases++;
    return true;
}

/* A call the provider answered. Requires mu. */
static void on_success(ev_adaptive_t *a, const ev_adaptive_signal_t *s, int64_t now)
{
    if (s->remaining_requests >= 0 && s->reset_requests_ms > 0) {
        /* Faster than remaining / reset would hit the wall before it resets. */
        a->header_cap = (double)s->remaining_requests * 1000.0 / (double)s->reset_requests_ms;
        a->header_until_us = now + EV_MAX(a->o.hold_us, (int64_t)1000000);
    }
    if (s->released_us < a->last_decrease_us)
        return;
    double cap = a->top_per_s;
    /* Probing finds a quota that came back; a stated limit at or above the
     * ceiling can only come back to the ceiling itself, which would merely
     * trade the margin under it for a 429 per hold. */
    if (now < a->hold_until_us || a->stated_at_ceiling)
        cap = EV_MIN(cap, a->hold_cap);
    int64_t dt = EV_MIN(now - a->last_change_us, (int64_t)MAX_STEP_US);
    if (dt <= 0 || a->rate >= cap)
        return;
    a->rate = EV_MIN(cap, a->rate + a->o.increase_per_s * a->o.ceiling_per_s * (double)dt / 1e6);
    a->last_change_us = now;
}

double ev_adaptive_observe(ev_adaptive_t *a, const ev_adaptive_signal_t *s, bool *absorbed)
{
    int64_t now = ev_clock_now_us(a->clock);
    bool abs = false;

    pthread_mutex_lock(&a->mu);
    if (s->rate_limited) {
        if (s->released_us < a->last_decrease_us) {
            abs = true;
            a->absorbed++;
        } else {
            abs = on_rate_limited(a, s, now);
        }
    } else if (s->ok) {
        on_success(a, s, now);
    }
    double r = effective(a, now);
    pthread_mutex_unlock(&a->mu);
    if (absorbed != NULL)
        *absorbed = abs;
    return r;
}

double ev_adaptive_rate_per_s(ev_adaptive_t *a)
{
    int64_t now = ev_clock_now_us(a->clock);
    pthread_mutex_lock(&a->mu);
    double r = effective(a, now);
    pthread_mutex_unlock(&a->mu);
    return r;
}

void ev_adaptive_adopt(ev_adaptive_t *a, double rate_per_s)
{
    int64_t now = ev_clock_now_us(a->clock);
    if (!(rate_per_s > 0))
        return;
    pthread_mutex_lock(&a->mu);
    double r = EV_MIN(a->top_per_s, EV_MAX(a->floor_per_s, rate_per_s));
    if (r < a->rate) {
        a->hold_cap = r;
        a->hold_until_us = now + a->o.hold_us;
        a->last_decrease_us = now;
    }
    a->rate = r;
    a->last_change_us = now;
    pthread_mutex_unlock(&a->mu);
}

void ev_adaptive_stats(ev_adaptive_t *a, ev_adaptive_stats_t *out)
{
    int64_t now = ev_clock_now_us(a->clock);
    pthread_mutex_lock(&a->mu);
    out->rate_per_s = effective(a, now);
    out->ceiling_per_s = a->o.ceiling_per_s;
    out->learned_per_s = a->rate;
    out->stated_per_min = a->stated_per_min;
    out->decreases = a->decreases;
    out->absorbed = a->absorbed;
    out->hold_until_us = a->hold_until_us;
    pthread_mutex_unlock(&a->mu);
}
