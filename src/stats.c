/*
 * stats.c - lock-free operational counters and their two renderings (JSON
 * for GET /stats, Prometheus text for GET /metrics); see stats.h.
 *
 * How: every figure is an _Atomic field updated with relaxed operations, so
 * recording never blocks a worker. The latency histogram is a fixed array of
 * per-bucket atomic counters plus an atomic sum, minimum and maximum; the
 * percentiles are estimated from a copy of the buckets. "Submissions in the
 * last minute" is a ring of 60 per-second slots, each one 64-bit atomic that
 * packs the slot's second (relative to creation, upper 40 bits) with its
 * count (lower 24 bits), so a slot is claimed for a new second and counted
 * in one compare-and-swap and no increment can be lost to a reset.
 *
 * Threads: any thread records (workers, provider clients, the pool); the
 * stats server's HTTP threads read. The only lock is probe_lock, which guards
 * the per-provider probe callback pointers and is held just long enough to
 * copy them: the probes themselves are called with no lock held.
 *
 * Lock order: probe_lock is a leaf lock (nothing else is taken under it).
 */
#include "ev/stats.h"

#include "ev/error.h"
#include "ev/util.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef EV_VERSION
#define EV_VERSION "unknown"
#endif

/* Upper bounds (inclusive, Prometheus `le`) of the latency buckets in ms.
 * LLM calls take from a few hundred ms to tens of seconds, so resolution is
 * finest there; one more bucket (+Inf) follows the last bound. */
static const int64_t bounds_ms[] = {25,   50,    100,   250,   500,   1000,  2000,  3000,  5000,
                                    7500, 10000, 15000, 20000, 30000, 45000, 60000, 120000};
#define NBOUNDS (sizeof(bounds_ms) / sizeof(bounds_ms[0]))
#define NBUCKETS (NBOUNDS + 1)

/* The per-minute ring: one slot per second. */
#define RING_SLOTS 60
#define RING_COUNT_BITS 24
#define RING_COUNT_MAX ((UINT64_C(1) << RING_COUNT_BITS) - 1)

static const char *const check_names[] = {"theme", "pdf", "image"};
static const char *const verdict_names[] = {"pass", "fail", "error", "skipped"};
#define NCHECKS (sizeof(check_names) / sizeof(check_names[0]))
#define NVERDICTS (sizeof(verdict_names) / sizeof(verdict_names[0]))

static const char *const outcome_names[EV_STATS_OUTCOME_COUNT] = {
    "ok", "rate_limited", "server_error", "timeout", "transport", "client_error", "bad_response"};
static const char *const status_names[EV_STATS_STATUS_COUNT] = {
    "validated", "rejected", "needs_review", "failed", "requeued"};
static const char *const breaker_states[] = {"closed", "open", "half_open"};

typedef struct histogram {
    _Atomic uint64_t buckets[NBUCKETS]; /* non-cumulative */
    _Atomic int64_t sum_ms;
    _Atomic int64_t min_ms; /* INT64_MAX while empty */
    _Atomic int64_t max_ms; /* -1 while empty */
} histogram_t;

/* A consistent copy of a histogram: count is the sum of the copied buckets. */
typedef struct histogram_snap {
    uint64_t buckets[NBUCKETS];
    uint64_t count;
    int64_t sum_ms, min_ms, max_ms;
} histogram_snap_t;

typedef struct provider_stats {
    _Atomic uint64_t outcomes[EV_STATS_OUTCOME_COUNT];
    _Atomic uint64_t retries;
    _Atomic uint64_t fallbacks_from;
    _Atomic uint64_t tokens_in, tokens_out;
    _Atomic int in_flight;
    _Atomic int max_concurrent;
    _Atomic double rpm_limit;
    _Atomic bool configured, disabled, quota_cooldown;
    _Atomic int models_unavailable;
    _Atomic int64_t pause_until_wall_us; /* provider-wide pause: calls held until then */
    _Atomic(const char *) pause_reason;  /* static text, or NULL */
    histogram_t latency;
    histogram_t limiter_wait; /* time a call waited for its rate-limiter slot */
    /* Guarded by ev_stats.probe_lock. */
    ev_stats_probe_fn probe;
    void *probe_ctx;
} provider_stats_t;

struct ev_stats {
    const ev_clock_t *clock; /* immutable */
    int64_t start_us;        /* immutable: clock time at creation */
    _Atomic int workers_configured;
    _Atomic int workers_busy;
    _Atomic int budget_limit;
    _Atomic uint64_t budget_exhausted;
    _Atomic uint64_t fallbacks;
    _Atomic uint64_t parses, parse_kills, parse_wall_ms, parse_cpu_us; /* sandboxed file parses */
    histogram_t submission_duration; /* claim to final write of one processing pass */
    _Atomic uint64_t by_status[EV_STATS_STATUS_COUNT];
    _Atomic uint64_t api_calls; /* summed over recorded submissions */
    _Atomic uint64_t checks[NCHECKS][NVERDICTS];
    _Atomic uint64_t ring[RING_SLOTS];
    provider_stats_t providers[EV_PROVIDER_COUNT];
    pthread_mutex_t probe_lock;
    ev_stats_cluster_fn cluster_probe; /* guarded by probe_lock */
    void *cluster_ctx;                 /* guarded by probe_lock */
};

void ev_stats_set_cluster_probe(ev_stats_t *s, ev_stats_cluster_fn fn, void *ctx)
{
    pthread_mutex_lock(&s->probe_lock);
    s->cluster_probe = fn;
    s->cluster_ctx = fn ? ctx : NULL;
    pthread_mutex_unlock(&s->probe_lock);
}

/* The cluster probe's view; enabled false without one. */
static void cluster_read(ev_stats_t *s, ev_stats_cluster_t *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->probe_lock);
    ev_stats_cluster_fn fn = s->cluster_probe;
    void *ctx = s->cluster_ctx;
    pthread_mutex_unlock(&s->probe_lock);
    if (fn)
        fn(out, ctx);
    if (!out->replica_id)
        out->replica_id = "";
}

#define RLX memory_order_relaxed

const char *ev_stats_outcome_name(ev_stats_outcome_t outcome)
{
    if ((int)outcome < 0 || outcome >= EV_STATS_OUTCOME_COUNT)
        return "unknown";
    return outcome_names[outcome];
}

const char *ev_stats_status_name(ev_stats_status_t status)
{
    if ((int)status < 0 || status >= EV_STATS_STATUS_COUNT)
        return "unknown";
    return status_names[status];
}

const int64_t *ev_stats_latency_bounds_ms(size_t *count)
{
    *count = NBOUNDS;
    return bounds_ms;
}

