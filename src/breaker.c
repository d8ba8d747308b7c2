/*
 * breaker.c - per-provider circuit breaker with per-period tickets.
 *
 * What: decides whether a call to a provider may go, from the provider's
 * recent health. How: a state machine (closed / open / half_open, see
 * breaker.h) with a generation number bumped on every transition; tickets
 * carry the generation, so a result only counts toward the period it was
 * admitted in. The CLOSED error rate comes from a ring of one-second buckets
 * with running totals; buckets are expired lazily as the clock moves.
 * Time-based transitions (end of cooldown, probe reclaim) happen lazily in
 * allow(); read-only views compute the effective state instead.
 *
 * Threads: any worker thread calls allow/record/force_open; the stats
 * thread reads snapshots.
 *
 * Locking: one lock, `mu`, guards every mutable field below. It is a leaf:
 * the clock is read before taking it and nothing is called while holding it.
 */
#include "ev/breaker.h"

#include "ev/error.h"
#include "ev/util.h"

#include <pthread.h>
#include <stdlib.h>

#define MAX_PROBES 64
#define EMPTY_SEC INT64_MIN

typedef struct {
    int64_t sec; /* the second this bucket holds, EMPTY_SEC if none */
    uint32_t calls;
    uint32_t failures;
} bucket_t;

typedef struct {
    uint64_t id; /* 0: free place */
    int64_t admitted_us;
} probe_t;

struct ev_breaker {
    /* Immutable after ev_breaker_new. */
    const ev_clock_t *clock;
    double threshold;
    int window_s;
    int64_t cooldown_us;
    int min_calls;
    int probes_needed;
    int64_t probe_timeout_us;

    pthread_mutex_t mu;
    /* Everything below is guarded by mu. */
    ev_breaker_state_t state;
    uint64_t generation;
    int64_t open_until_us;
    int64_t last_change_us;
    bucket_t *ring;   /* window_s buckets, slot = sec % window_s */
    int64_t ring_sec; /* latest second the ring was advanced to */
    uint64_t win_calls;
    uint64_t win_failures;
    probe_t probes[MAX_PROBES];
    int probes_out;      /* used places in probes[] */
    int probe_successes; /* in this HALF_OPEN period */
    uint64_t next_probe_id;
    uint64_t successes, failures, neutral, rejected, stale, reclaimed, opened, transitions;

    ev_breaker_hooks_t hooks; /* set before threads start; immutable after */
};

void ev_breaker_set_hooks(ev_breaker_t *b, const ev_breaker_hooks_t *hooks)
{
    b->hooks = hooks ? *hooks : (ev_breaker_hooks_t){0};
}

/* Tells the `changed` hook, outside the lock. */
static void notify(ev_breaker_t *b, const ev_breaker_change_t *ch, int64_t open_until_us,
                   bool forced)
{
    if (ch->changed && ch->from != ch->to && b->hooks.changed != NULL)
        b->hooks.changed(b->hooks.ctx, ch->from, ch->to, open_until_us, forced);
}

const char *ev_breaker_state_name(ev_breaker_state_t state)
{
    switch (state) {
    case EV_BREAKER_CLOSED:
        return "closed";
    case EV_BREAKER_OPEN:
        return "open";
    case EV_BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}

int ev_breaker_new(ev_breaker_t **out, const ev_breaker_options_t *opts, const ev_clock_t *clock)
{
    static const ev_breaker_options_t defaults = EV_BREAKER_OPTIONS_INIT;
    int rc = 0;
    ev_breaker_t *b = NULL;

    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if (clock == NULL || !(opts->threshold > 0 && opts->threshold <= 1) || opts->window_s < 1 ||
        opts->window_s > 86400 || opts->cooldown_s < 0 || opts->min_calls < 1 ||
        opts->half_open_probes < 1 || opts->half_open_probes > MAX_PROBES ||
        opts->probe_timeout_s < 0) {
        rc = EV_EINVAL;
        goto out;
    }
    b = ev_calloc(1, sizeof(*b));
    b->clock = clock;
    b->threshold = opts->threshold;
    b->window_s = opts->window_s;
    b->cooldown_us = (int64_t)opts->cooldown_s * 1000000;
    b->min_calls = opts->min_calls;
    b->probes_needed = opts->half_open_probes;
    if (opts->probe_timeout_s > 0)
        b->probe_timeout_us = (int64_t)opts->probe_timeout_s * 1000000;
    else
        b->probe_timeout_us = b->cooldown_us > 0 ? b->cooldown_us : 1000000;
    b->ring = ev_calloc((size_t)b->window_s, sizeof(bucket_t));
    for (int i = 0; i < b->window_s; i++)
        b->ring[i].sec = EMPTY_SEC;
    EV_ASSERT(pthread_mutex_init(&b->mu, NULL) == 0);
    b->state = EV_BREAKER_CLOSED;
    b->generation = 1;
    b->last_change_us = ev_clock_now_us(clock);
    b->ring_sec = b->last_change_us / 1000000;
    *out = b;
out:
    return rc;
}

void ev_breaker_free(ev_breaker_t *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b->ring);
    free(b);
}

