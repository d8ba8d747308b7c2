/*
 * backoff.h - retry delays: exponential backoff with full jitter that never
 * undercuts the server's suggested delay (SPEC §3 RETRY_BASE_MS,
 * RETRY_MAX_MS; §6; PROVIDERS.md "retrying faster than the server asked").
 *
 * For retry number `attempt` (0 for the first retry):
 *
 *     ceiling = min(max_ms, base_ms × 2^attempt)
 *     full    = uniform integer in [0, ceiling]                (full jitter)
 *     delay   = full                                            without a hint
 *     delay   = max(full, hint + uniform integer in [0, min(hint_jitter_ms, hint)])
 *                                                               with a hint > 0
 *
 * So a delay is never shorter than the server asked, and threads that got
 * the same hint do not all come back at the same instant. A hint longer
 * than max_ms is still honoured (the server knows its quota); deciding that
 * a hint is too long to wait for (RETRY_MAX_WAIT_MS) is the caller's job.
 *
 * The random source is injectable so tests are deterministic. Pure
 * functions apart from the random source and ev_backoff_sleep's clock;
 * thread-safe as long as the random source is. Never logs.
 */
#ifndef EV_BACKOFF_H
#define EV_BACKOFF_H

#include "ev/clock.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct ev_backoff_options {
    int64_t base_ms;        /* >= 1: ceiling of the first retry */
    int64_t max_ms;         /* >= base_ms: cap of the ceiling */
    int64_t hint_jitter_ms; /* >= 0: most added on top of a server hint */
    /* Uniform in [0, 1); NULL uses ev_rand01(). Must be thread-safe if the
     * options are shared between threads. */
    double (*rand01)(void *ctx);
    void *rand_ctx;
} ev_backoff_options_t;

#define EV_BACKOFF_OPTIONS_INIT                                                                    \
    {                                                                                              \
        .base_ms = 1000, .max_ms = 60000, .hint_jitter_ms = 1000, .rand01 = NULL, .rand_ctx = NULL \
    }

/* 0 when the options are usable, EV_EINVAL otherwise (see field comments). */
int ev_backoff_options_check(const ev_backoff_options_t *o);

/* min(max_ms, base_ms × 2^attempt); attempt < 0 counts as 0; no overflow. */
int64_t ev_backoff_ceiling_ms(const ev_backoff_options_t *o, int attempt);

/*
 * The delay before retry `attempt` (see the formula above).
 * `server_hint_ms` <= 0 means no hint. Options must pass
 * ev_backoff_options_check (asserted).
 */
int64_t ev_backoff_delay_ms(const ev_backoff_options_t *o, int attempt, int64_t server_hint_ms);

/* Real-time step between checks of `stop` in ev_backoff_sleep. */
#define EV_BACKOFF_SLEEP_STEP_US 50000

/*
 * Sleeps `delay_ms` on `clock` in steps of at most EV_BACKOFF_SLEEP_STEP_US,
 * checking `stop` (may be NULL) before each step. Returns 0 after the full
 * delay or EV_ESHUTDOWN as soon as *stop is seen true.
 */
int ev_backoff_sleep(const ev_clock_t *clock, int64_t delay_ms, const atomic_bool *stop);

#endif