int ev_stats_new(ev_stats_t **out, const ev_stats_options_t *opts)
{
    ev_stats_options_t defaults = EV_STATS_OPTIONS_INIT;
    if (!opts)
        opts = &defaults;
    ev_stats_t *s = ev_calloc(1, sizeof(*s));
    s->clock = opts->clock ? opts->clock : ev_clock_system();
    s->start_us = ev_clock_now_us(s->clock);
    atomic_init(&s->workers_configured, opts->workers_configured);
    atomic_init(&s->budget_limit, opts->budget_limit);
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        atomic_init(&s->providers[p].latency.min_ms, INT64_MAX);
        atomic_init(&s->providers[p].latency.max_ms, -1);
        atomic_init(&s->providers[p].limiter_wait.min_ms, INT64_MAX);
        atomic_init(&s->providers[p].limiter_wait.max_ms, -1);
        atomic_init(&s->providers[p].rpm_limit, 0.0);
    }
    atomic_init(&s->submission_duration.min_ms, INT64_MAX);
    atomic_init(&s->submission_duration.max_ms, -1);
    EV_ASSERT(pthread_mutex_init(&s->probe_lock, NULL) == 0);
    *out = s;
    return 0;
}

void ev_stats_free(ev_stats_t *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->probe_lock);
    free(s);
}

static provider_stats_t *prov(ev_stats_t *s, ev_provider_id_t p)
{
    EV_ASSERT((int)p >= 0 && p < EV_PROVIDER_COUNT);
    return &s->providers[p];
}

/* ---- Setters. ---- */

void ev_stats_set_provider_configured(ev_stats_t *s, ev_provider_id_t p, bool configured)
{
    atomic_store_explicit(&prov(s, p)->configured, configured, RLX);
}

void ev_stats_set_provider_limits(ev_stats_t *s, ev_provider_id_t p, int max_concurrent,
                                  double rpm_limit)
{
    provider_stats_t *ps = prov(s, p);
    atomic_store_explicit(&ps->max_concurrent, max_concurrent, RLX);
    atomic_store_explicit(&ps->rpm_limit, rpm_limit, RLX);
}

void ev_stats_set_provider_disabled(ev_stats_t *s, ev_provider_id_t p, bool disabled)
{
    atomic_store_explicit(&prov(s, p)->disabled, disabled, RLX);
}

void ev_stats_set_provider_models_unavailable(ev_stats_t *s, ev_provider_id_t p, int n)
{
    atomic_store_explicit(&prov(s, p)->models_unavailable, n, RLX);
}

void ev_stats_set_provider_pause(ev_stats_t *s, ev_provider_id_t p, int64_t until_wall_us,
                                 const char *reason)
{
    if (!s)
        return;
    atomic_store_explicit(&prov(s, p)->pause_reason, reason, RLX);
    atomic_store_explicit(&prov(s, p)->pause_until_wall_us, until_wall_us, RLX);
}

void ev_stats_set_provider_quota_cooldown(ev_stats_t *s, ev_provider_id_t p, bool cooling_down)
{
    atomic_store_explicit(&prov(s, p)->quota_cooldown, cooling_down, RLX);
}

void ev_stats_provider_in_flight_add(ev_stats_t *s, ev_provider_id_t p, int delta)
{
    atomic_fetch_add_explicit(&prov(s, p)->in_flight, delta, RLX);
}

void ev_stats_set_provider_probe(ev_stats_t *s, ev_provider_id_t p, ev_stats_probe_fn fn, void *ctx)
{
    provider_stats_t *ps = prov(s, p);
    pthread_mutex_lock(&s->probe_lock);
    ps->probe = fn;
    ps->probe_ctx = fn ? ctx : NULL;
    pthread_mutex_unlock(&s->probe_lock);
}

/* ---- Recording. ---- */

static void atomic_min(_Atomic int64_t *a, int64_t v)
{
    int64_t cur = atomic_load_explicit(a, RLX);
    while (v < cur && !atomic_compare_exchange_weak_explicit(a, &cur, v, RLX, RLX))
        ;
}

static void atomic_max(_Atomic int64_t *a, int64_t v)
{
    int64_t cur = atomic_load_explicit(a, RLX);
    while (v > cur && !atomic_compare_exchange_weak_explicit(a, &cur, v, RLX, RLX))
        ;
}

static size_t bucket_of(int64_t ms)
{
    size_t i = 0;
    while (i < NBOUNDS && ms > bounds_ms[i])
        i++;
    return i;
}

static void histogram_add(histogram_t *h, int64_t ms)
{
    /* The extremes go first so that a reader that sees the bucket count
     * usually also sees them; the percentile code tolerates the rare race. */
    atomic_min(&h->min_ms, ms);
    atomic_max(&h->max_ms, ms);
    atomic_fetch_add_explicit(&h->buckets[bucket_of(ms)], 1, RLX);
    atomic_fetch_add_explicit(&h->sum_ms, ms, RLX);
}

void ev_stats_record_limiter_wait(ev_stats_t *s, ev_provider_id_t p, int64_t waited_ms)
{
    if (s && waited_ms >= 0)
        histogram_add(&prov(s, p)->limiter_wait, waited_ms);
}

void ev_stats_record_submission_duration(ev_stats_t *s, int64_t ms)
{
    if (s && ms >= 0)
        histogram_add(&s->submission_duration, ms);
}

void ev_stats_record_call(ev_stats_t *s, ev_provider_id_t p, ev_stats_outcome_t outcome,
                          int64_t latency_ms, int64_t tokens_in, int64_t tokens_out)
{
    provider_stats_t *ps = prov(s, p);
    EV_ASSERT((int)outcome >= 0 && outcome < EV_STATS_OUTCOME_COUNT);
    atomic_fetch_add_explicit(&ps->outcomes[outcome], 1, RLX);
    if (latency_ms >= 0)
        histogram_add(&ps->latency, latency_ms);
    if (tokens_in > 0)
        atomic_fetch_add_explicit(&ps->tokens_in, (uint64_t)tokens_in, RLX);
    if (tokens_out > 0)
        atomic_fetch_add_explicit(&ps->tokens_out, (uint64_t)tokens_out, RLX);
}

void ev_stats_record_retry(ev_stats_t *s, ev_provider_id_t p)
{
    atomic_fetch_add_explicit(&prov(s, p)->retries, 1, RLX);
}

void ev_stats_record_fallback(ev_stats_t *s, ev_provider_id_t from)
{
    atomic_fetch_add_explicit(&prov(s, from)->fallbacks_from, 1, RLX);
    atomic_fetch_add_explicit(&s->fallbacks, 1, RLX);
}