/* ---- window (all require mu) ---- */

static bucket_t *bucket_at(ev_breaker_t *b, int64_t sec)
{
    int64_t i = sec % b->window_s;
    return &b->ring[i < 0 ? i + b->window_s : i];
}

static void window_clear(ev_breaker_t *b)
{
    for (int i = 0; i < b->window_s; i++)
        b->ring[i] = (bucket_t){.sec = EMPTY_SEC};
    b->win_calls = 0;
    b->win_failures = 0;
}

static void bucket_drop(ev_breaker_t *b, bucket_t *k)
{
    b->win_calls -= k->calls;
    b->win_failures -= k->failures;
    *k = (bucket_t){.sec = EMPTY_SEC};
}

/* Drops buckets older than the window ending at `sec`. Threads may read the
 * clock in a different order than they take the lock, so a second earlier
 * than ring_sec is treated as ring_sec. */
static void window_advance(ev_breaker_t *b, int64_t sec)
{
    if (sec <= b->ring_sec)
        return;
    if (sec - b->ring_sec >= b->window_s) {
        window_clear(b);
    } else {
        for (int64_t s = b->ring_sec + 1; s <= sec; s++) {
            bucket_t *k = bucket_at(b, s);
            if (k->sec != EMPTY_SEC && k->sec != s)
                bucket_drop(b, k);
        }
    }
    b->ring_sec = sec;
}

static void window_add(ev_breaker_t *b, int64_t now_us, bool failure)
{
    window_advance(b, now_us / 1000000);
    bucket_t *k = bucket_at(b, b->ring_sec);
    if (k->sec != b->ring_sec) {
        if (k->sec != EMPTY_SEC)
            bucket_drop(b, k);
        k->sec = b->ring_sec;
    }
    k->calls++;
    b->win_calls++;
    if (failure) {
        k->failures++;
        b->win_failures++;
    }
}

/* ---- transitions (all require mu) ---- */

static void clear_probes(ev_breaker_t *b)
{
    for (int i = 0; i < MAX_PROBES; i++)
        b->probes[i] = (probe_t){0};
    b->probes_out = 0;
    b->probe_successes = 0;
}

static void set_state(ev_breaker_t *b, ev_breaker_state_t to, int64_t now_us,
                      ev_breaker_change_t *ch)
{
    if (ch != NULL && !ch->changed) {
        ch->changed = true;
        ch->from = b->state;
    }
    b->state = to;
    b->generation++;
    b->transitions++;
    b->last_change_us = now_us;
    if (ch != NULL)
        ch->to = to;
    clear_probes(b);
    if (to == EV_BREAKER_OPEN)
        b->opened++;
    else
        b->open_until_us = 0;
    if (to == EV_BREAKER_CLOSED)
        window_clear(b);
}

static void trip_open(ev_breaker_t *b, int64_t until_us, int64_t now_us, ev_breaker_change_t *ch)
{
    set_state(b, EV_BREAKER_OPEN, now_us, ch);
    b->open_until_us = until_us;
}

/* Applies the due time-based transitions: end of cooldown, probe reclaim. */
static void tick(ev_breaker_t *b, int64_t now_us, ev_breaker_change_t *ch)
{
    if (b->state == EV_BREAKER_OPEN && now_us >= b->open_until_us)
        set_state(b, EV_BREAKER_HALF_OPEN, now_us, ch);
    if (b->state == EV_BREAKER_HALF_OPEN) {
        for (int i = 0; i < MAX_PROBES; i++) {
            if (b->probes[i].id != 0 && now_us - b->probes[i].admitted_us >= b->probe_timeout_us) {
                b->probes[i] = (probe_t){0};
                b->probes_out--;
                b->reclaimed++;
            }
        }
    }
}

