/*
 * tpm.h - a provider's tokens-per-minute limit, kept on our side.
 *
 * Groq's binding limit is usually tokens per minute, counted over a sliding
 * minute. The meter keeps the tokens of the calls we released in one-second
 * buckets covering the last EV_TPM_WINDOW_S seconds (one more than a minute,
 * so a provider whose second boundaries differ from ours never sees more
 * than the limit in its own minute). A call may start when
 *
 *     tokens in the window + its estimate <= limit
 *
 * otherwise it is placed in the first later second where its tokens fit in
 * every window that second belongs to, counting the calls already placed
 * ahead of it, and sleeps until then, just as the request limiter hands out
 * slots: waiting calls are served in the order they came, so a large call is
 * never starved by small ones. While it waits, a call moves to an earlier
 * second as soon as one fits (the calls before it used fewer tokens than
 * estimated). The estimate is the input estimate
 * (ev_tpm_estimate_input: text, images, PDF pages; deliberately high, and
 * scaled down to at most 10 points above the ratio real/estimated input of
 * the calls settled so far, never above the raw estimate) plus
 * the output the call will probably produce: twice the average output of the
 * calls settled so far plus a margin, never more than the call allows
 * (max_output_tokens), and that whole allowance until a call was settled.
 * Charging every call its whole allowance would leave the allowance minus
 * the real output unused in every minute. When the provider reports the
 * call's real usage, ev_tpm_settle puts that in place of the estimate. When the provider says
 * how many tokens it has left (Groq's x-ratelimit-remaining-tokens), usage we
 * did not see (another process on the same key) is added so the meter never
 * believes in more room than the provider has.
 *
 * A limit of 0 means none: every acquire returns at once (the meter still
 * counts tokens for /stats).
 *
 * Threads: every function is thread-safe (one leaf lock; the clock is read
 * and slept on outside it). The meter never logs.
 */
#ifndef EV_TPM_H
#define EV_TPM_H

#include "ev/clock.h"
#include "ev/provider.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define EV_TPM_WINDOW_S 61

typedef struct ev_tpm ev_tpm_t;

/* A call's place in the meter, to settle it later. */
typedef struct ev_tpm_ticket {
    int64_t sec;      /* the bucket the estimate went to */
    int64_t estimate; /* tokens charged */
    int64_t input;    /* the caller's input estimate */
} ev_tpm_ticket_t;

#define EV_TPM_TICKET_INIT                                                                         \
    {                                                                                              \
        .sec = INT64_MIN, .estimate = 0, .input = 0                                                \
    }

/* Creates a meter for `limit_per_min` tokens (0: no limit) on `clock` (must
 * outlive it). `sleep_step_us` >= 1 bounds each sleep of acquire between
 * checks of `stop`. Returns 0 or EV_EINVAL (*out NULL). */
int ev_tpm_new(ev_tpm_t **out, int64_t limit_per_min, int64_t sleep_step_us,
               const ev_clock_t *clock);
void ev_tpm_free(ev_tpm_t *t);

/*
 * Places the call's tokens (`input` estimated tokens plus its probable
 * output, at most `max_output`) in the first second from now where they fit
 * (see above), charges them there, fills *ticket and sleeps until that
 * second. An estimate above the limit is charged
 * as the whole limit (the call can never fit otherwise; the provider will
 * say it is too large). Returns 0, EV_ELIMIT when the wait would exceed
 * max_wait_us (>= 0; < 0 means no bound) or no second within about three
 * minutes fits (nothing charged), or EV_ESHUTDOWN when *stop became true
 * (the place is given back). *waited_us (may be NULL) gets
 * the time spent.
 */
int ev_tpm_acquire(ev_tpm_t *t, int64_t input, int64_t max_output, int64_t max_wait_us,
                   const atomic_bool *stop, ev_tpm_ticket_t *ticket, int64_t *waited_us);

/* Replaces a ticket's estimate by the tokens the provider reported
 * (`used_in` + `used_out`), or by 0 when the call was refused before it could
 * use any (a 429: pass 0, 0). Negative `used_in` keeps the estimate (usage
 * unknown). A bucket that already left the window is not touched; a ticket
 * that was never charged (EV_TPM_TICKET_INIT) is ignored. */
void ev_tpm_settle(ev_tpm_t *t, const ev_tpm_ticket_t *ticket, int64_t used_in, int64_t used_out);

/* The provider's own view: `remaining` tokens of `limit` left in its minute
 * (either may be -1: unknown). Usage the meter did not see is added now. */
void ev_tpm_observe(ev_tpm_t *t, int64_t limit, int64_t remaining);

/* Changes the limit (0: none), e.g. to one the provider stated. */
void ev_tpm_set_limit(ev_tpm_t *t, int64_t limit_per_min);

/* The current limit (0: none). */
int64_t ev_tpm_limit(ev_tpm_t *t);

typedef struct ev_tpm_stats {
    int64_t limit_per_min; /* 0: none */
    int64_t used;          /* tokens in the window now */
    uint64_t waits;        /* acquires that had to wait */
    uint64_t unseen;       /* tokens added from the provider's view */
} ev_tpm_stats_t;

void ev_tpm_stats(ev_tpm_t *t, ev_tpm_stats_t *out);

/*
 * Input tokens a request may cost, before sending it, on the high side: text
 * bytes / 3 (prompts, question, extracted PDF text; tokenizers average about
 * 4 bytes of English text per token), `image_tokens` per image and
 * `page_tokens` per PDF page (pages counted in the PDF bytes).
 */
int64_t ev_tpm_estimate_input(const ev_llm_request_t *req, int64_t image_tokens,
                              int64_t page_tokens);

/* The most output tokens a request allows (max_output_tokens or its default). */
int64_t ev_tpm_max_output(const ev_llm_request_t *req);

#endif
