/*
 * adaptive.h - a provider's request rate learned from its own signals.
 *
 * The configured rate (`*_RPM_LIMIT × safety / 60`) is a guess. With
 * ADAPTIVE_LIMITS on it becomes a CEILING, and this controller finds the
 * real limit under it (additive increase, multiplicative decrease). It
 * starts at, and never rises above, `top = ceiling × (1 - decrease / 10)`
 * (99 % by default): a limiter at exactly a sliding window's rate can
 * release one call more than the window holds (its jittered wake-ups may
 * bunch, see limiter.h), so 1 % under it is what keeps a correct ceiling
 * free of 429s.
 *
 *   a per-minute 429   rate = rate × (1 - decrease)          (default 10 %)
 *                      or, when the 429 states the limit L (Gemini's
 *                      QuotaFailure quotaValue, Groq's "Limit N" on RPM)
 *                      and we were above it, at once just under it:
 *                      keep = min(ceiling, L × safety / 60) × (1 - decrease/10);
 *                      a 429 at or under `keep` steps down, but not below
 *                      min(ceiling, L × safety / 60) × (1 - decrease) (the
 *                      provider's window is still draining the old rate);
 *   a success          rate += increase_per_s × ceiling × dt  (dt = time
 *                      since the last change, at most one second), never
 *                      above `top` nor, during the hold, above just under
 *                      the rate the last 429 was seen at.
 *
 * Why the hold. A sliding-window quota that is full refuses every call above
 * its rate at once, so climbing straight back past the rate of the last 429
 * would buy a 429 every few seconds. After a 429 the rate climbs back quickly
 * to just under where it hit (or to the stated limit) and stays there for
 * `hold_us`; only then does it probe upwards again, which is how it finds a
 * quota that came back. One probe per hold costs a handful of 429s at most.
 * A stated limit at or above the ceiling is never probed past: the ceiling
 * is all a probe could find, and a 1 % margin under a sliding window's exact
 * limit is what keeps jittered calls out of it.
 *
 * One epoch per decrease. Calls in flight when the rate was lowered were
 * released at the old rate: their 429s say nothing new, so a 429 for a call
 * released before the last decrease is absorbed without lowering again (TCP's
 * rule of one reduction per window). Their successes do not raise it either.
 *
 * The floor. The rate never goes below `floor_fraction × ceiling`. A 429 at
 * the floor is not absorbed: ev_adaptive_observe reports it so the caller
 * counts it against the provider (the breaker) as before.
 *
 * Header pace. Groq's x-ratelimit-remaining-requests / -reset-requests say
 * how many calls are left and when they are all back: calls faster than
 * remaining / reset would run into the wall, so that pace caps the rate for
 * as long as the headers keep saying so (`hold_us` after the last one).
 *
 * Daily quotas are not rate signals (the router cools the provider down), so
 * callers pass only per-minute 429s as `rate_limited`.
 *
 * Threads: every function is thread-safe (one leaf lock; the clock is read
 * before taking it). The controller never logs.
 */
#ifndef EV_ADAPTIVE_H
#define EV_ADAPTIVE_H

#include "ev/clock.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ev_adaptive ev_adaptive_t;

typedef struct ev_adaptive_options {
    double ceiling_per_s;  /* > 0: the configured rate, never exceeded */
    double safety_factor;  /* (0, 1]: applied to a limit the provider states */
    double decrease;       /* (0, 1): fraction removed per 429 epoch */
    double increase_per_s; /* > 0: fraction of the ceiling regained per second of success */
    double floor_fraction; /* (0, 1]: lowest rate, as a fraction of the ceiling */
    int64_t hold_us;       /* >= 0: how long the rate stays under the last 429 */
} ev_adaptive_options_t;

#define EV_ADAPTIVE_OPTIONS_INIT                                                                   \
    {                                                                                              \
        .ceiling_per_s = 1, .safety_factor = 1, .decrease = 0.1, .increase_per_s = 0.02,           \
        .floor_fraction = 0.02, .hold_us = 30000000                                                \
    }

/* What one finished call tells the controller. */
typedef struct ev_adaptive_signal {
    int64_t released_us;        /* clock time the limiter released the call */
    bool ok;                    /* the provider answered (any non-429 HTTP answer) */
    bool rate_limited;          /* a per-minute (not daily) 429 */
    double stated_per_min;      /* the per-minute limit the 429 stated; 0 unknown */
    int64_t remaining_requests; /* header, -1 absent */
    int64_t reset_requests_ms;  /* header, -1 absent */
} ev_adaptive_signal_t;

#define EV_ADAPTIVE_SIGNAL_INIT                                                                    \
    {                                                                                              \
        .released_us = 0, .ok = false, .rate_limited = false, .stated_per_min = 0,                 \
        .remaining_requests = -1, .reset_requests_ms = -1                                          \
    }

typedef struct ev_adaptive_stats {
    double rate_per_s;     /* the rate to use now (header pace included) */
    double ceiling_per_s;  /* immutable */
    double learned_per_s;  /* the AIMD rate alone */
    double stated_per_min; /* the last limit a 429 stated, 0 none */
    uint64_t decreases;    /* 429 epochs that lowered the rate */
    uint64_t absorbed;     /* 429s of calls released before the last decrease */
    int64_t hold_until_us;
} ev_adaptive_stats_t;

/* Creates a controller starting at the ceiling. Returns 0, or EV_EINVAL
 * (*out NULL) for options outside their ranges or a NULL clock (which must
 * outlive the controller). Free with ev_adaptive_free (accepts NULL). */
int ev_adaptive_new(ev_adaptive_t **out, const ev_adaptive_options_t *opts,
                    const ev_clock_t *clock);
void ev_adaptive_free(ev_adaptive_t *a);

/*
 * Feeds one finished call and returns the rate (calls per second) to use
 * from now on. *absorbed (may be NULL) is set to true when the signal was a
 * 429 the controller absorbed (it lowered the rate, or the call was released
 * before the last decrease); false for a 429 at the floor and for anything
 * that is not a 429.
 */
double ev_adaptive_observe(ev_adaptive_t *a, const ev_adaptive_signal_t *s, bool *absorbed);

/* The rate to use now (calls per second). */
double ev_adaptive_rate_per_s(ev_adaptive_t *a);

/*
 * Makes a rate learned elsewhere this controller's own: another replica's,
 * arriving through the cluster's shared rate row. The learned rate becomes
 * `rate_per_s` (within the floor and the top); a lower one also starts a
 * hold there and a new epoch, as if this controller had seen that replica's
 * 429, so the replicas learn one rate instead of overwriting each other.
 */
void ev_adaptive_adopt(ev_adaptive_t *a, double rate_per_s);

/* Consistent snapshot. */
void ev_adaptive_stats(ev_adaptive_t *a, ev_adaptive_stats_t *out);

#endif
