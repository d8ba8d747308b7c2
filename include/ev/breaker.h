/*
 * breaker.h - per-provider circuit breaker (SPEC §3 CIRCUIT_BREAKER_*, §6).
 *
 * States and edges:
 *   CLOSED    -> OPEN       when, over the last `window_s` seconds, at least
 *                           `min_calls` results were counted and
 *                           failures / calls >= threshold (reaching the
 *                           threshold exactly opens);
 *   OPEN      -> HALF_OPEN  once `cooldown_s` have passed (checked lazily by
 *                           the next ev_breaker_allow);
 *   HALF_OPEN -> CLOSED     when `half_open_probes` probes all succeeded;
 *   HALF_OPEN -> OPEN       when any probe failed (a new cooldown starts);
 *   any       -> OPEN       on ev_breaker_force_open (daily quota), until a
 *                           given instant.
 * While OPEN, and in HALF_OPEN once all probe places are taken, allow()
 * refuses with EV_EOPEN and the caller falls back to the other provider.
 *
 * Tickets. allow() returns a ticket naming the generation (one per state
 * period) and state it was admitted in; ev_breaker_record() counts the
 * outcome only toward that same period. A slow call admitted while CLOSED
 * that reports during HALF_OPEN (or a later CLOSED period) is ignored, so it
 * can neither decide a trial nor reopen a freshly closed breaker. A probe
 * that never reports is reclaimed after `probe_timeout_s` (default: the
 * cooldown), freeing its place for a new probe, so the breaker never sticks
 * in HALF_OPEN; its late report is then ignored.
 *
 * Outcomes: SUCCESS and FAILURE (a provider-health error: 429, 5xx,
 * timeout, transport error) are counted. NEUTRAL (a bad answer, a config
 * error such as 401, a request too large) says nothing about provider
 * health: it is counted in neither calls nor failures; a neutral probe just
 * frees its place for another probe.
 *
 * Window: a ring of `window_s` one-second buckets (O(window_s) memory,
 * amortised O(1) time); results older than window_s seconds drop out.
 * Closing the breaker empties the window.
 *
 * Learning about changes (for logs and stats, which the caller writes):
 * allow(), record() and force_open() fill an optional ev_breaker_change_t;
 * the stats snapshot also has a transition counter and the time of the
 * last change. ev_breaker_stats() and ev_breaker_state() report the
 * effective state (OPEN past its cooldown reads as HALF_OPEN) without
 * changing anything.
 *
 * Threads: every function is thread-safe. The breaker never logs and never
 * calls the clock while holding its lock.
 */
#ifndef EV_BREAKER_H
#define EV_BREAKER_H

#include "ev/clock.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ev_breaker ev_breaker_t;

typedef enum {
    EV_BREAKER_CLOSED = 0,
    EV_BREAKER_OPEN = 1,
    EV_BREAKER_HALF_OPEN = 2,
} ev_breaker_state_t;

typedef enum {
    EV_BREAKER_SUCCESS = 0,
    EV_BREAKER_FAILURE = 1,
    EV_BREAKER_NEUTRAL = 2,
} ev_breaker_outcome_t;

typedef struct ev_breaker_options {
    double threshold;     /* error rate in (0, 1] that opens */
    int window_s;         /* >= 1: sliding window length */
    int cooldown_s;       /* >= 0: time OPEN before probing */
    int min_calls;        /* >= 1: counted calls in the window before judging */
    int half_open_probes; /* >= 1: probes admitted (and needed) in HALF_OPEN */
    int probe_timeout_s;  /* >= 0: reclaim an unreported probe after this; 0 = cooldown_s
                           * (or 1 s if the cooldown is 0) */
} ev_breaker_options_t;

#define EV_BREAKER_OPTIONS_INIT                                                                    \
    {                                                                                              \
        .threshold = 0.05, .window_s = 120, .cooldown_s = 60, .min_calls = 10,                     \
        .half_open_probes = 1, .probe_timeout_s = 0                                                \
    }

/* What allow() granted. Treat as opaque; pass back to ev_breaker_record. */
typedef struct ev_breaker_ticket {
    uint64_t generation;      /* state period it was admitted in */
    ev_breaker_state_t state; /* CLOSED or HALF_OPEN (OPEN: nothing admitted) */
    uint64_t probe_id;        /* HALF_OPEN only, else 0 */
    int64_t admitted_us;
} ev_breaker_ticket_t;

/* Filled by allow/record/force_open: did this call change the state? */
typedef struct ev_breaker_change {
    bool changed;
    ev_breaker_state_t from, to; /* equal when !changed */
} ev_breaker_change_t;