static bool rate_trips(const ev_breaker_t *b)
{
    if (b->win_calls < (uint64_t)b->min_calls)
        return false;
    /* Reaching the threshold exactly opens; the epsilon absorbs binary
     * rounding of values such as 0.05 × 20. */
    return (double)b->win_failures >= b->threshold * (double)b->win_calls - 1e-9;
}

static void change_init(ev_breaker_change_t *ch, ev_breaker_state_t state)
{
    if (ch != NULL)
        *ch = (ev_breaker_change_t){.changed = false, .from = state, .to = state};
}

/* ---- public ---- */

static int allow_locally(ev_breaker_t *b, ev_breaker_ticket_t *ticket, ev_breaker_change_t *change);
static int record_locally(ev_breaker_t *b, const ev_breaker_ticket_t *ticket,
                          ev_breaker_outcome_t outcome, ev_breaker_change_t *change,
                          int64_t *open_until);

int ev_breaker_allow(ev_breaker_t *b, ev_breaker_ticket_t *ticket, ev_breaker_change_t *change)
{
    ev_breaker_change_t local;
    int rc = allow_locally(b, ticket, change ? change : &local);

    notify(b, change ? change : &local, 0, false);
    /* A probe admitted here may still be refused by the cluster: another
     * replica is probing. Its place is then given back uncounted. */
    if (rc == 0 && ticket->state == EV_BREAKER_HALF_OPEN && b->hooks.claim_probe != NULL &&
        !b->hooks.claim_probe(b->hooks.ctx)) {
        pthread_mutex_lock(&b->mu);
        for (int i = 0; i < MAX_PROBES; i++) {
            if (b->probes[i].id == ticket->probe_id && b->generation == ticket->generation) {
                b->probes[i] = (probe_t){0};
                b->probes_out--;
                break;
            }
        }
        b->rejected++;
        pthread_mutex_unlock(&b->mu);
        ticket->state = EV_BREAKER_OPEN;
        rc = EV_EOPEN;
    }
    return rc;
}

