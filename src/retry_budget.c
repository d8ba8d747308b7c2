/*
 * retry_budget.c - per-provider retry budget over a sliding window.
 *
 * How: a ring of one-second buckets counting first attempts and granted
 * retries, with running totals; stale buckets are dropped lazily as the
 * clock moves. A retry is granted while the window's retries stay below
 * max(min_retries, floor(ratio × first attempts)).
 *
 * Threads: every worker thread calling the provider; the stats thread.
 *
 * Locking: one lock, `mu`, guards the ring and every counter. It is a leaf:
 * the clock is read before taking it; nothing is called while holding it.
 */
#include "ev/retry_budget.h"

#include "ev/error.h"
#include "ev/util.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#define EMPTY_SEC INT64_MIN

typedef struct {
    int64_t sec; /* second held, EMPTY_SEC if none */
    uint32_t attempts;
    uint32_t retries;
} bucket_t;

struct ev_retry_budget {
    /* Immutable. */
    const ev_clock_t *clock;
    double ratio;
    int window_s;
    int min_retries;

    pthread_mutex_t mu;
    /* Guarded by mu. */
    bucket_t *ring;
    int64_t ring_sec;
    uint64_t win_attempts, win_retries;
    uint64_t total_attempts, total_retries, total_denied;
};

int ev_retry_budget_new(ev_retry_budget_t **out, const ev_retry_budget_options_t *opts,
                        const ev_clock_t *clock)
{
    static const ev_retry_budget_options_t defaults = EV_RETRY_BUDGET_OPTIONS_INIT;
    int rc = 0;
    ev_retry_budget_t *rb = NULL;

    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if (clock == NULL || !(opts->ratio >= 0 && opts->ratio <= 1e6) || opts->window_s < 1 ||
        opts->window_s > 86400 || opts->min_retries < 0) {
        rc = EV_EINVAL;
        goto out;
    }
    rb = ev_calloc(1, sizeof(*rb));
    rb->clock = clock;
    rb->ratio = opts->ratio;
    rb->window_s = opts->window_s;
    rb->min_retries = opts->min_retries;
    rb->ring = ev_calloc((size_t)opts->window_s, sizeof(bucket_t));
    for (int i = 0; i < rb->window_s; i++)
        rb->ring[i].sec = EMPTY_SEC;
    rb->ring_sec = ev_clock_now_us(clock) / 1000000;
    EV_ASSERT(pthread_mutex_init(&rb->mu, NULL) == 0);
    *out = rb;
out:
    return rc;
}

void ev_retry_budget_free(ev_retry_budget_t *rb)
{
    if (rb == NULL)
        return;
    pthread_mutex_destroy(&rb->mu);
    free(rb->ring);
    free(rb);
}

/* ---- window (all require mu) ---- */

static bucket_t *bucket_at(ev_retry_budget_t *rb, int64_t sec)
{
    int64_t i = sec % rb->window_s;
    return &rb->ring[i < 0 ? i + rb->window_s : i];
}

static void bucket_drop(ev_retry_budget_t *rb, bucket_t *k)
{
    rb->win_attempts -= k->attempts;
    rb->win_retries -= k->retries;
    *k = (bucket_t){.sec = EMPTY_SEC};
}

/* Moves the window's end to `sec`; an earlier second (a clock read that
 * lost the race for the lock) counts as the current one. */
static bucket_t *advance(ev_retry_budget_t *rb, int64_t sec)
{
    if (sec > rb->ring_sec) {
        if (sec - rb->ring_sec >= rb->window_s) {
            for (int i = 0; i < rb->window_s; i++)
                rb->ring[i] = (bucket_t){.sec = EMPTY_SEC};
            rb->win_attempts = 0;
            rb->win_retries = 0;
        } else {
            for (int64_t s = rb->ring_sec + 1; s <= sec; s++) {
                bucket_t *k = bucket_at(rb, s);
                if (k->sec != EMPTY_SEC && k->sec != s)
                    bucket_drop(rb, k);
            }
        }
        rb->ring_sec = sec;
    }
    bucket_t *k = bucket_at(rb, rb->ring_sec);
    if (k->sec != rb->ring_sec) {
        if (k->sec != EMPTY_SEC)
            bucket_drop(rb, k);
        k->sec = rb->ring_sec;
    }
    return k;
}

static uint64_t allowed(const ev_retry_budget_t *rb)
{
    /* The epsilon keeps 0.2 × 10 at 2 despite binary rounding. */
    double by_ratio = floor(rb->ratio * (double)rb->win_attempts + 1e-9);
    uint64_t a = by_ratio >= 1.8e19 ? UINT64_MAX : (uint64_t)by_ratio;
    return EV_MAX(a, (uint64_t)rb->min_retries);
}

/* ---- public ---- */

void ev_retry_budget_note_attempt(ev_retry_budget_t *rb)
{
    int64_t sec = ev_clock_now_us(rb->clock) / 1000000;

    pthread_mutex_lock(&rb->mu);
    bucket_t *k = advance(rb, sec);
    k->attempts++;
    rb->win_attempts++;
    rb->total_attempts++;
    pthread_mutex_unlock(&rb->mu);
}

int ev_retry_budget_try_retry(ev_retry_budget_t *rb)
{
    int rc = 0;
    int64_t sec = ev_clock_now_us(rb->clock) / 1000000;

    pthread_mutex_lock(&rb->mu);
    bucket_t *k = advance(rb, sec);
    if (rb->win_retries < allowed(rb)) {
        k->retries++;
        rb->win_retries++;
        rb->total_retries++;
    } else {
        rb->total_denied++;
        rc = EV_EBUDGET;
    }
    pthread_mutex_unlock(&rb->mu);
    return rc;
}

void ev_retry_budget_stats(ev_retry_budget_t *rb, ev_retry_budget_stats_t *out)
{
    int64_t sec = ev_clock_now_us(rb->clock) / 1000000;

    pthread_mutex_lock(&rb->mu);
    advance(rb, sec);
    out->window_attempts = rb->win_attempts;
    out->window_retries = rb->win_retries;
    out->allowed_in_window = allowed(rb);
    out->total_attempts = rb->total_attempts;
    out->total_retries = rb->total_retries;
    out->total_denied = rb->total_denied;
    pthread_mutex_unlock(&rb->mu);
}