void ev_stats_record_parse(ev_stats_t *s, int64_t wall_ms, int64_t cpu_us, bool limit_killed)
{
    if (!s)
        return;
    atomic_fetch_add_explicit(&s->parses, 1, RLX);
    atomic_fetch_add_explicit(&s->parse_wall_ms, (uint64_t)(wall_ms > 0 ? wall_ms : 0), RLX);
    atomic_fetch_add_explicit(&s->parse_cpu_us, (uint64_t)(cpu_us > 0 ? cpu_us : 0), RLX);
    if (limit_killed)
        atomic_fetch_add_explicit(&s->parse_kills, 1, RLX);
}

void ev_stats_record_budget_exhausted(ev_stats_t *s)
{
    atomic_fetch_add_explicit(&s->budget_exhausted, 1, RLX);
}

/* Seconds since creation, plus one so that a zero slot means "never used".
 * A clock that was set backwards (fake clocks in tests) clamps to 1. */
static uint64_t ring_second(ev_stats_t *s)
{
    int64_t rel = (ev_clock_now_us(s->clock) - s->start_us) / 1000000;
    return rel < 0 ? 1 : (uint64_t)rel + 1;
}

static void ring_add(ev_stats_t *s)
{
    uint64_t sec = ring_second(s);
    _Atomic uint64_t *slot = &s->ring[sec % RING_SLOTS];
    uint64_t cur = atomic_load_explicit(slot, RLX);
    for (;;) {
        uint64_t next;
        if ((cur >> RING_COUNT_BITS) == sec) {
            if ((cur & RING_COUNT_MAX) == RING_COUNT_MAX)
                return; /* saturated: 16 million in one second */
            next = cur + 1;
        } else if ((cur >> RING_COUNT_BITS) > sec) {
            return; /* the slot already belongs to a later second */
        } else {
            next = (sec << RING_COUNT_BITS) | 1;
        }
        if (atomic_compare_exchange_weak_explicit(slot, &cur, next, RLX, RLX))
            return;
    }
}

int64_t ev_stats_per_minute(ev_stats_t *s)
{
    uint64_t now = ring_second(s);
    int64_t total = 0;
    for (size_t i = 0; i < RING_SLOTS; i++) {
        uint64_t v = atomic_load_explicit(&s->ring[i], RLX);
        uint64_t sec = v >> RING_COUNT_BITS;
        if (sec != 0 && sec <= now && now - sec < RING_SLOTS)
            total += (int64_t)(v & RING_COUNT_MAX);
    }
    return total;
}

void ev_stats_record_submission(ev_stats_t *s, ev_stats_status_t status, int api_calls)
{
    EV_ASSERT((int)status >= 0 && status < EV_STATS_STATUS_COUNT);
    atomic_fetch_add_explicit(&s->by_status[status], 1, RLX);
    if (api_calls > 0)
        atomic_fetch_add_explicit(&s->api_calls, (uint64_t)api_calls, RLX);
    ring_add(s);
}

static int name_index(const char *const *names, size_t n, const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return (int)i;
    return -1;
}

int ev_stats_record_check(ev_stats_t *s, const char *check, const char *verdict)
{
    int c = name_index(check_names, NCHECKS, check);
    int v = name_index(verdict_names, NVERDICTS, verdict);
    if (c < 0 || v < 0)
        return EV_EINVAL;
    atomic_fetch_add_explicit(&s->checks[c][v], 1, RLX);
    return 0;
}

void ev_stats_worker_busy_add(ev_stats_t *s, int delta)
{
    atomic_fetch_add_explicit(&s->workers_busy, delta, RLX);
}

/* ---- Reading. ---- */

static void histogram_read(const histogram_t *h, histogram_snap_t *out)
{
    out->count = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        out->buckets[i] = atomic_load_explicit(&h->buckets[i], RLX);
        out->count += out->buckets[i];
    }
    out->sum_ms = atomic_load_explicit(&h->sum_ms, RLX);
    out->min_ms = atomic_load_explicit(&h->min_ms, RLX);
    out->max_ms = atomic_load_explicit(&h->max_ms, RLX);
}

static double snap_percentile(const histogram_snap_t *h, double q)
{
    if (h->count == 0 || h->max_ms < 0 || h->min_ms > h->max_ms)
        return 0.0;
    if (q < 0.0)
        q = 0.0;
    if (q > 1.0)
        q = 1.0;
    double lo_all = (double)h->min_ms, hi_all = (double)h->max_ms;
    double rank = q * (double)h->count;
    uint64_t cum = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        uint64_t c = h->buckets[i];
        if (c == 0)
            continue;
        if ((double)(cum + c) >= rank) {
            /* Interpolate inside the part of the bucket that samples were
             * actually seen in: a bucket of identical samples answers exactly. */
            double lo = i == 0 ? 0.0 : (double)bounds_ms[i - 1];
            double hi = i < NBOUNDS ? (double)bounds_ms[i] : hi_all;
            lo = fmax(lo, lo_all);
            hi = fmin(hi, hi_all);
            if (hi < lo)
                hi = lo;
            double frac = (rank - (double)cum) / (double)c;
            if (frac < 0.0)
                frac = 0.0;
            double v = lo + frac * (hi - lo);
            return fmin(fmax(v, lo_all), hi_all);
        }
        cum += c;
    }
    return hi_all;
}

double ev_stats_latency_percentile(ev_stats_t *s, ev_provider_id_t p, double q)
{
    histogram_snap_t h;
    histogram_read(&prov(s, p)->latency, &h);
    return snap_percentile(&h, q);
}

/* Everything one snapshot reports about a provider. */
typedef struct provider_view {
    ev_stats_probe_t live;
    uint64_t outcomes[EV_STATS_OUTCOME_COUNT];
    uint64_t calls, successes, errors, rate_limited, retries, fallbacks_from;
    uint64_t tokens_in, tokens_out;
    bool configured, disabled, quota_cooldown;
    int models_unavailable;
    bool paused;
    int64_t pause_until_wall_us, pause_remaining_us;
    const char *pause_reason;
    histogram_snap_t latency;
    double p50, p95, p99;
} provider_view_t;

