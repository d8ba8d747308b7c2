/*
 * retry_budget.h - per-provider retry budget (SPEC §3 RETRY_BUDGET_RATIO;
 * the Envoy / Google SRE book "retry budget").
 *
 * Retries may add at most `ratio` (default 0.2) on top of the first attempts
 * made to the provider over a sliding window (the breaker's window length),
 * so a struggling provider sees at most 1.2× its normal load from us instead
 * of (MAX_RETRIES + 1)×. A retry is allowed when, in the window,
 *
 *     retries_so_far < max(min_retries, floor(ratio × first_attempts))
 *
 * min_retries (default 3 per window) lets a low-traffic provider still
 * retry. Counting uses one-second buckets in a ring (O(window_s) memory).
 *
 * Threads: all functions are thread-safe. Never logs; never calls the clock
 * while holding its lock.
 */
#ifndef EV_RETRY_BUDGET_H
#define EV_RETRY_BUDGET_H

#include "ev/clock.h"

#include <stdint.h>

typedef struct ev_retry_budget ev_retry_budget_t;

typedef struct ev_retry_budget_options {
    double ratio;    /* >= 0: retries per first attempt allowed in the window */
    int window_s;    /* 1 .. 86400 */
    int min_retries; /* >= 0: retries always allowed per window */
} ev_retry_budget_options_t;

#define EV_RETRY_BUDGET_OPTIONS_INIT                                                               \
    {                                                                                              \
        .ratio = 0.2, .window_s = 120, .min_retries = 3                                            \
    }

typedef struct ev_retry_budget_stats {
    uint64_t window_attempts;   /* first attempts in the window */
    uint64_t window_retries;    /* retries granted in the window */
    uint64_t allowed_in_window; /* max(min_retries, floor(ratio × window_attempts)) */
    uint64_t total_attempts;
    uint64_t total_retries; /* granted since creation */
    uint64_t total_denied;  /* refused since creation */
} ev_retry_budget_stats_t;

/*
 * Creates a retry budget; `opts` NULL means EV_RETRY_BUDGET_OPTIONS_INIT.
 * `clock` must outlive it. Returns 0 and sets *out, or EV_EINVAL (*out NULL)
 * for out-of-range options or a NULL clock. Free with ev_retry_budget_free.
 */
int ev_retry_budget_new(ev_retry_budget_t **out, const ev_retry_budget_options_t *opts,
                        const ev_clock_t *clock);

/* Frees it; accepts NULL. */
void ev_retry_budget_free(ev_retry_budget_t *rb);

/* Counts one first attempt (call it for every non-retry request sent). */
void ev_retry_budget_note_attempt(ev_retry_budget_t *rb);

/* Asks to retry: 0 when allowed (the retry is counted), EV_EBUDGET when the
 * window's retry allowance is used up (fall back or give up instead). */
int ev_retry_budget_try_retry(ev_retry_budget_t *rb);

/* Consistent snapshot (expired buckets are dropped first). */
void ev_retry_budget_stats(ev_retry_budget_t *rb, ev_retry_budget_stats_t *out);

#endif
