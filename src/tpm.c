/*
 * tpm.c - tokens-per-minute meter: a sliding window of one-second buckets
 * (see tpm.h for the rule and why the window is a second longer than a
 * minute).
 *
 * What: decides when a call's tokens fit under the provider's per-minute
 * token limit and keeps the count honest with the usage the provider
 * reports. How: EV_TPM_WINDOW_S buckets indexed by second modulo the window,
 * each stamped with its second; a bucket whose stamp left the window counts
 * as empty. Acquire checks, charges or computes when enough tokens leave,
 * and sleeps outside the lock.
 *
 * Threads: any worker acquires and settles; the stats thread snapshots.
 *
 * Locking: one leaf lock, `mu`, guards the buckets and counters.
 */
#include "ev/tpm.h"

#include "ev/error.h"
#include "ev/util.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define W EV_TPM_WINDOW_S
/* Buckets kept: the window plus how far ahead a waiting call may be placed. */
#define R 256
#define HORIZON (R - W - 4)

struct ev_tpm {
    /* Immutable after ev_tpm_new. */
    const ev_clock_t *clock;
    int64_t sleep_step_us;

    pthread_mutex_t mu;
    int64_t limit;     /* guarded by mu: 0 none */
    double in_ratio;   /* guarded by mu: real / estimated input of settled calls */
    int64_t stamp[R];  /* guarded by mu: the second bucket i holds */
    int64_t tokens[R]; /* guarded by mu */
    int64_t latest;    /* guarded by mu: the newest second charged (waiting calls are
                        * charged to the future second they will start in) */
    uint64_t waits;    /* guarded by mu */
    uint64_t unseen;   /* guarded by mu */
    double out_avg;    /* guarded by mu: average output of settled calls */
    uint64_t settled;  /* guarded by mu: calls whose usage was reported */
};

/* Weight of the newest call in out_avg, and the margin over twice it. */
#define OUT_AVG_WEIGHT 0.1
#define OUT_MARGIN 32
/* Margin over the learned real/estimated input ratio. */
#define IN_MARGIN 0.1

int ev_tpm_new(ev_tpm_t **out, int64_t limit_per_min, int64_t sleep_step_us,
               const ev_clock_t *clock)
{
    *out = NULL;
    if (clock == NULL || limit_per_min < 0 || sleep_step_us < 1)
        return EV_EINVAL;
    ev_tpm_t *t = ev_calloc(1, sizeof(*t));
    t->clock = clock;
    t->limit = limit_per_min;
    t->sleep_step_us = sleep_step_us;
    EV_ASSERT(pthread_mutex_init(&t->mu, NULL) == 0);
    for (int i = 0; i < R; i++)
        t->stamp[i] = INT64_MIN;
    t->latest = INT64_MIN;
    *out = t;
    return 0;
}