static void provider_read(ev_stats_t *s, ev_provider_id_t p, provider_view_t *v)
{
    provider_stats_t *ps = prov(s, p);
    memset(v, 0, sizeof(*v));
    for (int i = 0; i < EV_STATS_OUTCOME_COUNT; i++) {
        v->outcomes[i] = atomic_load_explicit(&ps->outcomes[i], RLX);
        v->calls += v->outcomes[i];
    }
    v->successes = v->outcomes[EV_STATS_OUTCOME_OK];
    v->errors = v->calls - v->successes;
    v->rate_limited = v->outcomes[EV_STATS_OUTCOME_RATE_LIMITED];
    v->retries = atomic_load_explicit(&ps->retries, RLX);
    v->fallbacks_from = atomic_load_explicit(&ps->fallbacks_from, RLX);
    v->tokens_in = atomic_load_explicit(&ps->tokens_in, RLX);
    v->tokens_out = atomic_load_explicit(&ps->tokens_out, RLX);
    v->configured = atomic_load_explicit(&ps->configured, RLX);
    v->disabled = atomic_load_explicit(&ps->disabled, RLX);
    v->quota_cooldown = atomic_load_explicit(&ps->quota_cooldown, RLX);
    v->models_unavailable = atomic_load_explicit(&ps->models_unavailable, RLX);
    v->pause_until_wall_us = atomic_load_explicit(&ps->pause_until_wall_us, RLX);
    v->pause_reason = atomic_load_explicit(&ps->pause_reason, RLX);
    v->pause_remaining_us = v->pause_until_wall_us - ev_clock_wall_us(s->clock);
    v->paused = v->pause_remaining_us > 0;
    histogram_read(&ps->latency, &v->latency);
    v->p50 = snap_percentile(&v->latency, 0.50);
    v->p95 = snap_percentile(&v->latency, 0.95);
    v->p99 = snap_percentile(&v->latency, 0.99);

    /* Defaults from what this module knows; the probe overwrites them. */
    v->live.breaker = "closed";
    v->live.error_rate = v->calls ? (double)v->errors / (double)v->calls : 0.0;
    v->live.in_flight = atomic_load_explicit(&ps->in_flight, RLX);
    v->live.max_concurrent = atomic_load_explicit(&ps->max_concurrent, RLX);
    v->live.rpm_limit = atomic_load_explicit(&ps->rpm_limit, RLX);
    v->live.rpm_ceiling = v->live.rpm_limit;
    v->live.tpm_limit = 0;
    v->live.tpm_used = 0;
    v->live.limits_scope = "process";

    pthread_mutex_lock(&s->probe_lock);
    ev_stats_probe_fn fn = ps->probe;
    void *ctx = ps->probe_ctx;
    pthread_mutex_unlock(&s->probe_lock);
    if (fn)
        fn(&v->live, ctx);
    if (!v->live.breaker)
        v->live.breaker = "closed";
    if (!v->live.limits_scope)
        v->live.limits_scope = "process";
    if (!isfinite(v->live.error_rate))
        v->live.error_rate = 0.0;
    if (!isfinite(v->live.rpm_limit))
        v->live.rpm_limit = 0.0;
    if (!isfinite(v->live.rpm_ceiling))
        v->live.rpm_ceiling = 0.0;
}

/* Everything one snapshot reports outside the providers. */
typedef struct global_view {
    int64_t uptime_s;
    int workers_configured, workers_busy;
    int budget_limit;
    uint64_t budget_exhausted, fallbacks, api_calls, processed;
    uint64_t parses, parse_kills, parse_wall_ms, parse_cpu_us;
    uint64_t by_status[EV_STATS_STATUS_COUNT];
    uint64_t checks[NCHECKS][NVERDICTS];
    double calls_per_submission_avg;
    int64_t per_minute;
} global_view_t;

static void global_read(ev_stats_t *s, global_view_t *g)
{
    memset(g, 0, sizeof(*g));
    int64_t up = ev_clock_now_us(s->clock) - s->start_us;
    g->uptime_s = up > 0 ? up / 1000000 : 0;
    g->workers_configured = atomic_load_explicit(&s->workers_configured, RLX);
    g->workers_busy = atomic_load_explicit(&s->workers_busy, RLX);
    g->budget_limit = atomic_load_explicit(&s->budget_limit, RLX);
    g->budget_exhausted = atomic_load_explicit(&s->budget_exhausted, RLX);
    g->fallbacks = atomic_load_explicit(&s->fallbacks, RLX);
    g->parses = atomic_load_explicit(&s->parses, RLX);
    g->parse_kills = atomic_load_explicit(&s->parse_kills, RLX);
    g->parse_wall_ms = atomic_load_explicit(&s->parse_wall_ms, RLX);
    g->parse_cpu_us = atomic_load_explicit(&s->parse_cpu_us, RLX);
    g->api_calls = atomic_load_explicit(&s->api_calls, RLX);
    for (int i = 0; i < EV_STATS_STATUS_COUNT; i++) {
        g->by_status[i] = atomic_load_explicit(&s->by_status[i], RLX);
        g->processed += g->by_status[i];
    }
    for (size_t c = 0; c < NCHECKS; c++)
        for (size_t v = 0; v < NVERDICTS; v++)
            g->checks[c][v] = atomic_load_explicit(&s->checks[c][v], RLX);
    g->calls_per_submission_avg = g->processed ? (double)g->api_calls / (double)g->processed : 0.0;
    g->per_minute = ev_stats_per_minute(s);
}

/* ---- JSON. ---- */

/*
 * Sticky-error helpers: each one adds a member (taking ownership of v even on
 * failure) unless an earlier step already failed. A child object is filled
 * completely before it is attached to its parent, so no pointer is used after
 * its ownership moved.
 */
static void put(int *rc, json_object *o, const char *key, json_object *v)
{
    if (*rc < 0 || !o || !v || json_object_object_add(o, key, v) != 0) {
        json_object_put(v);
        if (*rc == 0)
            *rc = EV_ENOMEM;
    }
}

static void put_null(int *rc, json_object *o, const char *key)
{
    if (*rc < 0 || !o || json_object_object_add(o, key, NULL) != 0) {
        if (*rc == 0)
            *rc = EV_ENOMEM;
    }
}

static void put_u64(int *rc, json_object *o, const char *key, uint64_t n)
{
    put(rc, o, key, json_object_new_int64(n > INT64_MAX ? INT64_MAX : (int64_t)n));
}

static void put_i64(int *rc, json_object *o, const char *key, int64_t n)
{
    put(rc, o, key, json_object_new_int64(n));
}

/* Doubles are written with at most `decimals` decimals and always with a
 * decimal point, so a reader sees the same JSON type whatever the value. */
static void put_double(int *rc, json_object *o, const char *key, double d, int decimals)
{
    char text[64];
    if (!isfinite(d))
        d = 0.0;
    double scale = pow(10.0, decimals);
    d = round(d * scale) / scale;
    snprintf(text, sizeof(text), "%.*f", decimals, d);
    /* Trim trailing zeros but keep one digit after the point. */
    size_t n = strlen(text);
    while (n > 2 && text[n - 1] == '0' && text[n - 2] != '.')
        text[--n] = '\0';
    put(rc, o, key, json_object_new_double_s(d, text));
}

static void put_str(int *rc, json_object *o, const char *key, const char *str)
{
    put(rc, o, key, json_object_new_string(str));
}

static void put_bool(int *rc, json_object *o, const char *key, bool b)
{
    put(rc, o, key, json_object_new_boolean(b));
}

