/*
 * limiter.h - per-provider rate limiter: slot reservation with bounded jitter.
 *
 * One limiter per provider allows `rate = rpm × safety_factor / 60` calls per
 * second (SPEC §3 *_RPM_LIMIT, *_SAFETY_FACTOR) and spreads wake-ups with
 * jitter WITHOUT lowering that rate (SPEC §6, last paragraph).
 *
 * Why not the old design. The original limiter slept `interval × f` between
 * calls with f drawn uniformly from [jitter_min, jitter_max] = [0.9, 1.6].
 * The mean spacing was then E[f] × interval = 1.25 × interval, so it
 * delivered 1 / 1.25 = 0.80 of the configured rate: a fifth of the quota was
 * given away, and no choice of factors >= 1 on average can avoid that loss
 * because the jitter is added to the spacing itself.
 *
 * The grid (virtual scheduling / GCRA). Let T = 1 / rate (the interval,
 * kept in nanoseconds, rounded up). The limiter keeps a theoretical arrival
 * time TAT. A caller arriving at time `now` reserves the slot
 *
 *     slot = max(now, TAT - (burst - 1) × T)          then   TAT = max(TAT, slot) + T
 *
 * i.e. `next = max(now, last_slot + T)` with up to `burst` slots allowed
 * back to back after an idle period (a token bucket of capacity `burst`
 * refilled at `rate`). Every slot is handed to exactly one caller, so while
 * callers keep coming the slots are exactly T apart and the long-run rate is
 * exactly `rate`. Slots in any closed window of length W number at most
 * `burst + ceil(W × rate)` (floor(W × rate) on the exact grid; the ceil
 * covers rounding slots up to whole microseconds).
 *
 * How jitter maps to the wake offset. Jitter never moves the grid; it only
 * decides when the caller that owns a slot wakes up, always at or after its
 * own slot and less than one interval later:
 *
 *     f      = uniform in [jitter_min, jitter_max)       (the old factor)
 *     span   = min(1, jitter_max - jitter_min)            (fraction of T)
 *     offset = floor(((f - jitter_min) / (jitter_max - jitter_min)) × span × T)
 *            = floor(u × span × T),  u uniform in [0, 1)
 *     wake   = slot + offset,        0 <= offset < span × T <= T
 *
 * With the default [0.9, 1.6] a caller wakes uniformly within the first 70 %
 * of the interval after its slot. jitter_enabled = false, or jitter_min ==
 * jitter_max, gives offset 0. Because each offset is bounded by one interval
 * and does not feed back into TAT, the k-th wake happens at most T after the
 * k-th slot, so over a long run the number of wakes equals the number of
 * slots up to one: the long-run rate is the configured one, whatever the
 * jitter settings. Offsets are never negative, so no caller starts before
 * its slot (the provider never sees a call the grid did not allow).
 *
 * The release bound. In ANY closed window of clock time of length W the
 * number of wake times (calls released) is at most
 *
 *     burst + ceil(W × rate) + 1
 *
 * Proof: a wake in [a, a+W] belongs to a slot in (a - T, a+W], a window of
 * length less than W + T, holding at most burst + floor(W × rate + 1) slots.
 * The bound holds for any jitter draw, any interleaving of threads, any
 * clock reads (even stale ones), pauses and cancellations.
 *
 * Pauses. After a 429 the whole provider is out of quota, not one thread:
 * ev_limiter_pause_until(l, until) makes every later reservation start at or
 * after `until`, drains the burst (the first slot after the pause is at
 * `until`, the next at `until + T`, ...), and makes callers sleeping in
 * ev_limiter_acquire on a slot before `until` reserve again.
 *
 * Threads: every function is thread-safe. The limiter never logs, never
 * calls the clock or the random source while holding its lock.
 */
#ifndef EV_LIMITER_H
#define EV_LIMITER_H

#include "ev/clock.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct ev_limiter ev_limiter_t;

