/*
 * stats.h - the process-wide operational counters behind GET /stats and
 * GET /metrics (SPEC §7).
 *
 * One ev_stats_t is created in main before any thread starts and freed after
 * every thread that records into it has stopped. Recording functions are
 * lock-free (relaxed atomics) and may be called from any thread at any time:
 * worker threads, provider clients, the pool. Readers (the stats server's
 * HTTP threads) take snapshots; a snapshot is not one atomic cut across all
 * counters, but each counter is exact and every histogram is internally
 * consistent (its _count is the sum of its buckets as read).
 *
 * Conventions for the provider counters, per provider:
 *   calls        every HTTP attempt whose outcome was recorded;
 *   successes    attempts with EV_STATS_OUTCOME_OK;
 *   errors       every other outcome (calls = successes + errors);
 *   rate_limited attempts answered 429 (also counted in errors);
 *   retries      attempts that were retries of an earlier attempt (also calls).
 *
 * Breaker state, error rate and the gauges that belong to other modules
 * (in-flight, max_concurrent, effective rpm limit) come either from setters
 * below or from a probe callback registered per provider, which the snapshot
 * calls without holding any lock of this module.
 */
#ifndef EV_STATS_H
#define EV_STATS_H

#include "ev/clock.h"
#include "ev/config.h"
#include "ev/queue.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ev_stats ev_stats_t;

/* How one HTTP attempt to a provider ended. */
typedef enum {
    EV_STATS_OUTCOME_OK = 0,       /* 2xx with a usable body */
    EV_STATS_OUTCOME_RATE_LIMITED, /* 429 */
    EV_STATS_OUTCOME_SERVER_ERROR, /* 5xx */
    EV_STATS_OUTCOME_TIMEOUT,      /* the request timed out */
    EV_STATS_OUTCOME_TRANSPORT,    /* connection or TLS failure, no HTTP status */
    EV_STATS_OUTCOME_CLIENT_ERROR, /* any other 4xx (bad request, invalid key, ...) */
    EV_STATS_OUTCOME_BAD_RESPONSE, /* 2xx whose body could not be used */
    EV_STATS_OUTCOME_COUNT
} ev_stats_outcome_t;

/* How one processing pass of a submission ended. */
typedef enum {
    EV_STATS_STATUS_VALIDATED = 0,
    EV_STATS_STATUS_REJECTED,
    EV_STATS_STATUS_NEEDS_REVIEW,
    EV_STATS_STATUS_FAILED,
    EV_STATS_STATUS_REQUEUED, /* went back to `pending` to be retried later */
    EV_STATS_STATUS_COUNT
} ev_stats_status_t;

/* "ok", "rate_limited", ... / "validated", ..., "requeued"; static storage,
 * "unknown" for an out-of-range value. */
const char *ev_stats_outcome_name(ev_stats_outcome_t outcome);
const char *ev_stats_status_name(ev_stats_status_t status);

typedef struct ev_stats_options {
    const ev_clock_t *clock; /* NULL: ev_clock_system(); must outlive the stats */
    int workers_configured;  /* DEFAULT_MAX_WORKERS */
    int budget_limit;        /* MAX_API_CALLS_PER_SUBMISSION */
} ev_stats_options_t;

#define EV_STATS_OPTIONS_INIT                                                                      \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* Creates the stats object; uptime starts now. opts may be NULL (defaults).
 * Returns 0 (aborts on out-of-memory like every small fixed allocation).
 * Free with ev_stats_free (accepts NULL) once no thread records into it and
 * no stats server reads it. */
int ev_stats_new(ev_stats_t **out, const ev_stats_options_t *opts);
void ev_stats_free(ev_stats_t *s);

/* ---- Provider gauges and flags (any thread; last write wins). ---- */

/* Whether the provider has an API key at all (reported as `configured`). */
void ev_stats_set_provider_configured(ev_stats_t *s, ev_provider_id_t p, bool configured);
/* The configured limits: *_MAX_CONCURRENT and the effective requests per
 * minute (RPM_LIMIT x SAFETY_FACTOR). Used unless a probe overrides them. */
void ev_stats_set_provider_limits(ev_stats_t *s, ev_provider_id_t p, int max_concurrent,
                                  double rpm_limit);