static json_object *provider_json(int *rc, const provider_view_t *v)
{
    json_object *o = json_object_new_object();
    put_str(rc, o, "breaker", v->live.breaker);
    put_double(rc, o, "error_rate", v->live.error_rate, 4);
    put_i64(rc, o, "in_flight", v->live.in_flight);
    put_i64(rc, o, "max_concurrent", v->live.max_concurrent);
    put_double(rc, o, "rpm_limit", v->live.rpm_limit, 3);
    put_double(rc, o, "rpm_ceiling", v->live.rpm_ceiling, 3);
    put_i64(rc, o, "tpm_limit", v->live.tpm_limit);
    put_i64(rc, o, "tpm_used", v->live.tpm_used);
    put_str(rc, o, "limits_scope", v->live.limits_scope);
    put_u64(rc, o, "calls", v->calls);
    put_u64(rc, o, "successes", v->successes);
    put_u64(rc, o, "errors", v->errors);
    put_u64(rc, o, "rate_limited", v->rate_limited);
    put_u64(rc, o, "retries", v->retries);
    json_object *lat = json_object_new_object();
    put_double(rc, lat, "p50", v->p50, 1);
    put_double(rc, lat, "p95", v->p95, 1);
    put_double(rc, lat, "p99", v->p99, 1);
    put(rc, o, "latency_ms", lat);
    put_u64(rc, o, "tokens_in", v->tokens_in);
    put_u64(rc, o, "tokens_out", v->tokens_out);
    put_bool(rc, o, "configured", v->configured);
    put_bool(rc, o, "disabled", v->disabled);
    put_bool(rc, o, "quota_cooldown", v->quota_cooldown);
    if (v->paused) {
        /* A provider-wide pause (a 429's Retry-After, capped): why and until when. */
        json_object *pause = json_object_new_object();
        put_i64(rc, pause, "until_unix", v->pause_until_wall_us / 1000000);
        put_double(rc, pause, "remaining_s", (double)v->pause_remaining_us / 1e6, 1);
        json_object_object_add(pause, "reason",
                               json_object_new_string(v->pause_reason ? v->pause_reason : ""));
        put(rc, o, "pause", pause);
    } else {
        put_null(rc, o, "pause");
    }
    put_i64(rc, o, "models_unavailable", v->models_unavailable);
    put_u64(rc, o, "fallbacks_from", v->fallbacks_from);
    json_object *outc = json_object_new_object();
    for (int i = 0; i < EV_STATS_OUTCOME_COUNT; i++)
        put_u64(rc, outc, outcome_names[i], v->outcomes[i]);
    put(rc, o, "outcomes", outc);
    if (*rc < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

int ev_stats_snapshot_json(json_object **out, ev_stats_t *s, const ev_queue_counts_t *queue)
{
    int rc = 0;
    global_view_t g;
    provider_view_t pv[EV_PROVIDER_COUNT];

    *out = NULL;
    global_read(s, &g);
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        provider_read(s, (ev_provider_id_t)p, &pv[p]);

    json_object *root = json_object_new_object();
    put_i64(&rc, root, "uptime_s", g.uptime_s);
    put_str(&rc, root, "version", EV_VERSION);

    json_object *workers = json_object_new_object();
    put_i64(&rc, workers, "configured", g.workers_configured);
    put_i64(&rc, workers, "busy", g.workers_busy);
    put(&rc, root, "workers", workers);

    json_object *q = json_object_new_object();
    const char *qkeys[] = {"pending",      "processing", "validated", "rejected",
                           "needs_review", "failed",     "cancelled"};
    if (queue) {
        const int64_t qvals[] = {queue->pending,  queue->processing,   queue->validated,
                                 queue->rejected, queue->needs_review, queue->failed,
                                 queue->cancelled};
        for (size_t i = 0; i < EV_ARRAY_LEN(qkeys); i++)
            put_i64(&rc, q, qkeys[i], qvals[i]);
        put_double(&rc, q, "oldest_pending_age_s", queue->oldest_pending_age_s, 3);
    } else {
        for (size_t i = 0; i < EV_ARRAY_LEN(qkeys); i++)
            put_null(&rc, q, qkeys[i]);
        put_null(&rc, q, "oldest_pending_age_s");
    }
    put(&rc, root, "queue", q);

    json_object *hooks = json_object_new_object();
    if (queue) {
        put_i64(&rc, hooks, "pending", queue->webhooks_pending);
        put_i64(&rc, hooks, "failed", queue->webhooks_failed);
    } else {
        put_null(&rc, hooks, "pending");
        put_null(&rc, hooks, "failed");
    }
    put(&rc, root, "webhooks", hooks);

    json_object *providers = json_object_new_object();
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        put(&rc, providers, ev_provider_name((ev_provider_id_t)p), provider_json(&rc, &pv[p]));
    put(&rc, root, "providers", providers);

    put_u64(&rc, root, "fallbacks", g.fallbacks);

    json_object *parse = json_object_new_object();
    put_u64(&rc, parse, "count", g.parses);
    put_u64(&rc, parse, "limit_kills", g.parse_kills);
    put_double(&rc, parse, "wall_ms_avg", g.parses ? (double)g.parse_wall_ms / (double)g.parses : 0,
               3);
    put_double(&rc, parse, "cpu_ms_avg",
               g.parses ? (double)g.parse_cpu_us / 1000.0 / (double)g.parses : 0, 3);
    put(&rc, root, "parse", parse);

    json_object *budget = json_object_new_object();
    put_i64(&rc, budget, "limit", g.budget_limit);
    put_u64(&rc, budget, "exhausted", g.budget_exhausted);
    put_double(&rc, budget, "calls_per_submission_avg", g.calls_per_submission_avg, 3);
    put(&rc, root, "budget", budget);

    json_object *subs = json_object_new_object();
    put_u64(&rc, subs, "processed", g.processed);
    put_i64(&rc, subs, "per_minute", g.per_minute);
    json_object *by_status = json_object_new_object();
    for (int i = 0; i < EV_STATS_STATUS_COUNT; i++)
        put_u64(&rc, by_status, status_names[i], g.by_status[i]);
    put(&rc, subs, "by_status", by_status);
    put(&rc, root, "submissions", subs);

    json_object *checks = json_object_new_object();
    for (size_t c = 0; c < NCHECKS; c++) {
        json_object *one = json_object_new_object();
        for (size_t v = 0; v < NVERDICTS; v++)
            put_u64(&rc, one, verdict_names[v], g.checks[c][v]);
        put(&rc, checks, check_names[c], one);
    }
    put(&rc, root, "checks", checks);

    ev_stats_cluster_t cl;
    cluster_read(s, &cl);
    if (cl.enabled) {
        json_object *o = json_object_new_object();
        put_str(&rc, o, "replica_id", cl.replica_id);
        put_i64(&rc, o, "replicas_alive", cl.replicas_alive);
        put_bool(&rc, o, "coordinated", cl.coordinated);
        put_u64(&rc, o, "round_trips", cl.round_trips);
        put_double(&rc, o, "round_trip_ms_avg",
                   cl.round_trips ? (double)cl.round_trip_us / 1000.0 / (double)cl.round_trips : 0,
                   3);
        put_u64(&rc, o, "rate_reservations", cl.rate_reservations);
        put_u64(&rc, o, "slot_acquisitions", cl.slot_acquisitions);
        put_u64(&rc, o, "fallback_grants", cl.fallback_grants);
        put_u64(&rc, o, "state_applied", cl.state_applied);
        put(&rc, root, "cluster", o);
    }

    if (rc < 0 || !root) {
        json_object_put(root);
        return rc < 0 ? rc : EV_ENOMEM;
    }
    *out = root;
    return 0;
}

/* ---- Prometheus text format 0.0.4. ---- */

void ev_stats_buf_printf(ev_stats_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
        va_end(ap);
        EV_ASSERT(n >= 0);
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        b->data = ev_realloc(b->data, cap);
        b->cap = cap;
    }
}

void ev_stats_buf_free(ev_stats_buf_t *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

#define PFX "event_validator_"

static void family(ev_stats_buf_t *b, const char *name, const char *type, const char *help)
{
    ev_stats_buf_printf(b, "# HELP " PFX "%s %s\n# TYPE " PFX "%s %s\n", name, help, name, type);
}

/* Prometheus floats: finite values only, shortest round-trippable form. */
static const char *fnum(char *text, size_t n, double d)
{
    if (!isfinite(d))
        d = 0.0;
    snprintf(text, n, "%.10g", d);
    return text;
}

/* The per-provider counter families, each a uint64_t of provider_view_t. */
static const struct {
    const char *name, *help;
    size_t offset;
} provider_counters[] = {
    {"provider_calls_total", "HTTP attempts made to the provider.",
     offsetof(provider_view_t, calls)},
    {"provider_successes_total", "HTTP attempts that succeeded.",
     offsetof(provider_view_t, successes)},
    {"provider_errors_total", "HTTP attempts that failed (any reason).",
     offsetof(provider_view_t, errors)},
    {"provider_rate_limited_total", "HTTP attempts answered 429 Too Many Requests.",
     offsetof(provider_view_t, rate_limited)},
    {"provider_retries_total", "HTTP attempts that were retries.",
     offsetof(provider_view_t, retries)},
    {"provider_fallbacks_total", "Checks that fell back from this provider to the other one.",
     offsetof(provider_view_t, fallbacks_from)},
    {"provider_input_tokens_total", "Prompt tokens reported by the provider.",
     offsetof(provider_view_t, tokens_in)},
    {"provider_output_tokens_total", "Completion tokens reported by the provider.",
     offsetof(provider_view_t, tokens_out)},
};

typedef enum {
    G_IN_FLIGHT,
    G_MAX_CONCURRENT,
    G_RPM_LIMIT,
    G_RPM_CEILING,
    G_TPM_LIMIT,
    G_TPM_USED,
    G_ERROR_RATE,
    G_CONFIGURED,
    G_DISABLED,
    G_QUOTA_COOLDOWN,
    G_MODELS_UNAVAILABLE,
    G_PAUSED,
    G_PAUSE_UNTIL
} gauge_kind_t;

/* The per-provider gauge families. */
static const struct {
    const char *name, *help;
    gauge_kind_t kind;
} provider_gauges[] = {
    {"provider_in_flight", "HTTP requests to the provider in flight now.", G_IN_FLIGHT},
    {"provider_max_concurrent", "Concurrent requests allowed.", G_MAX_CONCURRENT},
    {"provider_rpm_limit", "Effective request rate limit per minute.", G_RPM_LIMIT},
    {"provider_rpm_ceiling", "Configured request rate the learned rate stays under.",
     G_RPM_CEILING},
    {"provider_tpm_limit", "Tokens per minute allowed (0: no limit).", G_TPM_LIMIT},
    {"provider_tpm_used", "Tokens charged in the last minute.", G_TPM_USED},
    {"provider_error_ratio", "Circuit breaker error rate over its window (0 to 1).", G_ERROR_RATE},
    {"provider_configured", "1 when the provider has an API key.", G_CONFIGURED},
    {"provider_disabled", "1 when the provider was disabled for this run (invalid key).",
     G_DISABLED},
    {"provider_quota_cooldown", "1 while the provider cools down after its daily quota ran out.",
     G_QUOTA_COOLDOWN},
    {"provider_models_unavailable",
     "Configured models the provider called unknown, retired or unusable (set aside).",
     G_MODELS_UNAVAILABLE},
    {"provider_paused", "1 while a provider-wide pause (a 429's Retry-After, capped) holds calls.",
     G_PAUSED},
    {"provider_pause_until_seconds", "End of the provider-wide pause, Unix time (0: none).",
     G_PAUSE_UNTIL},
};

static double gauge_value(const provider_view_t *v, gauge_kind_t kind)
{
    switch (kind) {
    case G_IN_FLIGHT:
        return v->live.in_flight;
    case G_MAX_CONCURRENT:
        return v->live.max_concurrent;
    case G_RPM_LIMIT:
        return v->live.rpm_limit;
    case G_RPM_CEILING:
        return v->live.rpm_ceiling;
    case G_TPM_LIMIT:
        return (double)v->live.tpm_limit;
    case G_TPM_USED:
        return (double)v->live.tpm_used;
    case G_ERROR_RATE:
        return v->live.error_rate;
    case G_CONFIGURED:
        return v->configured;
    case G_DISABLED:
        return v->disabled;
    case G_QUOTA_COOLDOWN:
        return v->quota_cooldown;
    case G_MODELS_UNAVAILABLE:
        return v->models_unavailable;
    case G_PAUSED:
        return v->paused;
    case G_PAUSE_UNTIL:
        return v->paused ? (double)(v->pause_until_wall_us / 1000000) : 0.0;
    }
    return 0.0;
}

/* The samples of one histogram family (the HELP/TYPE lines are the
 * caller's); labels NULL or "k=\"v\"". */
static void render_histogram(ev_stats_buf_t *b, const char *name, const char *labels,
                             const histogram_snap_t *h)
{
    char num[64];
    const char *sep = labels ? "," : "";
    labels = labels ? labels : "";
    uint64_t cum = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cum += h->buckets[i];
        ev_stats_buf_printf(
            b, PFX "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name, labels, sep,
            i < NBOUNDS ? fnum(num, sizeof(num), (double)bounds_ms[i] / 1000.0) : "+Inf", cum);
    }
    ev_stats_buf_printf(b, PFX "%s_sum%s%s%s %s\n", name, *labels ? "{" : "", labels,
                        *labels ? "}" : "", fnum(num, sizeof(num), (double)h->sum_ms / 1000.0));
    ev_stats_buf_printf(b, PFX "%s_count%s%s%s %" PRIu64 "\n", name, *labels ? "{" : "", labels,
                        *labels ? "}" : "", h->count);
}

/*
 * The standard process metrics every Prometheus client library exports
 * (unprefixed names, so stock dashboards and alerts work): start time, CPU
 * seconds, resident memory and open descriptors, read from /proc.
 */
static void render_process(ev_stats_buf_t *b)
{
    char stat[1024] = "";
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        if (!fgets(stat, sizeof(stat), f))
            stat[0] = '\0';
        fclose(f);
    }
    /* Fields after the parenthesised command name, which may hold spaces. */
    const char *p = strrchr(stat, ')');
    unsigned long long utime = 0, stime = 0, start = 0;
    long long rss_pages = 0;
    if (p && sscanf(p + 2,
                    "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                    "%*d %llu %*u %lld",
                    &utime, &stime, &start, &rss_pages) != 4)
        p = NULL;
    long long btime = 0;
    f = fopen("/proc/stat", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "btime %lld", &btime) == 1)
                break;
        fclose(f);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e = readdir(d); e; e = readdir(d))
            fds += e->d_name[0] != '.';
        closedir(d);
        fds--; /* the directory being read */
    }
    double tick = (double)sysconf(_SC_CLK_TCK);
    if (!p || tick <= 0)
        return;
    ev_stats_buf_printf(b,
                        "# HELP process_start_time_seconds Start time of the process since the "
                        "Unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\n"
                        "process_start_time_seconds %.2f\n",
                        (double)btime + (double)start / tick);
    ev_stats_buf_printf(b,
                        "# HELP process_cpu_seconds_total Total user and system CPU time spent "
                        "in seconds.\n# TYPE process_cpu_seconds_total counter\n"
                        "process_cpu_seconds_total %.2f\n",
                        (double)(utime + stime) / tick);
    ev_stats_buf_printf(b,
                        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                        "# TYPE process_resident_memory_bytes gauge\n"
                        "process_resident_memory_bytes %lld\n",
                        rss_pages * (long long)sysconf(_SC_PAGESIZE));
    ev_stats_buf_printf(b,
                        "# HELP process_open_fds Number of open file descriptors.\n"
                        "# TYPE process_open_fds gauge\nprocess_open_fds %d\n",
                        fds);
}