typedef struct ev_limiter_options {
    double rpm;            /* provider's requests per minute; 0 = unlimited (no waiting) */
    double safety_factor;  /* (0, 1]: fraction of rpm actually used */
    bool jitter_enabled;   /* spread wake-ups inside the interval after each slot */
    double jitter_min;     /* >= 0; only the width jitter_max - jitter_min matters */
    double jitter_max;     /* >= jitter_min */
    int burst;             /* >= 1: slots allowed back to back after idling */
    int64_t sleep_step_us; /* acquire sleeps at most this long between checks of
                            * `stop` and of pauses; >= 1 */
    /* Random source in [0, 1) for the jitter; NULL uses ev_rand01(). Called
     * from many threads at once, never with a lock held. */
    double (*rand01)(void *ctx);
    void *rand_ctx;
} ev_limiter_options_t;

#define EV_LIMITER_OPTIONS_INIT                                                                    \
    {                                                                                              \
        .rpm = 0, .safety_factor = 0.9, .jitter_enabled = true, .jitter_min = 0.9,                 \
        .jitter_max = 1.6, .burst = 1, .sleep_step_us = 50000, .rand01 = NULL, .rand_ctx = NULL    \
    }

/* One reserved slot. The caller reads slot_us, wake_us and wait_us; the
 * other fields are private to the limiter (used by ev_limiter_cancel). */
typedef struct ev_limiter_reservation {
    int64_t slot_us; /* the grid slot, clock time (µs) */
    int64_t wake_us; /* slot_us + jitter offset: when the call may start */
    int64_t wait_us; /* wake_us - now at reservation time, >= 0 */
    /* private */
    uint64_t seq;
    int64_t tat_before_ns;
} ev_limiter_reservation_t;

typedef struct ev_limiter_stats {
    double rate_per_s;      /* rpm × safety / 60; 0 when unlimited */
    int64_t interval_us;    /* T rounded up to µs; 0 when unlimited */
    uint64_t granted;       /* successful reservations (acquire re-reservations included) */
    uint64_t rejected;      /* reservations refused with EV_ELIMIT */
    uint64_t cancelled;     /* slots given back by ev_limiter_cancel */
    uint64_t pauses;        /* ev_limiter_pause_until calls that extended the pause */
    int64_t pause_until_us; /* latest pause end (0 if never paused) */
    int64_t next_slot_us;   /* earliest slot a reservation made now could get */
} ev_limiter_stats_t;

/*
 * Creates a limiter. `opts` NULL means EV_LIMITER_OPTIONS_INIT (unlimited).
 * `clock` must outlive the limiter. Returns 0 and sets *out, or EV_EINVAL
 * (*out NULL) when rpm < 0 or > 1e7, safety_factor outside (0, 1] with
 * rpm > 0, rpm × safety_factor below 0.001 (about one call a day),
 * jitter_min < 0, jitter_max < jitter_min, burst < 1, sleep_step_us < 1,
 * or clock is NULL. Free with ev_limiter_free.
 */
int ev_limiter_new(ev_limiter_t **out, const ev_limiter_options_t *opts, const ev_clock_t *clock);

/* Frees the limiter; accepts NULL. No thread may be using it. */
void ev_limiter_free(ev_limiter_t *l);

/*
 * Reserves the next slot on the grid and says how long to wait for it.
 *
 * `max_wait_us` < 0 means no limit. If the slot is more than max_wait_us
 * away, nothing is reserved, out->wait_us is set to the wait the slot would
 * have needed (out->slot_us/wake_us to the slot) and EV_ELIMIT is returned:
 * the caller should fall back instead of waiting. Otherwise returns 0; the
 * jitter offset is shortened if needed so that out->wait_us <= max_wait_us.
 * Unlimited limiters return 0 with wait 0 at once.
 */
int ev_limiter_reserve(ev_limiter_t *l, ev_limiter_reservation_t *out, int64_t max_wait_us);