void ev_tpm_free(ev_tpm_t *t)
{
    if (t == NULL)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static int64_t sec_of(int64_t us)
{
    return us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
}

static int slot_of(int64_t sec)
{
    return (int)(((sec % R) + R) % R);
}

/* Tokens charged to second `sec` (0 when its bucket holds another). Requires mu. */
static int64_t at(const ev_tpm_t *t, int64_t sec)
{
    int i = slot_of(sec);
    return t->stamp[i] == sec ? t->tokens[i] : 0;
}

/* Tokens in the window ending in second `sec`. Requires mu. */
static int64_t used_at(const ev_tpm_t *t, int64_t sec)
{
    int64_t sum = 0;
    for (int64_t s = sec - W + 1; s <= sec; s++)
        sum += at(t, s);
    return sum;
}

/* The bucket of second `sec`, emptied if it held an older second. Requires mu. */
static int64_t *bucket(ev_tpm_t *t, int64_t sec)
{
    int i = slot_of(sec);
    if (t->stamp[i] != sec) {
        t->stamp[i] = sec;
        t->tokens[i] = 0;
    }
    if (sec > t->latest)
        t->latest = sec;
    return &t->tokens[i];
}

/*
 * The first second from `now_sec` on where `cost` fits in every window it
 * would be part of, counting the calls already placed in later seconds (so
 * waiting calls are served in the order they came). INT64_MIN when none
 * within the horizon. Requires mu.
 */
static int64_t first_fit(const ev_tpm_t *t, int64_t now_sec, int64_t cost)
{
    /* p[k]: tokens of seconds base .. base + k - 1, base = now_sec - W + 1. */
    int64_t base = now_sec - W + 1, last = EV_MAX(t->latest, now_sec);
    int64_t p[R + 1];
    int n = (int)EV_MIN((int64_t)R, last - base + 1);
    p[0] = 0;
    for (int k = 0; k < n; k++)
        p[k + 1] = p[k] + at(t, base + k);
    for (int64_t s = now_sec; s <= now_sec + HORIZON; s++) {
        bool fits = true;
        /* Windows ending at s .. s + W - 1 contain s; past `last` they only shrink. */
        for (int64_t e = s; fits && e <= EV_MIN(s + W - 1, EV_MAX(last, s)); e++) {
            int64_t hi = EV_MIN(e - base + 1, (int64_t)n),
                    lo = EV_MAX(e - W + 1 - base, (int64_t)0);
            int64_t used = hi > lo ? p[hi] - p[lo] : 0;
            fits = used + cost <= t->limit;
        }
        if (fits)
            return s;
    }
    return INT64_MIN;
}

/* The first second a placement may use. A clock read before the lock can be
 * stale next to the places other threads made since (with a fake clock by
 * whole minutes): never search from further back than the horizon allows, so
 * every place already made stays inside the ring. Requires mu. */
static int64_t search_from(const ev_tpm_t *t, int64_t now)
{
    int64_t s = sec_of(now);
    if (t->latest != INT64_MIN)
        s = EV_MAX(s, t->latest - (HORIZON - W));
    return s;
}

/* Tokens to charge for a call. Requires mu. */
static int64_t call_cost(const ev_tpm_t *t, int64_t input, int64_t max_output)
{
    int64_t out = EV_MAX(max_output, (int64_t)0);
    input = EV_MAX(input, (int64_t)0);
    if (t->settled > 0) {
        out = EV_MIN(out, (int64_t)(2 * t->out_avg) + OUT_MARGIN);
        input = (int64_t)ceil((double)input * EV_MIN(1.0, t->in_ratio + IN_MARGIN));
    }
    int64_t cost = input + out;
    return t->limit > 0 ? EV_MIN(cost, t->limit) : cost;
}

/* Places the call: charges its tokens to the second it may start in.
 * Returns that second, or INT64_MIN when it would start more than
 * max_wait_us after `now` (nothing charged). Requires mu. */
static int64_t place(ev_tpm_t *t, int64_t now, int64_t cost, int64_t max_wait_us)
{
    int64_t now_sec = search_from(t, now);
    int64_t s = t->limit == 0 ? now_sec : first_fit(t, now_sec, cost);
    if (s == INT64_MIN)
        return s;
    int64_t wait = s > sec_of(now) ? s * 1000000 - now : 0;
    if (max_wait_us >= 0 && wait > max_wait_us)
        return INT64_MIN;
    *bucket(t, s) += cost;
    if (s > sec_of(now))
        t->waits++;
    return s;
}

/*
 * A waiting call moves to an earlier second when one now fits: the calls
 * before it used fewer tokens than estimated, and their reported usage freed
 * room that no placement made earlier could count on.
 */
static void move_earlier(ev_tpm_t *t, ev_tpm_ticket_t *ticket, int64_t now)
{
    pthread_mutex_lock(&t->mu);
    int i = slot_of(ticket->sec);
    if (t->stamp[i] == ticket->sec && t->tokens[i] >= ticket->estimate) {
        t->tokens[i] -= ticket->estimate;
        int64_t s = first_fit(t, search_from(t, now), ticket->estimate);
        if (s == INT64_MIN || s >= ticket->sec)
            s = ticket->sec;
        *bucket(t, s) += ticket->estimate;
        ticket->sec = s;
    }
    pthread_mutex_unlock(&t->mu);
}

int ev_tpm_acquire(ev_tpm_t *t, int64_t input, int64_t max_output, int64_t max_wait_us,
                   const atomic_bool *stop, ev_tpm_ticket_t *ticket, int64_t *waited_us)
{
    int rc = 0;
    int64_t start = ev_clock_now_us(t->clock);

    pthread_mutex_lock(&t->mu);
    int64_t cost = call_cost(t, input, max_output);
    int64_t s = place(t, start, cost, max_wait_us);
    pthread_mutex_unlock(&t->mu);
    if (s == INT64_MIN) {
        rc = EV_ELIMIT;
        goto out;
    }
    *ticket = (ev_tpm_ticket_t){.sec = s, .estimate = cost, .input = EV_MAX(input, (int64_t)0)};
    for (int64_t now = start; now < ticket->sec * 1000000; now = ev_clock_now_us(t->clock)) {
        if (stop != NULL && atomic_load(stop)) {
            ev_tpm_settle(t, ticket, 0, 0); /* give the place back */
            *ticket = (ev_tpm_ticket_t)EV_TPM_TICKET_INIT;
            rc = EV_ESHUTDOWN;
            goto out;
        }
        ev_clock_sleep_us(t->clock, EV_MIN(t->sleep_step_us, ticket->sec * 1000000 - now));
        move_earlier(t, ticket, ev_clock_now_us(t->clock));
    }
out:
    if (waited_us != NULL)
        *waited_us = ev_clock_now_us(t->clock) - start;
    return rc;
}

void ev_tpm_settle(ev_tpm_t *t, const ev_tpm_ticket_t *ticket, int64_t used_in, int64_t used_out)
{
    if (used_in < 0 || ticket->sec == INT64_MIN)
        return;
    used_out = EV_MAX(used_out, (int64_t)0);
    pthread_mutex_lock(&t->mu);
    int i = slot_of(ticket->sec);
    if (t->stamp[i] == ticket->sec)
        t->tokens[i] = EV_MAX((int64_t)0, t->tokens[i] - ticket->estimate + used_in + used_out);
    if (used_in > 0 && ticket->input > 0) {
        /* Only real answers teach the sizes (a refused call has none). */
        double ratio = (double)used_in / (double)ticket->input;
        if (t->settled == 0) {
            t->out_avg = (double)used_out;
            t->in_ratio = ratio;
        } else {
            t->out_avg = (1 - OUT_AVG_WEIGHT) * t->out_avg + OUT_AVG_WEIGHT * (double)used_out;
            t->in_ratio = (1 - OUT_AVG_WEIGHT) * t->in_ratio + OUT_AVG_WEIGHT * ratio;
        }
        t->settled++;
    }
    pthread_mutex_unlock(&t->mu);
}

void ev_tpm_observe(ev_tpm_t *t, int64_t limit, int64_t remaining)
{
    if (limit <= 0 || remaining < 0 || remaining > limit)
        return;
    int64_t now = ev_clock_now_us(t->clock);
    pthread_mutex_lock(&t->mu);
    int64_t sec = sec_of(now);
    int64_t theirs = limit - remaining, ours = used_at(t, sec);
    if (theirs > ours) {
        *bucket(t, sec) += theirs - ours;
        t->unseen += (uint64_t)(theirs - ours);
    }
    pthread_mutex_unlock(&t->mu);
}

void ev_tpm_set_limit(ev_tpm_t *t, int64_t limit_per_min)
{
    pthread_mutex_lock(&t->mu);
    t->limit = EV_MAX(limit_per_min, (int64_t)0);
    pthread_mutex_unlock(&t->mu);
}

int64_t ev_tpm_limit(ev_tpm_t *t)
{
    pthread_mutex_lock(&t->mu);
    int64_t l = t->limit;
    pthread_mutex_unlock(&t->mu);
    return l;
}

void ev_tpm_stats(ev_tpm_t *t, ev_tpm_stats_t *out)
{
    int64_t now = ev_clock_now_us(t->clock);
    pthread_mutex_lock(&t->mu);
    out->limit_per_min = t->limit;
    out->used = used_at(t, sec_of(now));
    out->waits = t->waits;
    out->unseen = t->unseen;
    pthread_mutex_unlock(&t->mu);
}

/* "/Type /Page" objects (not "/Pages") in PDF bytes; at least 1. */
static int64_t pdf_pages(const unsigned char *d, size_t n)
{
    int64_t pages = 0;
    static const char key[] = "/Type";
    for (size_t i = 0; i + 10 < n; i++) {
        if (d[i] != '/' || memcmp(d + i, key, 5) != 0)
            continue;
        size_t j = i + 5;
        while (j < n && (d[j] == ' ' || d[j] == '\r' || d[j] == '\n'))
            j++;
        if (j + 5 <= n && memcmp(d + j, "/Page", 5) == 0 && (j + 5 == n || d[j + 5] != 's'))
            pages++;
    }
    return EV_MAX(pages, (int64_t)1);
}

int64_t ev_tpm_estimate_input(const ev_llm_request_t *req, int64_t image_tokens,
                              int64_t page_tokens)
{
    size_t text = 0;
    int64_t media = 0;
    if (req->system_prompt)
        text += strlen(req->system_prompt);
    if (req->user_text)
        text += strlen(req->user_text);
    if (req->pdf_text)
        text += strlen(req->pdf_text);
    text += strlen(ev_llm_verdict_instruction());
    for (size_t i = 0; !req->text_only && i < req->media_count; i++) {
        const ev_llm_media_t *m = &req->media[i];
        if (strcmp(m->mime, "application/pdf") == 0)
            media += page_tokens * pdf_pages(m->bytes, m->len);
        else
            media += image_tokens;
    }
    return (int64_t)(text + 2) / 3 + media;
}

int64_t ev_tpm_max_output(const ev_llm_request_t *req)
{
    return req->max_output_tokens > 0 ? req->max_output_tokens : EV_LLM_DEFAULT_MAX_OUTPUT_TOKENS;
}