/* The provider was disabled for this run (for example an invalid API key). */
void ev_stats_set_provider_disabled(ev_stats_t *s, ev_provider_id_t p, bool disabled);
/* The provider is cooling down after its daily quota ran out. */
/* A provider-wide pause: calls held until until_wall_us (wall clock, µs),
 * for `reason` (static text). Shown while it lasts. */
void ev_stats_set_provider_pause(ev_stats_t *s, ev_provider_id_t p, int64_t until_wall_us,
                                 const char *reason);
void ev_stats_set_provider_quota_cooldown(ev_stats_t *s, ev_provider_id_t p, bool cooling_down);
/* How many configured models of the provider were set aside (unknown,
 * retired or unusable with this configuration). */
void ev_stats_set_provider_models_unavailable(ev_stats_t *s, ev_provider_id_t p, int n);
/* Adds delta (+1 when an HTTP request starts, -1 when it ends) to the
 * provider's in-flight gauge. Used unless a probe overrides it. */
void ev_stats_provider_in_flight_add(ev_stats_t *s, ev_provider_id_t p, int delta);

/*
 * Live state owned by other modules (breaker, semaphore, limiter). The
 * snapshot fills an ev_stats_probe_t with what the stats object knows (breaker
 * "closed", error_rate = lifetime errors/calls, and the gauges set above),
 * then calls the provider's probe, which overwrites what it knows.
 */
typedef struct ev_stats_probe {
    const char *breaker; /* "closed", "open" or "half_open"; static storage */
    double error_rate;   /* the breaker's windowed error rate, 0..1 */
    int in_flight;
    int max_concurrent;
    double rpm_limit;   /* effective requests per minute (the learned rate when
                           ADAPTIVE_LIMITS is on) */
    double rpm_ceiling; /* the configured RPM x safety the learned rate stays under */
    int64_t tpm_limit;  /* tokens per minute allowed, 0 none */
    int64_t tpm_used;   /* tokens (input + output) charged in the last minute */
    /* Where the limits above hold: "process" (default), "cluster" (every
     * replica on the database together) or "share" (this replica's share
     * while the database cannot coordinate). Static storage. */
    const char *limits_scope;
} ev_stats_probe_t;

typedef void (*ev_stats_probe_fn)(ev_stats_probe_t *io, void *ctx);

/* Registers (fn != NULL) or removes (fn == NULL) the provider's probe. The
 * probe is called from the stats server's HTTP threads, possibly several at
 * once, so it must be thread-safe and must not block; ctx must stay valid
 * until the probe is removed or the stats object freed. */
void ev_stats_set_provider_probe(ev_stats_t *s, ev_provider_id_t p, ev_stats_probe_fn fn,
                                 void *ctx);

/* The cluster this replica belongs to (src/cluster.c): /stats `cluster` and
 * the event_validator_cluster_* metrics. Filled by a probe, as above. */
typedef struct ev_stats_cluster {
    bool enabled;           /* false (the default): no cluster section */
    const char *replica_id; /* valid while the probe is registered */
    int replicas_alive;
    bool coordinated;
    uint64_t round_trips;   /* coordination statements sent */
    uint64_t round_trip_us; /* their summed time */
    uint64_t rate_reservations, slot_acquisitions, fallback_grants, state_applied;
} ev_stats_cluster_t;

typedef void (*ev_stats_cluster_fn)(ev_stats_cluster_t *io, void *ctx);

/* Registers (fn != NULL) or removes the cluster probe; same rules as the
 * provider probes. */
void ev_stats_set_cluster_probe(ev_stats_t *s, ev_stats_cluster_fn fn, void *ctx);

/* ---- Events (any thread, lock-free). ---- */

/* One HTTP attempt to provider p ended with `outcome` after latency_ms
 * (negative: not measured, not added to the latency histogram). Token counts
 * are the provider's usage figures (0 when unknown). */
void ev_stats_record_call(ev_stats_t *s, ev_provider_id_t p, ev_stats_outcome_t outcome,
                          int64_t latency_ms, int64_t tokens_in, int64_t tokens_out);