static int allow_locally(ev_breaker_t *b, ev_breaker_ticket_t *ticket, ev_breaker_change_t *change)
{
    int rc = 0;
    int64_t now_us = ev_clock_now_us(b->clock);

    pthread_mutex_lock(&b->mu);
    change_init(change, b->state);
    tick(b, now_us, change);
    *ticket = (ev_breaker_ticket_t){
        .generation = b->generation, .state = b->state, .probe_id = 0, .admitted_us = now_us};
    switch (b->state) {
    case EV_BREAKER_CLOSED:
        break;
    case EV_BREAKER_OPEN:
        b->rejected++;
        rc = EV_EOPEN;
        break;
    case EV_BREAKER_HALF_OPEN:
        /* A place is free while admitted-and-pending plus already-succeeded
         * probes are fewer than the probes needed. */
        if (b->probes_out + b->probe_successes >= b->probes_needed) {
            b->rejected++;
            ticket->state = EV_BREAKER_OPEN;
            rc = EV_EOPEN;
            break;
        }
        for (int i = 0; i < MAX_PROBES; i++) {
            if (b->probes[i].id == 0) {
                b->probes[i] = (probe_t){.id = ++b->next_probe_id, .admitted_us = now_us};
                b->probes_out++;
                ticket->probe_id = b->probes[i].id;
                break;
            }
        }
        EV_ASSERT(ticket->probe_id != 0);
        break;
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

int ev_breaker_record(ev_breaker_t *b, const ev_breaker_ticket_t *ticket,
                      ev_breaker_outcome_t outcome, ev_breaker_change_t *change)
{
    ev_breaker_change_t local;
    int64_t open_until = 0;
    int rc = record_locally(b, ticket, outcome, change ? change : &local, &open_until);

    notify(b, change ? change : &local, open_until, false);
    return rc;
}

static int record_locally(ev_breaker_t *b, const ev_breaker_ticket_t *ticket,
                          ev_breaker_outcome_t outcome, ev_breaker_change_t *change,
                          int64_t *open_until)
{
    int rc = 0;
    int64_t now_us = ev_clock_now_us(b->clock);

    pthread_mutex_lock(&b->mu);
    change_init(change, b->state);
    if ((ticket->state != EV_BREAKER_CLOSED && ticket->state != EV_BREAKER_HALF_OPEN) ||
        (outcome != EV_BREAKER_SUCCESS && outcome != EV_BREAKER_FAILURE &&
         outcome != EV_BREAKER_NEUTRAL)) {
        rc = EV_EINVAL;
        goto out;
    }
    if (ticket->generation != b->generation || ticket->state != b->state) {
        b->stale++;
        rc = EV_ENOTFOUND;
        goto out;
    }
    if (b->state == EV_BREAKER_CLOSED) {
        switch (outcome) {
        case EV_BREAKER_NEUTRAL:
            b->neutral++;
            goto out;
        case EV_BREAKER_SUCCESS:
            b->successes++;
            window_add(b, now_us, false);
            break;
        case EV_BREAKER_FAILURE:
            b->failures++;
            window_add(b, now_us, true);
            break;
        }
        if (rate_trips(b))
            trip_open(b, now_us + b->cooldown_us, now_us, change);
        goto out;
    }

    /* HALF_OPEN: the probe must still hold its place. */
    probe_t *p = NULL;
    for (int i = 0; i < MAX_PROBES; i++) {
        if (b->probes[i].id == ticket->probe_id && ticket->probe_id != 0) {
            p = &b->probes[i];
            break;
        }
    }
    if (p == NULL) {
        b->stale++;
        rc = EV_ENOTFOUND;
        goto out;
    }
    *p = (probe_t){0};
    b->probes_out--;
    switch (outcome) {
    case EV_BREAKER_NEUTRAL:
        b->neutral++;
        break;
    case EV_BREAKER_SUCCESS:
        b->successes++;
        b->probe_successes++;
        if (b->probe_successes >= b->probes_needed)
            set_state(b, EV_BREAKER_CLOSED, now_us, change);
        break;
    case EV_BREAKER_FAILURE:
        b->failures++;
        trip_open(b, now_us + b->cooldown_us, now_us, change);
        break;
    }
out:
    *open_until = b->state == EV_BREAKER_OPEN ? b->open_until_us : 0;
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void ev_breaker_force_open(ev_breaker_t *b, int64_t until_us, ev_breaker_change_t *change)
{
    ev_breaker_change_t local;
    int64_t now_us = ev_clock_now_us(b->clock);

    if (change == NULL)
        change = &local;
    pthread_mutex_lock(&b->mu);
    change_init(change, b->state);
    if (b->state == EV_BREAKER_OPEN)
        b->open_until_us = EV_MAX(b->open_until_us, until_us);
    else
        trip_open(b, until_us, now_us, change);
    int64_t open_until = b->open_until_us;
    pthread_mutex_unlock(&b->mu);
    notify(b, change, open_until, true);
}

void ev_breaker_reset(ev_breaker_t *b, ev_breaker_change_t *change)
{
    ev_breaker_change_t local;
    int64_t now_us = ev_clock_now_us(b->clock);

    if (change == NULL)
        change = &local;
    pthread_mutex_lock(&b->mu);
    change_init(change, b->state);
    if (b->state != EV_BREAKER_CLOSED)
        set_state(b, EV_BREAKER_CLOSED, now_us, change);
    pthread_mutex_unlock(&b->mu);
}

/* The state allow() would act on now, without changing anything. Requires mu. */
static ev_breaker_state_t effective_state(const ev_breaker_t *b, int64_t now_us)
{
    if (b->state == EV_BREAKER_OPEN && now_us >= b->open_until_us)
        return EV_BREAKER_HALF_OPEN;
    return b->state;
}

ev_breaker_state_t ev_breaker_state(ev_breaker_t *b)
{
    int64_t now_us = ev_clock_now_us(b->clock);

    pthread_mutex_lock(&b->mu);
    ev_breaker_state_t s = effective_state(b, now_us);
    pthread_mutex_unlock(&b->mu);
    return s;
}

void ev_breaker_stats(ev_breaker_t *b, ev_breaker_stats_t *out)
{
    int64_t now_us = ev_clock_now_us(b->clock);

    pthread_mutex_lock(&b->mu);
    window_advance(b, now_us / 1000000);
    out->state = effective_state(b, now_us);
    out->window_calls = b->win_calls;
    out->window_failures = b->win_failures;
    out->error_rate = b->win_calls ? (double)b->win_failures / (double)b->win_calls : 0.0;
    out->successes = b->successes;
    out->failures = b->failures;
    out->neutral = b->neutral;
    out->rejected = b->rejected;
    out->stale = b->stale;
    out->reclaimed = b->reclaimed;
    out->opened = b->opened;
    out->transitions = b->transitions;
    out->last_change_us = b->last_change_us;
    out->open_until_us = out->state == EV_BREAKER_OPEN ? b->open_until_us : 0;
    out->probes_in_flight = b->state == EV_BREAKER_HALF_OPEN ? b->probes_out : 0;
    pthread_mutex_unlock(&b->mu);
}