typedef struct ev_breaker_stats {
    ev_breaker_state_t state; /* effective state now */
    double error_rate;        /* window failures / window calls; 0 with no calls */
    uint64_t window_calls;    /* counted results in the window */
    uint64_t window_failures;
    uint64_t successes; /* counted results since creation */
    uint64_t failures;
    uint64_t neutral;       /* neutral results (never counted as calls) */
    uint64_t rejected;      /* allow() refusals */
    uint64_t stale;         /* results ignored: other period or reclaimed probe */
    uint64_t reclaimed;     /* probes reclaimed after probe_timeout_s */
    uint64_t opened;        /* times the breaker opened (forced included) */
    uint64_t transitions;   /* state changes since creation */
    int64_t last_change_us; /* clock time of the last change (creation time at first) */
    int64_t open_until_us;  /* end of the current cooldown; 0 unless OPEN */
    int probes_in_flight;   /* admitted, unreported HALF_OPEN probes */
} ev_breaker_stats_t;

/*
 * Creates a breaker, CLOSED. `opts` NULL means EV_BREAKER_OPTIONS_INIT.
 * `clock` must outlive it. Returns 0 and sets *out, or EV_EINVAL (*out NULL)
 * for a threshold outside (0, 1], window_s < 1, window_s > 86400,
 * cooldown_s < 0, min_calls < 1, half_open_probes < 1 or > 64,
 * probe_timeout_s < 0 or a NULL clock. Free with ev_breaker_free.
 */
int ev_breaker_new(ev_breaker_t **out, const ev_breaker_options_t *opts, const ev_clock_t *clock);

/* Frees the breaker; accepts NULL. No thread may be using it. */
void ev_breaker_free(ev_breaker_t *b);

/*
 * Asks to make one call. Returns 0 and fills *ticket when the call may go
 * (CLOSED, or a HALF_OPEN probe place was free), or EV_EOPEN when the caller
 * must fall back (ticket->state is then OPEN and must not be recorded).
 * Performs due time-based transitions (OPEN -> HALF_OPEN, probe reclaim);
 * `change` (may be NULL) says whether the state changed.
 */
int ev_breaker_allow(ev_breaker_t *b, ev_breaker_ticket_t *ticket, ev_breaker_change_t *change);

/*
 * Reports the outcome of a call admitted by allow(); call exactly once per
 * ticket. Returns 0 when the outcome was counted, EV_ENOTFOUND when it was
 * ignored because the breaker has since moved to another period or the
 * probe was reclaimed (not an error for the caller; counted in stats.stale),
 * EV_EINVAL for a ticket that admitted nothing or a bad outcome.
 * `change` (may be NULL) says whether the state changed.
 */
int ev_breaker_record(ev_breaker_t *b, const ev_breaker_ticket_t *ticket,
                      ev_breaker_outcome_t outcome, ev_breaker_change_t *change);

/*
 * Opens the breaker until `until_us` (clock time), e.g. after a daily quota
 * error (reset at midnight Pacific). If already OPEN the cooldown is only
 * ever extended. Afterwards it probes as after a normal cooldown.
 */
void ev_breaker_force_open(ev_breaker_t *b, int64_t until_us, ev_breaker_change_t *change);

/*
 * A cluster behind this breaker (src/cluster.c). `claim_probe` is asked
 * before a HALF_OPEN probe is admitted: false refuses it (EV_EOPEN), so that
 * one probe runs for the whole cluster. `changed` is told of every state
 * change made by allow, record and force_open (not by ev_breaker_reset),
 * with the end of the opening when `to` is OPEN and whether it was forced.
 * Both are called without the breaker's lock, on the caller's thread.
 */
typedef struct ev_breaker_hooks {
    bool (*claim_probe)(void *ctx);
    void (*changed)(void *ctx, ev_breaker_state_t from, ev_breaker_state_t to,
                    int64_t open_until_us, bool forced);
    void *ctx;
} ev_breaker_hooks_t;

/* Installs (NULL: removes) the hooks. Call before any thread uses the
 * breaker; `hooks` is copied, its ctx must outlive the breaker. */
void ev_breaker_set_hooks(ev_breaker_t *b, const ev_breaker_hooks_t *hooks);

/* Closes the breaker now whatever its state (an operator's or the cluster's
 * reset): the window is emptied and pending probes are forgotten. */
void ev_breaker_reset(ev_breaker_t *b, ev_breaker_change_t *change);

/* Effective state now (no side effects). */
ev_breaker_state_t ev_breaker_state(ev_breaker_t *b);

/* Consistent snapshot (no state change; old window buckets are dropped). */
void ev_breaker_stats(ev_breaker_t *b, ev_breaker_stats_t *out);

/* "closed", "open", "half_open" (static strings; "unknown" otherwise). */
const char *ev_breaker_state_name(ev_breaker_state_t state);

#endif