/* A call waited waited_ms for its rate-limiter slot (0 when none). */
void ev_stats_record_limiter_wait(ev_stats_t *s, ev_provider_id_t p, int64_t waited_ms);
/* One processing pass of a submission took ms, claim to final write. */
void ev_stats_record_submission_duration(ev_stats_t *s, int64_t ms);
/* An attempt about to be made is a retry of an earlier one. */
void ev_stats_record_retry(ev_stats_t *s, ev_provider_id_t p);
/* A check fell back from provider `from` to the other provider. */
void ev_stats_record_fallback(ev_stats_t *s, ev_provider_id_t from);
/* A submission hit MAX_API_CALLS_PER_SUBMISSION. */
void ev_stats_record_budget_exhausted(ev_stats_t *s);
/* One sandboxed parse of an untrusted file: its wall time, the child's CPU
 * time, and whether a limit stopped it. */
void ev_stats_record_parse(ev_stats_t *s, int64_t wall_ms, int64_t cpu_us, bool limit_killed);
/* A processing pass of a submission ended with `status` after making
 * api_calls HTTP attempts (all providers together). Feeds `processed`,
 * `per_minute` and `calls_per_submission_avg`. */
void ev_stats_record_submission(ev_stats_t *s, ev_stats_status_t status, int api_calls);
/* One check's verdict: check is "theme", "pdf" or "image", verdict "pass",
 * "fail", "error" or "skipped". Returns 0, or EV_EINVAL for a name outside
 * those (nothing recorded). */
int ev_stats_record_check(ev_stats_t *s, const char *check, const char *verdict);
/* Adds delta (+1 when a worker starts processing a job, -1 when it is done)
 * to workers.busy. */
void ev_stats_worker_busy_add(ev_stats_t *s, int delta);

/* ---- Reading. ---- */

/* Latency histogram bucket upper bounds in milliseconds (the last bucket,
 * +Inf, is implicit). *count receives the number of finite bounds. */
const int64_t *ev_stats_latency_bounds_ms(size_t *count);

/* Estimated latency percentile (q in [0,1]) of provider p in ms, by linear
 * interpolation inside the histogram bucket holding the q-th sample, clamped
 * to the smallest and largest latency seen. 0 when nothing was recorded. */
double ev_stats_latency_percentile(ev_stats_t *s, ev_provider_id_t p, double q);

/* Submissions whose processing pass ended in the last 60 seconds. */
int64_t ev_stats_per_minute(ev_stats_t *s);

/*
 * Builds the SPEC §7 document: uptime_s, version, workers{configured,busy},
 * queue{pending,processing,validated,rejected,needs_review,failed},
 * providers{gemini,groq}{breaker,error_rate,in_flight,max_concurrent,
 * rpm_limit,rpm_ceiling,tpm_limit,tpm_used,calls,successes,errors,rate_limited,retries,latency_ms{p50,p95,
 * p99},tokens_in,tokens_out, plus configured,disabled,quota_cooldown,models_unavailable,
 * outcomes{...}}, fallbacks, budget{limit,exhausted,calls_per_submission_avg},
 * submissions{processed,per_minute, plus by_status{...}}, checks{...}.
 * queue may be NULL when the counts are unknown: its six keys are then JSON
 * null. On success *out is a new object the caller releases with
 * json_object_put and 0 is returned; EV_ENOMEM (and *out NULL) if json-c ran
 * out of memory. Calls the probes; any thread.
 */
int ev_stats_snapshot_json(json_object **out, ev_stats_t *s, const ev_queue_counts_t *queue);

/* A growable text buffer (aborts on out-of-memory; its size is bounded by the
 * fixed number of metric families). Zero-initialise it; free with
 * ev_stats_buf_free. */
typedef struct ev_stats_buf {
    char *data; /* NUL-terminated once anything was appended */
    size_t len;
    size_t cap;
} ev_stats_buf_t;

void ev_stats_buf_printf(ev_stats_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ev_stats_buf_free(ev_stats_buf_t *b);

/*
 * Appends the same figures in the Prometheus text exposition format 0.0.4:
 * names prefixed event_validator_, counters ending in _total, a
 * `# HELP`/`# TYPE` pair before each family, provider="gemini"|"groq" labels,
 * and the latency histogram event_validator_provider_request_duration_seconds
 * with cumulative _bucket{le=...} lines ending with le="+Inf", _sum and
 * _count. queue may be NULL (the queue family then has no samples).
 * Returns 0. Calls the probes; any thread.
 */
int ev_stats_render_prometheus(ev_stats_t *s, const ev_queue_counts_t *queue, ev_stats_buf_t *buf);

#endif