/*
 * Gives back a reserved slot that will not be used. Only the most recent
 * reservation can be given back (the grid cannot have holes): returns 0 when
 * the slot was returned, EV_EBUSY when a later reservation or a pause came
 * first (the slot is then simply left unused, which is always safe).
 */
int ev_limiter_cancel(ev_limiter_t *l, const ev_limiter_reservation_t *r);

/*
 * Reserves a slot and sleeps on the clock until its wake time, in steps of
 * at most opts.sleep_step_us. Between steps it checks `stop` (may be NULL)
 * and pauses: if a pause now covers the reserved slot it reserves again
 * (the old slot is abandoned). `max_wait_us` (< 0: none) bounds the total
 * time spent here, including re-reservations.
 *
 * Returns 0 when the caller may start its request, EV_ELIMIT when the wait
 * would exceed max_wait_us (nothing left reserved), EV_ESHUTDOWN when *stop
 * became true (the slot is given back if possible). `waited_us` (may be
 * NULL) receives the time spent, on every path.
 */
int ev_limiter_acquire(ev_limiter_t *l, int64_t *waited_us, int64_t max_wait_us,
                       const atomic_bool *stop);

/*
 * Provider-wide pause (a 429 with a suggested delay, a daily quota): no slot
 * before `until_us` (clock time) for any thread, then slots restart at
 * `until_us` one interval apart (the burst is drained). A pause never
 * shortens an earlier, longer one. Works on unlimited limiters too.
 */
void ev_limiter_pause_until(ev_limiter_t *l, int64_t until_us);

/*
 * A cluster-wide grid behind this limiter (src/cluster.c). With a remote set,
 * ev_limiter_acquire takes its slots from `reserve` instead of the local
 * grid (jitter, pauses, `stop` and max_wait_us behave as documented above),
 * and every ev_limiter_pause_until is also reported to `paused` so the
 * pause can be shared. ev_limiter_reserve/cancel keep using the local grid.
 */
typedef struct ev_limiter_remote {
    /* Reserves one slot at most max_wait_us away (< 0: no limit). Returns 0
     * and *wait_us >= 0 (from the moment it returns, on the limiter's clock);
     * EV_ELIMIT with *wait_us = the wait it would have needed and nothing
     * reserved. Thread-safe; called without the limiter's lock. */
    int (*reserve)(void *ctx, int64_t max_wait_us, int64_t *wait_us);
    /* Told of each pause made through ev_limiter_pause_until (clock time);
     * may be NULL. Called without the limiter's lock. */
    void (*paused)(void *ctx, int64_t until_us);
    /* Told when ev_limiter_set_rate changed the rate (a learned rate to
     * share); may be NULL. Called without the limiter's lock. */
    void (*rate_changed)(void *ctx, double rate_per_s);
    void *ctx;
} ev_limiter_remote_t;

/* Installs (or, with NULL, removes) the remote. Call before any thread uses
 * the limiter; `remote` is copied, its ctx must outlive the limiter. */
void ev_limiter_set_remote(ev_limiter_t *l, const ev_limiter_remote_t *remote);

/* Ends the current pause now (an operator's resume). Slots already granted
 * keep their times. */
void ev_limiter_pause_clear(ev_limiter_t *l);

/* The current rate: rpm × safety_factor / 60 unless ev_limiter_set_rate
 * changed it; 0 for an unlimited limiter. */
double ev_limiter_rate_per_s(ev_limiter_t *l);

/*
 * Changes the rate of a limited limiter (the adaptive controller's learned
 * rate; an unlimited limiter stays unlimited). Slots already handed out
 * keep their times; the next one is one NEW interval after the last, so the
 * release bound holds for the new rate from the last reservation on.
 * Returns 0, or EV_EINVAL for a rate outside (0, 1e7 / 60] or an unlimited
 * limiter.
 */
int ev_limiter_set_rate(ev_limiter_t *l, double rate_per_s);

/* Consistent snapshot of the counters. */
void ev_limiter_stats(ev_limiter_t *l, ev_limiter_stats_t *out);

#endif