int ev_stats_render_prometheus(ev_stats_t *s, const ev_queue_counts_t *queue, ev_stats_buf_t *b)
{
    char num[64];
    global_view_t g;
    provider_view_t pv[EV_PROVIDER_COUNT];

    global_read(s, &g);
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        provider_read(s, (ev_provider_id_t)p, &pv[p]);

    family(b, "build_info", "gauge", "Build information; the value is always 1.");
    ev_stats_buf_printf(b, PFX "build_info{version=\"%s\",revision=\"%s\"} 1\n", EV_VERSION,
                        EV_REVISION);
    family(b, "uptime_seconds", "gauge", "Seconds since the process started.");
    ev_stats_buf_printf(b, PFX "uptime_seconds %" PRId64 "\n", g.uptime_s);

    family(b, "workers_configured", "gauge", "Worker threads configured.");
    ev_stats_buf_printf(b, PFX "workers_configured %d\n", g.workers_configured);
    family(b, "workers_busy", "gauge", "Worker threads currently processing a submission.");
    ev_stats_buf_printf(b, PFX "workers_busy %d\n", g.workers_busy);

    family(b, "queue_submissions", "gauge", "Submissions in the database by status.");
    if (queue) {
        const char *keys[] = {"pending",      "processing", "validated", "rejected",
                              "needs_review", "failed",     "cancelled"};
        const int64_t vals[] = {queue->pending,  queue->processing,   queue->validated,
                                queue->rejected, queue->needs_review, queue->failed,
                                queue->cancelled};
        for (size_t i = 0; i < EV_ARRAY_LEN(keys); i++)
            ev_stats_buf_printf(b, PFX "queue_submissions{status=\"%s\"} %" PRId64 "\n", keys[i],
                                vals[i]);
    }
    family(b, "queue_oldest_pending_age_seconds", "gauge",
           "Age of the oldest pending submission (0 when none is pending).");
    if (queue)
        ev_stats_buf_printf(b, PFX "queue_oldest_pending_age_seconds %s\n",
                            fnum(num, sizeof(num), queue->oldest_pending_age_s));

    family(b, "webhook_deliveries", "gauge",
           "Webhook deliveries waiting (pending) or given up (failed), all replicas.");
    if (queue) {
        ev_stats_buf_printf(b, PFX "webhook_deliveries{status=\"pending\"} %" PRId64 "\n",
                            queue->webhooks_pending);
        ev_stats_buf_printf(b, PFX "webhook_deliveries{status=\"failed\"} %" PRId64 "\n",
                            queue->webhooks_failed);
    }

    for (size_t f = 0; f < EV_ARRAY_LEN(provider_counters); f++) {
        family(b, provider_counters[f].name, "counter", provider_counters[f].help);
        for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
            const char *field = (const char *)&pv[p] + provider_counters[f].offset;
            ev_stats_buf_printf(b, PFX "%s{provider=\"%s\"} %" PRIu64 "\n",
                                provider_counters[f].name, ev_provider_name((ev_provider_id_t)p),
                                *(const uint64_t *)(const void *)field);
        }
    }

    family(b, "provider_call_outcomes_total", "counter", "HTTP attempts by outcome class.");
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        for (int i = 0; i < EV_STATS_OUTCOME_COUNT; i++)
            ev_stats_buf_printf(
                b, PFX "provider_call_outcomes_total{provider=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
                ev_provider_name((ev_provider_id_t)p), outcome_names[i], pv[p].outcomes[i]);

    for (size_t f = 0; f < EV_ARRAY_LEN(provider_gauges); f++) {
        family(b, provider_gauges[f].name, "gauge", provider_gauges[f].help);
        for (int p = 0; p < EV_PROVIDER_COUNT; p++)
            ev_stats_buf_printf(
                b, PFX "%s{provider=\"%s\"} %s\n", provider_gauges[f].name,
                ev_provider_name((ev_provider_id_t)p),
                fnum(num, sizeof(num), gauge_value(&pv[p], provider_gauges[f].kind)));
    }

    family(b, "provider_breaker_state", "gauge",
           "Circuit breaker state: 1 for the current state, 0 for the others.");
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        for (size_t i = 0; i < EV_ARRAY_LEN(breaker_states); i++)
            ev_stats_buf_printf(b, PFX "provider_breaker_state{provider=\"%s\",state=\"%s\"} %d\n",
                                ev_provider_name((ev_provider_id_t)p), breaker_states[i],
                                strcmp(pv[p].live.breaker, breaker_states[i]) == 0);

    family(b, "provider_request_duration_seconds", "histogram",
           "Latency of HTTP attempts to the provider.");
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        const char *name = ev_provider_name((ev_provider_id_t)p);
        const histogram_snap_t *h = &pv[p].latency;
        uint64_t cum = 0;
        for (size_t i = 0; i < NBUCKETS; i++) {
            cum += h->buckets[i];
            if (i < NBOUNDS)
                ev_stats_buf_printf(
                    b,
                    PFX
                    "provider_request_duration_seconds_bucket{provider=\"%s\",le=\"%s\"} %" PRIu64
                    "\n",
                    name, fnum(num, sizeof(num), (double)bounds_ms[i] / 1000.0), cum);
            else
                ev_stats_buf_printf(
                    b,
                    PFX
                    "provider_request_duration_seconds_bucket{provider=\"%s\",le=\"+Inf\"} %" PRIu64
                    "\n",
                    name, cum);
        }
        ev_stats_buf_printf(b, PFX "provider_request_duration_seconds_sum{provider=\"%s\"} %s\n",
                            name, fnum(num, sizeof(num), (double)h->sum_ms / 1000.0));
        ev_stats_buf_printf(
            b, PFX "provider_request_duration_seconds_count{provider=\"%s\"} %" PRIu64 "\n", name,
            h->count);
    }

    family(b, "provider_limiter_wait_seconds", "histogram",
           "Time a call waited for its rate-limiter slot.");
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        histogram_snap_t h;
        histogram_read(&prov(s, (ev_provider_id_t)p)->limiter_wait, &h);
        char labels[64];
        snprintf(labels, sizeof(labels), "provider=\"%s\"", ev_provider_name((ev_provider_id_t)p));
        render_histogram(b, "provider_limiter_wait_seconds", labels, &h);
    }
    family(b, "submission_duration_seconds", "histogram",
           "Time one processing pass of a submission took, claim to final write.");
    {
        histogram_snap_t h;
        histogram_read(&s->submission_duration, &h);
        render_histogram(b, "submission_duration_seconds", NULL, &h);
    }
    render_process(b);
    ev_stats_cluster_t cl;
    cluster_read(s, &cl);
    if (cl.enabled) {
        family(b, "cluster_replicas_alive", "gauge", "Replicas on this database seen alive.");
        ev_stats_buf_printf(b, PFX "cluster_replicas_alive %d\n", cl.replicas_alive);
        family(b, "cluster_coordinated", "gauge",
               "1 while limits are coordinated through the database, 0 while on this "
               "replica's share.");
        ev_stats_buf_printf(b, PFX "cluster_coordinated %d\n", cl.coordinated);
        family(b, "cluster_round_trips_total", "counter",
               "Statements sent to the database to coordinate the cluster.");
        ev_stats_buf_printf(b, PFX "cluster_round_trips_total %" PRIu64 "\n", cl.round_trips);
        family(b, "cluster_round_trip_seconds_total", "counter",
               "Time spent in coordination statements.");
        ev_stats_buf_printf(b, PFX "cluster_round_trip_seconds_total %s\n",
                            fnum(num, sizeof(num), (double)cl.round_trip_us / 1e6));
        family(b, "cluster_fallback_grants_total", "counter",
               "Rate slots and concurrency units granted from this replica's share.");
        ev_stats_buf_printf(b, PFX "cluster_fallback_grants_total %" PRIu64 "\n",
                            cl.fallback_grants);
    }

    family(b, "fallbacks_total", "counter", "Checks that fell back to another provider.");
    ev_stats_buf_printf(b, PFX "fallbacks_total %" PRIu64 "\n", g.fallbacks);

    family(b, "parse_total", "counter", "Untrusted files parsed in the sandbox.");
    ev_stats_buf_printf(b, PFX "parse_total %" PRIu64 "\n", g.parses);
    family(b, "parse_limit_kills_total", "counter",
           "Sandboxed parses stopped by a limit (CPU, memory or deadline).");
    ev_stats_buf_printf(b, PFX "parse_limit_kills_total %" PRIu64 "\n", g.parse_kills);
    family(b, "parse_duration_seconds_total", "counter", "Wall-clock time of sandboxed parses.");
    ev_stats_buf_printf(b, PFX "parse_duration_seconds_total %s\n",
                        fnum(num, sizeof(num), (double)g.parse_wall_ms / 1000.0));
    family(b, "parse_cpu_seconds_total", "counter", "CPU time of the sandboxed parse children.");
    ev_stats_buf_printf(b, PFX "parse_cpu_seconds_total %s\n",
                        fnum(num, sizeof(num), (double)g.parse_cpu_us / 1e6));

    family(b, "budget_limit", "gauge", "HTTP attempts allowed per submission.");
    ev_stats_buf_printf(b, PFX "budget_limit %d\n", g.budget_limit);
    family(b, "budget_exhausted_total", "counter", "Submissions that used up their call budget.");
    ev_stats_buf_printf(b, PFX "budget_exhausted_total %" PRIu64 "\n", g.budget_exhausted);
    family(b, "budget_calls_per_submission_avg", "gauge",
           "Average HTTP attempts per processed submission.");
    ev_stats_buf_printf(b, PFX "budget_calls_per_submission_avg %s\n",
                        fnum(num, sizeof(num), g.calls_per_submission_avg));
    family(b, "submission_api_calls_total", "counter",
           "HTTP attempts made by processed submissions (all providers).");
    ev_stats_buf_printf(b, PFX "submission_api_calls_total %" PRIu64 "\n", g.api_calls);

    family(b, "submissions_processed_total", "counter",
           "Submission processing passes by resulting status.");
    for (int i = 0; i < EV_STATS_STATUS_COUNT; i++)
        ev_stats_buf_printf(b, PFX "submissions_processed_total{status=\"%s\"} %" PRIu64 "\n",
                            status_names[i], g.by_status[i]);
    family(b, "submissions_per_minute", "gauge",
           "Submission processing passes that ended in the last 60 seconds.");
    ev_stats_buf_printf(b, PFX "submissions_per_minute %" PRId64 "\n", g.per_minute);

    family(b, "checks_total", "counter", "Check results by check and verdict.");
    for (size_t c = 0; c < NCHECKS; c++)
        for (size_t v = 0; v < NVERDICTS; v++)
            ev_stats_buf_printf(b, PFX "checks_total{check=\"%s\",verdict=\"%s\"} %" PRIu64 "\n",
                                check_names[c], verdict_names[v], g.checks[c][v]);
    return 0;
}
