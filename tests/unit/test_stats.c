/*
 * test_stats.c - the stats module: exact counters under contention, latency
 * percentiles from known distributions, the per-minute window on a fake
 * clock, the SPEC §7 JSON document (every key, right types, as a client
 * parses it) and a well-formed Prometheus exposition.
 */
#include "ev/clock.h"
#include "ev/config.h"
#include "ev/error.h"
#include "ev/stats.h"

#include <CUnit/Basic.h>
#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

#define START_US INT64_C(1000000000)
#define WALL_US INT64_C(1700000000000000)

static ev_stats_t *new_stats(ev_fake_clock_t **fc_out)
{
    ev_fake_clock_t *fc = NULL;
    CU_ASSERT_FATAL(ev_fake_clock_new(&fc, START_US, WALL_US) == 0);
    ev_stats_options_t o = EV_STATS_OPTIONS_INIT;
    o.clock = ev_fake_clock_get(fc);
    o.workers_configured = 6;
    o.budget_limit = 5;
    ev_stats_t *s = NULL;
    CU_ASSERT_FATAL(ev_stats_new(&s, &o) == 0);
    *fc_out = fc;
    return s;
}

/* Serialises and re-parses the snapshot, so the test sees what a client
 * sees (JSON types included). Caller puts the result. */
static json_object *client_view(ev_stats_t *s, const ev_queue_counts_t *q)
{
    json_object *snap = NULL;
    CU_ASSERT_FATAL(ev_stats_snapshot_json(&snap, s, q) == 0);
    CU_ASSERT_FATAL(snap != NULL);
    json_object *parsed =
        json_tokener_parse(json_object_to_json_string_ext(snap, JSON_C_TO_STRING_PLAIN));
    json_object_put(snap);
    CU_ASSERT_FATAL(parsed != NULL);
    return parsed;
}

/* The member at a dotted path, or NULL (also NULL for a JSON null). */
static json_object *jget(json_object *root, const char *path)
{
    char part[64];
    json_object *cur = root;
    const char *p = path;
    while (*p) {
        size_t n = strcspn(p, ".");
        snprintf(part, sizeof(part), "%.*s", (int)n, p);
        json_object *next = NULL;
        if (!cur || !json_object_object_get_ex(cur, part, &next))
            return NULL;
        cur = next;
        p += n;
        if (*p == '.')
            p++;
    }
    return cur;
}

static bool jhas(json_object *root, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    char *dot = strrchr(buf, '.');
    json_object *parent = root;
    const char *leaf = buf;
    if (dot) {
        *dot = '\0';
        parent = jget(root, buf);
        leaf = dot + 1;
    }
    return parent && json_object_object_get_ex(parent, leaf, NULL);
}

static int64_t jint(json_object *root, const char *path)
{
    json_object *o = jget(root, path);
    CU_ASSERT(o != NULL && json_object_is_type(o, json_type_int));
    return o ? json_object_get_int64(o) : -1;
}

static double jdbl(json_object *root, const char *path)
{
    json_object *o = jget(root, path);
    CU_ASSERT(o != NULL && json_object_is_type(o, json_type_double));
    return o ? json_object_get_double(o) : NAN;
}

/* ------------------------------------------------------------------ */

#define THREADS 8
#define ITERS 20000

typedef struct hammer_arg {
    ev_stats_t *s;
    int id;
    int failures; /* CUnit is not thread-safe: asserted after the join */
} hammer_arg_t;

static void *hammer(void *p)
{
    hammer_arg_t *a = p;
    for (int i = 0; i < ITERS; i++) {
        ev_provider_id_t prov = (i & 1) ? EV_PROVIDER_GROQ : EV_PROVIDER_GEMINI;
        ev_stats_worker_busy_add(a->s, 1);
        ev_stats_provider_in_flight_add(a->s, prov, 1);
        ev_stats_record_call(a->s, prov, (ev_stats_outcome_t)(i % EV_STATS_OUTCOME_COUNT),
                             (i * 37 + a->id) % 130000, 3, 5);
        if (i % 4 == 0)
            ev_stats_record_retry(a->s, prov);
        if (i % 10 == 0)
            ev_stats_record_fallback(a->s, prov);
        ev_stats_provider_in_flight_add(a->s, prov, -1);
        ev_stats_record_submission(a->s, (ev_stats_status_t)(i % EV_STATS_STATUS_COUNT), 2);
        if (ev_stats_record_check(a->s, "pdf", "pass") != 0)
            a->failures++;
        ev_stats_worker_busy_add(a->s, -1);
    }
    return NULL;
}

/* Counts, over the same loop as hammer(), how many iterations of one
 * provider hit a condition. */
static int64_t expected(int provider_parity, int outcome, int mod)
{
    int64_t n = 0;
    for (int i = 0; i < ITERS; i++) {
        if ((i & 1) != provider_parity)
            continue;
        if (outcome >= 0 && i % EV_STATS_OUTCOME_COUNT != outcome)
            continue;
        if (mod > 0 && i % mod != 0)
            continue;
        n++;
    }
    return n * THREADS;
}

static void test_counters_under_contention(void)
{
    ev_fake_clock_t *fc;
    ev_stats_t *s = new_stats(&fc);
    pthread_t t[THREADS];
    hammer_arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (hammer_arg_t){s, i, 0};
        CU_ASSERT_FATAL(pthread_create(&t[i], NULL, hammer, &args[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(args[i].failures, 0);
    }

    json_object *j = client_view(s, NULL);
    const char *names[] = {"gemini", "groq"};
    int64_t all_calls = 0;
    for (int p = 0; p < 2; p++) {
        char path[128];
        int64_t calls = expected(p, -1, 0);
        all_calls += calls;
#define P(key) (snprintf(path, sizeof(path), "providers.%s.%s", names[p], key), path)
        CU_ASSERT_EQUAL(jint(j, P("calls")), calls);
        CU_ASSERT_EQUAL(jint(j, P("successes")), expected(p, EV_STATS_OUTCOME_OK, 0));
        CU_ASSERT_EQUAL(jint(j, P("errors")), calls - expected(p, EV_STATS_OUTCOME_OK, 0));
        CU_ASSERT_EQUAL(jint(j, P("rate_limited")), expected(p, EV_STATS_OUTCOME_RATE_LIMITED, 0));
        CU_ASSERT_EQUAL(jint(j, P("outcomes.timeout")), expected(p, EV_STATS_OUTCOME_TIMEOUT, 0));
        CU_ASSERT_EQUAL(jint(j, P("retries")), expected(p, -1, 4));
        CU_ASSERT_EQUAL(jint(j, P("fallbacks_from")), expected(p, -1, 10));
        CU_ASSERT_EQUAL(jint(j, P("tokens_in")), 3 * calls);
        CU_ASSERT_EQUAL(jint(j, P("tokens_out")), 5 * calls);
        CU_ASSERT_EQUAL(jint(j, P("in_flight")), 0);
#undef P
    }
    CU_ASSERT_EQUAL(all_calls, (int64_t)THREADS * ITERS);
    CU_ASSERT_EQUAL(jint(j, "fallbacks"), expected(0, -1, 10) + expected(1, -1, 10));
    CU_ASSERT_EQUAL(jint(j, "workers.busy"), 0);
    CU_ASSERT_EQUAL(jint(j, "submissions.processed"), (int64_t)THREADS * ITERS);
    CU_ASSERT_EQUAL(jint(j, "submissions.by_status.requeued"), (int64_t)THREADS * ITERS / 5);
    /* The fake clock never moved: every pass ended within the last minute. */
    CU_ASSERT_EQUAL(jint(j, "submissions.per_minute"), (int64_t)THREADS * ITERS);
    CU_ASSERT_EQUAL(ev_stats_per_minute(s), (int64_t)THREADS * ITERS);
    CU_ASSERT_EQUAL(jint(j, "checks.pdf.pass"), (int64_t)THREADS * ITERS);
    CU_ASSERT(fabs(jdbl(j, "budget.calls_per_submission_avg") - 2.0) < 1e-9);
    json_object_put(j);

    /* The histogram lost nothing either: its _count is every call. */
    ev_stats_buf_t b = {0};
    CU_ASSERT(ev_stats_render_prometheus(s, NULL, &b) == 0);
    char want[160];
    snprintf(want, sizeof(want),
             "event_validator_provider_request_duration_seconds_count{provider=\"gemini\"} %lld\n",
             (long long)expected(0, -1, 0));
    CU_ASSERT(b.data && strstr(b.data, want) != NULL);
    ev_stats_buf_free(&b);

    ev_stats_free(s);
    ev_fake_clock_free(fc);
}

static void test_percentiles(void)
{
    ev_fake_clock_t *fc;
    ev_stats_t *s = new_stats(&fc);

    /* Nothing recorded: zeros, not garbage. */
    CU_ASSERT_EQUAL(ev_stats_latency_percentile(s, EV_PROVIDER_GEMINI, 0.5), 0.0);

    /* Uniform 1..1000 ms: the estimates are the true percentiles. */
    for (int ms = 1; ms <= 1000; ms++)
        ev_stats_record_call(s, EV_PROVIDER_GEMINI, EV_STATS_OUTCOME_OK, ms, 0, 0);
    CU_ASSERT_DOUBLE_EQUAL(ev_stats_latency_percentile(s, EV_PROVIDER_GEMINI, 0.50), 500.0, 1.0);
    CU_ASSERT_DOUBLE_EQUAL(ev_stats_latency_percentile(s, EV_PROVIDER_GEMINI, 0.95), 950.0, 1.0);
    CU_ASSERT_DOUBLE_EQUAL(ev_stats_latency_percentile(s, EV_PROVIDER_GEMINI, 0.99), 990.0, 1.0);

    /* Every call took 1234 ms: every percentile says so exactly. */
    for (int i = 0; i < 50; i++)
        ev_stats_record_call(s, EV_PROVIDER_GROQ, EV_STATS_OUTCOME_OK, 1234, 0, 0);
    CU_ASSERT_DOUBLE_EQUAL(ev_stats_latency_percentile(s, EV_PROVIDER_GROQ, 0.50), 1234.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(ev_stats_latency_percentile(s, EV_PROVIDER_GROQ, 0.99), 1234.0, 1e-9);

    json_object *j = client_view(s, NULL);
    CU_ASSERT_DOUBLE_EQUAL(jdbl(j, "providers.gemini.latency_ms.p50"), 500.0, 1.0);
    CU_ASSERT_DOUBLE_EQUAL(jdbl(j, "providers.gemini.latency_ms.p95"), 950.0, 1.0);
    CU_ASSERT_DOUBLE_EQUAL(jdbl(j, "providers.gemini.latency_ms.p99"), 990.0, 1.0);
    CU_ASSERT_DOUBLE_EQUAL(jdbl(j, "providers.groq.latency_ms.p95"), 1234.0, 1e-9);
    json_object_put(j);
    ev_stats_free(s);
    ev_fake_clock_free(fc);

    /* Bimodal: 90% fast (200 ms), 10% slow (8 s). The median is among the
     * fast ones, p95 and p99 among the slow ones and never above the max. */
    s = new_stats(&fc);
    for (int i = 0; i < 900; i++)
        ev_stats_record_call(s, EV_PROVIDER_GEMINI, EV_STATS_OUTCOME_OK, 200, 0, 0);
    for (int i = 0; i < 100; i++)
        ev_stats_record_call(s, EV_PROVIDER_GEMINI, EV_STATS_OUTCOME_OK, 8000, 0, 0);
    double p50 = ev_stats_latency_percentile(s, EV_PROVIDER_GEMINI, 0.50);
    double p95 = ev_stats_latency_percentile(s, EV_PROVIDER_GEMINI, 0.95);
    double p99 = ev_stats_latency_percentile(s, EV_PROVIDER_GEMINI, 0.99);
    CU_ASSERT(p50 >= 200.0 && p50 <= 250.0);
    CU_ASSERT(p95 >= 7500.0 && p95 <= 8000.0);
    CU_ASSERT(p99 >= p95 && p99 <= 8000.0);

    /* Beyond the last finite bucket the estimate stays within what was seen. */
    ev_stats_record_call(s, EV_PROVIDER_GROQ, EV_STATS_OUTCOME_TIMEOUT, 200000, 0, 0);
    CU_ASSERT_DOUBLE_EQUAL(ev_stats_latency_percentile(s, EV_PROVIDER_GROQ, 0.99), 200000.0, 1e-9);
    /* A negative latency means "not measured": counted as a call, not timed. */
    ev_stats_record_call(s, EV_PROVIDER_GROQ, EV_STATS_OUTCOME_TRANSPORT, -1, 0, 0);
    CU_ASSERT_DOUBLE_EQUAL(ev_stats_latency_percentile(s, EV_PROVIDER_GROQ, 0.01), 200000.0, 1e-9);
    ev_stats_free(s);
    ev_fake_clock_free(fc);
}

static void test_per_minute_window(void)
{
    ev_fake_clock_t *fc;
    ev_stats_t *s = new_stats(&fc);

    for (int i = 0; i < 10; i++)
        ev_stats_record_submission(s, EV_STATS_STATUS_VALIDATED, 1);
    CU_ASSERT_EQUAL(ev_stats_per_minute(s), 10);

    ev_fake_clock_advance(fc, 30 * INT64_C(1000000));
    for (int i = 0; i < 5; i++)
        ev_stats_record_submission(s, EV_STATS_STATUS_REJECTED, 1);
    CU_ASSERT_EQUAL(ev_stats_per_minute(s), 15);

    /* 59.999 s after the first batch it still counts; at 60 s it is gone. */
    ev_fake_clock_advance(fc, 29 * INT64_C(1000000) + 999999);
    CU_ASSERT_EQUAL(ev_stats_per_minute(s), 15);
    ev_fake_clock_advance(fc, 1);
    CU_ASSERT_EQUAL(ev_stats_per_minute(s), 5);

    /* The second batch was recorded at 30 s: gone at 90 s. */
    ev_fake_clock_advance(fc, 30 * INT64_C(1000000));
    CU_ASSERT_EQUAL(ev_stats_per_minute(s), 0);

    /* A slot reused after exactly one lap starts from zero. */
    ev_stats_record_submission(s, EV_STATS_STATUS_VALIDATED, 1);
    ev_fake_clock_advance(fc, 60 * INT64_C(1000000));
    ev_stats_record_submission(s, EV_STATS_STATUS_VALIDATED, 1);
    ev_stats_record_submission(s, EV_STATS_STATUS_VALIDATED, 1);
    CU_ASSERT_EQUAL(ev_stats_per_minute(s), 2);

    /* Long idle: nothing from hours ago leaks back in. */
    ev_fake_clock_advance(fc, 3 * 3600 * INT64_C(1000000));
    CU_ASSERT_EQUAL(ev_stats_per_minute(s), 0);

    /* Uptime follows the same clock; processed keeps the lifetime total. */
    json_object *j = client_view(s, NULL);
    CU_ASSERT_EQUAL(jint(j, "uptime_s"), 30 + 30 + 30 + 60 + 3 * 3600);
    CU_ASSERT_EQUAL(jint(j, "submissions.processed"), 18);
    CU_ASSERT_EQUAL(jint(j, "submissions.per_minute"), 0);
    json_object_put(j);

    ev_stats_free(s);
    ev_fake_clock_free(fc);
}

/* ------------------------------------------------------------------ */

typedef struct key_spec {
    const char *path;
    json_type type;
} key_spec_t;

static const key_spec_t top_keys[] = {
    {"uptime_s", json_type_int},
    {"version", json_type_string},
    {"workers", json_type_object},
    {"workers.configured", json_type_int},
    {"workers.busy", json_type_int},
    {"queue", json_type_object},
    {"queue.pending", json_type_int},
    {"queue.processing", json_type_int},
    {"queue.validated", json_type_int},
    {"queue.rejected", json_type_int},
    {"queue.needs_review", json_type_int},
    {"queue.failed", json_type_int},
    {"providers", json_type_object},
    {"fallbacks", json_type_int},
    {"budget", json_type_object},
    {"budget.limit", json_type_int},
    {"budget.exhausted", json_type_int},
    {"budget.calls_per_submission_avg", json_type_double},
    {"submissions", json_type_object},
    {"submissions.processed", json_type_int},
    {"submissions.per_minute", json_type_int},
};

static const key_spec_t provider_keys[] = {
    {"breaker", json_type_string},        {"error_rate", json_type_double},
    {"in_flight", json_type_int},         {"max_concurrent", json_type_int},
    {"rpm_limit", json_type_double},      {"calls", json_type_int},
    {"successes", json_type_int},         {"errors", json_type_int},
    {"rate_limited", json_type_int},      {"retries", json_type_int},
    {"latency_ms", json_type_object},     {"latency_ms.p50", json_type_double},
    {"latency_ms.p95", json_type_double}, {"latency_ms.p99", json_type_double},
    {"tokens_in", json_type_int},         {"tokens_out", json_type_int},
};

static void check_spec_keys(json_object *j, bool queue_known)
{
    for (size_t i = 0; i < sizeof(top_keys) / sizeof(top_keys[0]); i++) {
        const key_spec_t *k = &top_keys[i];
        bool queue_leaf = strncmp(k->path, "queue.", 6) == 0;
        CU_ASSERT(jhas(j, k->path));
        json_object *o = jget(j, k->path);
        if (queue_leaf && !queue_known) {
            CU_ASSERT(o == NULL); /* present, JSON null: unknown */
            continue;
        }
        if (!o || !json_object_is_type(o, k->type))
            fprintf(stderr, "\n  key %s missing or of the wrong type\n", k->path);
        CU_ASSERT(o != NULL && json_object_is_type(o, k->type));
    }
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        for (size_t i = 0; i < sizeof(provider_keys) / sizeof(provider_keys[0]); i++) {
            char path[128];
            snprintf(path, sizeof(path), "providers.%s.%s", ev_provider_name((ev_provider_id_t)p),
                     provider_keys[i].path);
            json_object *o = jget(j, path);
            if (!o || !json_object_is_type(o, provider_keys[i].type))
                fprintf(stderr, "\n  key %s missing or of the wrong type\n", path);
            CU_ASSERT(o != NULL && json_object_is_type(o, provider_keys[i].type));
        }
    }
}

typedef struct probe_state {
    int calls;
} probe_state_t;

static void breaker_probe(ev_stats_probe_t *io, void *ctx)
{
    probe_state_t *ps = ctx;
    ps->calls++;
    io->breaker = "open";
    io->error_rate = 0.25;
    io->in_flight = 2;
    io->max_concurrent = 3;
    io->rpm_limit = 135.0;
}

static void test_json_document(void)
{
    ev_fake_clock_t *fc;
    ev_stats_t *s = new_stats(&fc);

    /* A fresh object already has every key with its type (all zeros). */
    ev_queue_counts_t q = {.pending = 7,
                           .processing = 2,
                           .validated = 40,
                           .rejected = 3,
                           .needs_review = 1,
                           .failed = 0};
    json_object *j = client_view(s, &q);
    check_spec_keys(j, true);
    CU_ASSERT_STRING_EQUAL(json_object_get_string(jget(j, "version")), EV_VERSION);
    CU_ASSERT_EQUAL(jint(j, "workers.configured"), 6);
    CU_ASSERT_EQUAL(jint(j, "budget.limit"), 5);
    CU_ASSERT_EQUAL(jint(j, "queue.pending"), 7);
    CU_ASSERT_EQUAL(jint(j, "queue.validated"), 40);
    CU_ASSERT_STRING_EQUAL(json_object_get_string(jget(j, "providers.gemini.breaker")), "closed");
    json_object_put(j);

    /* Unknown queue counts: the keys stay, as null. */
    j = client_view(s, NULL);
    check_spec_keys(j, false);
    json_object_put(j);

    /* Setters, events and a probe show up where an operator looks. */
    ev_stats_set_provider_configured(s, EV_PROVIDER_GEMINI, true);
    ev_stats_set_provider_limits(s, EV_PROVIDER_GEMINI, 2, 150 * 0.9);
    ev_stats_set_provider_limits(s, EV_PROVIDER_GROQ, 1, 20.0);
    ev_stats_set_provider_disabled(s, EV_PROVIDER_GROQ, true);
    ev_stats_set_provider_quota_cooldown(s, EV_PROVIDER_GEMINI, true);
    ev_stats_provider_in_flight_add(s, EV_PROVIDER_GROQ, 1);
    ev_stats_worker_busy_add(s, 4);
    ev_stats_record_call(s, EV_PROVIDER_GROQ, EV_STATS_OUTCOME_RATE_LIMITED, 300, 0, 0);
    ev_stats_record_call(s, EV_PROVIDER_GROQ, EV_STATS_OUTCOME_OK, 700, 120, 30);
    ev_stats_record_call(s, EV_PROVIDER_GROQ, EV_STATS_OUTCOME_OK, 500, 100, 20);
    ev_stats_record_call(s, EV_PROVIDER_GROQ, EV_STATS_OUTCOME_SERVER_ERROR, 900, 0, 0);
    ev_stats_record_budget_exhausted(s);
    ev_stats_record_submission(s, EV_STATS_STATUS_VALIDATED, 3);
    ev_stats_record_submission(s, EV_STATS_STATUS_NEEDS_REVIEW, 5);
    ev_stats_record_submission(s, EV_STATS_STATUS_REJECTED, 0);
    CU_ASSERT_EQUAL(ev_stats_record_check(s, "theme", "fail"), 0);
    CU_ASSERT_EQUAL(ev_stats_record_check(s, "video", "pass"), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_stats_record_check(s, "pdf", "maybe"), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_stats_record_check(s, NULL, "pass"), EV_EINVAL);
    ev_fake_clock_advance(fc, 42 * INT64_C(1000000));

    j = client_view(s, &q);
    check_spec_keys(j, true);
    CU_ASSERT_EQUAL(jint(j, "uptime_s"), 42);
    CU_ASSERT_EQUAL(jint(j, "workers.busy"), 4);
    CU_ASSERT_EQUAL(jint(j, "providers.gemini.max_concurrent"), 2);
    CU_ASSERT_DOUBLE_EQUAL(jdbl(j, "providers.gemini.rpm_limit"), 135.0, 1e-9);
    CU_ASSERT(json_object_get_boolean(jget(j, "providers.gemini.configured")));
    CU_ASSERT(json_object_get_boolean(jget(j, "providers.gemini.quota_cooldown")));
    CU_ASSERT(!json_object_get_boolean(jget(j, "providers.gemini.disabled")));
    CU_ASSERT(json_object_get_boolean(jget(j, "providers.groq.disabled")));
    CU_ASSERT_EQUAL(jint(j, "providers.groq.in_flight"), 1);
    CU_ASSERT_EQUAL(jint(j, "providers.groq.calls"), 4);
    CU_ASSERT_EQUAL(jint(j, "providers.groq.successes"), 2);
    CU_ASSERT_EQUAL(jint(j, "providers.groq.errors"), 2);
    CU_ASSERT_EQUAL(jint(j, "providers.groq.rate_limited"), 1);
    CU_ASSERT_EQUAL(jint(j, "providers.groq.tokens_in"), 220);
    CU_ASSERT_EQUAL(jint(j, "providers.groq.tokens_out"), 50);
    /* Without a probe the error rate is the lifetime one. */
    CU_ASSERT_DOUBLE_EQUAL(jdbl(j, "providers.groq.error_rate"), 0.5, 1e-9);
    CU_ASSERT_EQUAL(jint(j, "budget.exhausted"), 1);
    CU_ASSERT_DOUBLE_EQUAL(jdbl(j, "budget.calls_per_submission_avg"), 8.0 / 3.0, 1e-3);
    CU_ASSERT_EQUAL(jint(j, "submissions.processed"), 3);
    CU_ASSERT_EQUAL(jint(j, "submissions.per_minute"), 3);
    CU_ASSERT_EQUAL(jint(j, "checks.theme.fail"), 1);
    CU_ASSERT_EQUAL(jint(j, "checks.pdf.pass"), 0);
    json_object_put(j);

    /* The probe's live values override the stored ones, and go away with it. */
    probe_state_t ps = {0};
    ev_stats_set_provider_probe(s, EV_PROVIDER_GEMINI, breaker_probe, &ps);
    j = client_view(s, &q);
    CU_ASSERT(ps.calls == 1);
    CU_ASSERT_STRING_EQUAL(json_object_get_string(jget(j, "providers.gemini.breaker")), "open");
    CU_ASSERT_DOUBLE_EQUAL(jdbl(j, "providers.gemini.error_rate"), 0.25, 1e-9);
    CU_ASSERT_EQUAL(jint(j, "providers.gemini.in_flight"), 2);
    CU_ASSERT_EQUAL(jint(j, "providers.gemini.max_concurrent"), 3);
    CU_ASSERT_DOUBLE_EQUAL(jdbl(j, "providers.gemini.rpm_limit"), 135.0, 1e-9);
    CU_ASSERT_STRING_EQUAL(json_object_get_string(jget(j, "providers.groq.breaker")), "closed");
    json_object_put(j);
    ev_stats_set_provider_probe(s, EV_PROVIDER_GEMINI, NULL, NULL);
    j = client_view(s, &q);
    CU_ASSERT(ps.calls == 1);
    CU_ASSERT_STRING_EQUAL(json_object_get_string(jget(j, "providers.gemini.breaker")), "closed");
    CU_ASSERT_EQUAL(jint(j, "providers.gemini.max_concurrent"), 2);
    json_object_put(j);

    ev_stats_free(s);
    ev_fake_clock_free(fc);
}

/* ------------------------------------------------------------------ */
/* A small validator for the text exposition format 0.0.4. */

#define MAX_FAMILIES 128
#define MAX_SERIES 64

typedef struct series {
    char labels[256]; /* label set without le */
    double last_bucket;
    double last_le;
    bool saw_inf;
    double inf_value;
    bool saw_count;
    double count;
    bool saw_sum;
} series_t;

typedef struct fam {
    char name[128];
    char type[16];
    bool help, typed;
    int samples;
    series_t series[MAX_SERIES];
    int nseries;
} fam_t;

typedef struct expo {
    fam_t fams[MAX_FAMILIES];
    int n;
    int current; /* family whose samples may follow, -1 before any */
    int errors;
} expo_t;

/* Set while feeding the validator deliberately broken input. */
static bool expo_quiet;

static void expo_error(expo_t *e, const char *line, const char *why)
{
    e->errors++;
    if (!expo_quiet)
        fprintf(stderr, "\n  exposition: %s: '%s'\n", why, line);
}

static fam_t *fam_find(expo_t *e, const char *name)
{
    for (int i = 0; i < e->n; i++)
        if (strcmp(e->fams[i].name, name) == 0)
            return &e->fams[i];
    return NULL;
}

static bool valid_name(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Parses `{a="x",b="y"}` starting at *p; copies the labels other than le
 * into rest and le's value into le. Returns false when malformed. */
static bool parse_labels(const char **p, char *rest, size_t restlen, char *le, size_t lelen)
{
    const char *s = *p;
    rest[0] = le[0] = '\0';
    if (*s != '{')
        return true;
    s++;
    size_t rl = 0;
    while (*s != '}') {
        const char *name = s;
        while (*s && *s != '=')
            s++;
        if (*s != '=' || !valid_name(name, (size_t)(s - name)) || s[1] != '"')
            return false;
        size_t nlen = (size_t)(s - name);
        s += 2;
        char val[128];
        size_t vl = 0;
        while (*s && *s != '"') {
            if (*s == '\\') {
                if (s[1] != '\\' && s[1] != '"' && s[1] != 'n')
                    return false;
                s++;
            }
            if (vl + 1 < sizeof(val))
                val[vl++] = *s;
            s++;
        }
        if (*s != '"')
            return false;
        val[vl] = '\0';
        s++;
        if (nlen == 2 && strncmp(name, "le", 2) == 0)
            snprintf(le, lelen, "%s", val);
        else
            rl += (size_t)snprintf(rest + rl, rl < restlen ? restlen - rl : 0, "%.*s=%s,",
                                   (int)nlen, name, val);
        if (*s == ',')
            s++;
        else if (*s != '}')
            return false;
    }
    *p = s + 1;
    return true;
}

static bool parse_value(const char *s, double *out)
{
    if (strcmp(s, "+Inf") == 0) {
        *out = INFINITY;
        return true;
    }
    if (strcmp(s, "-Inf") == 0) {
        *out = -INFINITY;
        return true;
    }
    if (strcmp(s, "NaN") == 0) {
        *out = NAN;
        return true;
    }
    char *end = NULL;
    *out = strtod(s, &end);
    return end != s && *end == '\0';
}

static series_t *series_get(fam_t *f, const char *labels)
{
    for (int i = 0; i < f->nseries; i++)
        if (strcmp(f->series[i].labels, labels) == 0)
            return &f->series[i];
    if (f->nseries == MAX_SERIES)
        return NULL;
    series_t *s = &f->series[f->nseries++];
    memset(s, 0, sizeof(*s));
    snprintf(s->labels, sizeof(s->labels), "%s", labels);
    s->last_le = -INFINITY;
    return s;
}

static void expo_line(expo_t *e, char *line)
{
    if (strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0) {
        bool help = line[2] == 'H';
        char *name = line + 7;
        char *sp = strchr(name, ' ');
        if (!sp || !valid_name(name, (size_t)(sp - name))) {
            expo_error(e, line, "bad metadata line");
            return;
        }
        *sp = '\0';
        fam_t *f = fam_find(e, name);
        if (!f) {
            if (e->n == MAX_FAMILIES) {
                expo_error(e, name, "too many families");
                return;
            }
            f = &e->fams[e->n++];
            memset(f, 0, sizeof(*f));
            snprintf(f->name, sizeof(f->name), "%s", name);
        } else if (f->samples > 0) {
            expo_error(e, name, "metadata after the family's samples");
        }
        if (help) {
            if (f->help)
                expo_error(e, name, "HELP twice");
            f->help = true;
        } else {
            const char *t = sp + 1;
            if (f->typed)
                expo_error(e, name, "TYPE twice");
            if (strcmp(t, "counter") && strcmp(t, "gauge") && strcmp(t, "histogram") &&
                strcmp(t, "summary") && strcmp(t, "untyped"))
                expo_error(e, t, "unknown TYPE");
            snprintf(f->type, sizeof(f->type), "%s", t);
            f->typed = true;
        }
        e->current = (int)(f - e->fams);
        return;
    }
    if (line[0] == '#' || line[0] == '\0') {
        expo_error(e, line, "unexpected comment or blank line");
        return;
    }

    /* A sample: name{labels} value */
    const char *p = line;
    while (*p && *p != '{' && *p != ' ')
        p++;
    char name[128];
    snprintf(name, sizeof(name), "%.*s", (int)(p - line), line);
    if (!valid_name(name, strlen(name))) {
        expo_error(e, line, "bad metric name");
        return;
    }
    char labels[256], le[128];
    if (!parse_labels(&p, labels, sizeof(labels), le, sizeof(le)) || *p != ' ') {
        expo_error(e, line, "bad labels");
        return;
    }
    double value;
    if (!parse_value(p + 1, &value)) {
        expo_error(e, line, "bad value");
        return;
    }
    /* The standard process_* families keep the names every client library uses. */
    if (strncmp(name, "event_validator_", 16) != 0 && strncmp(name, "process_", 8) != 0)
        expo_error(e, line, "name without the event_validator_ prefix");

    /* Which family does it belong to? */
    fam_t *f = fam_find(e, name);
    const char *suffix = NULL;
    if (!f) {
        const char *sfx[] = {"_bucket", "_sum", "_count"};
        for (size_t i = 0; i < 3 && !f; i++) {
            if (!ends_with(name, sfx[i]))
                continue;
            char base[128];
            snprintf(base, sizeof(base), "%.*s", (int)(strlen(name) - strlen(sfx[i])), name);
            f = fam_find(e, base);
            if (f && strcmp(f->type, "histogram") == 0)
                suffix = sfx[i];
            else
                f = NULL;
        }
    }
    if (!f || !f->help || !f->typed) {
        expo_error(e, line, "sample of a family without HELP and TYPE");
        return;
    }
    if ((int)(f - e->fams) != e->current) {
        expo_error(e, line, "sample not grouped with its family");
        return;
    }
    f->samples++;
    if (strcmp(f->type, "counter") == 0 && !ends_with(f->name, "_total"))
        expo_error(e, f->name, "counter not named _total");
    if (strcmp(f->type, "counter") != 0 && ends_with(f->name, "_total"))
        expo_error(e, f->name, "non-counter named _total");
    if (strcmp(f->type, "histogram") == 0) {
        if (!suffix) {
            expo_error(e, line, "histogram sample without _bucket/_sum/_count");
            return;
        }
        series_t *s = series_get(f, labels);
        if (!s) {
            expo_error(e, line, "too many series");
            return;
        }
        if (strcmp(suffix, "_bucket") == 0) {
            double lev;
            if (!le[0] || !parse_value(le, &lev)) {
                expo_error(e, line, "bucket without a valid le");
                return;
            }
            if (s->saw_inf || lev <= s->last_le)
                expo_error(e, line, "buckets out of order");
            if (value < s->last_bucket)
                expo_error(e, line, "buckets not cumulative");
            s->last_le = lev;
            s->last_bucket = value;
            if (isinf(lev)) {
                s->saw_inf = true;
                s->inf_value = value;
            }
        } else if (strcmp(suffix, "_count") == 0) {
            s->saw_count = true;
            s->count = value;
        } else {
            s->saw_sum = true;
        }
    } else if (le[0]) {
        expo_error(e, line, "le label outside a histogram");
    }
}

/* Validates a whole exposition; returns the number of problems found. */
static int expo_check(const char *text, expo_t *e)
{
    memset(e, 0, sizeof(*e));
    e->current = -1;
    size_t len = strlen(text);
    if (len == 0 || text[len - 1] != '\n') {
        expo_error(e, "", "exposition does not end with a newline");
        return e->errors;
    }
    char *copy = strdup(text);
    CU_ASSERT_FATAL(copy != NULL);
    for (char *line = copy, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        *nl = '\0';
        expo_line(e, line);
    }
    free(copy);
    for (int i = 0; i < e->n; i++) {
        fam_t *f = &e->fams[i];
        if (!f->help || !f->typed)
            expo_error(e, f->name, "family missing HELP or TYPE");
        if (strcmp(f->type, "histogram") != 0)
            continue;
        for (int k = 0; k < f->nseries; k++) {
            series_t *s = &f->series[k];
            if (!s->saw_inf)
                expo_error(e, s->labels, "histogram series without le=\"+Inf\"");
            if (!s->saw_count || !s->saw_sum)
                expo_error(e, s->labels, "histogram series without _count or _sum");
            if (s->saw_inf && s->saw_count && s->inf_value != s->count)
                expo_error(e, s->labels, "+Inf bucket differs from _count");
        }
    }
    return e->errors;
}

/* The value of one exact series (name plus label text as rendered). */
static double sample_value(const char *text, const char *series)
{
    char needle[256];
    snprintf(needle, sizeof(needle), "\n%s ", series);
    const char *p = strstr(text, needle);
    if (!p)
        return NAN;
    return strtod(p + strlen(needle), NULL);
}

static void test_prometheus_well_formed(void)
{
    ev_fake_clock_t *fc;
    ev_stats_t *s = new_stats(&fc);
    static expo_t e; /* large: keep it off the stack */

    /* An empty object and a busy one both render correctly. */
    ev_stats_buf_t b = {0};
    CU_ASSERT(ev_stats_render_prometheus(s, NULL, &b) == 0);
    CU_ASSERT_EQUAL(expo_check(b.data, &e), 0);
    ev_stats_buf_free(&b);

    probe_state_t ps = {0};
    ev_stats_set_provider_probe(s, EV_PROVIDER_GEMINI, breaker_probe, &ps);
    ev_stats_set_provider_limits(s, EV_PROVIDER_GROQ, 1, 20.0);
    for (int ms = 10; ms <= 200000; ms = ms * 3 / 2)
        ev_stats_record_call(s, EV_PROVIDER_GEMINI, EV_STATS_OUTCOME_OK, ms, 10, 2);
    ev_stats_record_call(s, EV_PROVIDER_GROQ, EV_STATS_OUTCOME_RATE_LIMITED, 250, 0, 0);
    ev_stats_record_call(s, EV_PROVIDER_GROQ, EV_STATS_OUTCOME_OK, 1500, 0, 0);
    ev_stats_record_retry(s, EV_PROVIDER_GROQ);
    ev_stats_record_fallback(s, EV_PROVIDER_GEMINI);
    ev_stats_record_submission(s, EV_STATS_STATUS_VALIDATED, 4);
    ev_stats_record_check(s, "image", "skipped");
    ev_fake_clock_advance(fc, 5 * INT64_C(1000000));

    ev_queue_counts_t q = {.pending = 12,
                           .processing = 3,
                           .validated = 1,
                           .rejected = 0,
                           .needs_review = 0,
                           .failed = 2};
    CU_ASSERT(ev_stats_render_prometheus(s, &q, &b) == 0);
    CU_ASSERT_FATAL(b.data != NULL);
    CU_ASSERT_EQUAL(expo_check(b.data, &e), 0);

    /* Every family is prefixed and documented; the histogram is there. */
    fam_t *h = fam_find(&e, "event_validator_provider_request_duration_seconds");
    CU_ASSERT(h != NULL && strcmp(h->type, "histogram") == 0 && h->nseries == EV_PROVIDER_COUNT);
    CU_ASSERT(fam_find(&e, "event_validator_provider_calls_total") != NULL);
    /* What operators' stock dashboards expect. */
    CU_ASSERT(fam_find(&e, "process_cpu_seconds_total") != NULL);
    CU_ASSERT(fam_find(&e, "process_resident_memory_bytes") != NULL);
    CU_ASSERT(fam_find(&e, "process_open_fds") != NULL);
    CU_ASSERT(sample_value(b.data, "process_start_time_seconds") > 1e9);
    h = fam_find(&e, "event_validator_submission_duration_seconds");
    CU_ASSERT(h != NULL && strcmp(h->type, "histogram") == 0);
    h = fam_find(&e, "event_validator_provider_limiter_wait_seconds");
    CU_ASSERT(h != NULL && strcmp(h->type, "histogram") == 0 && h->nseries == EV_PROVIDER_COUNT);
    CU_ASSERT(fam_find(&e, "event_validator_provider_error_ratio") != NULL);
    CU_ASSERT(strstr(b.data, "event_validator_build_info{version=\"") != NULL &&
              strstr(b.data, ",revision=\"") != NULL);
    CU_ASSERT(fam_find(&e, "event_validator_queue_oldest_pending_age_seconds") != NULL);

    CU_ASSERT_EQUAL(sample_value(b.data, "event_validator_queue_submissions{status=\"pending\"}"),
                    12);
    CU_ASSERT_EQUAL(sample_value(b.data, "event_validator_provider_calls_total{provider=\"groq\"}"),
                    2);
    CU_ASSERT_EQUAL(
        sample_value(b.data, "event_validator_provider_rate_limited_total{provider=\"groq\"}"), 1);
    CU_ASSERT_EQUAL(
        sample_value(b.data, "event_validator_provider_retries_total{provider=\"groq\"}"), 1);
    CU_ASSERT_EQUAL(sample_value(b.data, "event_validator_fallbacks_total"), 1);
    CU_ASSERT_EQUAL(sample_value(b.data, "event_validator_uptime_seconds"), 5);
    CU_ASSERT_EQUAL(sample_value(b.data, "event_validator_provider_rpm_limit{provider=\"gemini\"}"),
                    135);
    CU_ASSERT_EQUAL(sample_value(b.data, "event_validator_provider_rpm_limit{provider=\"groq\"}"),
                    20);
    CU_ASSERT_EQUAL(
        sample_value(b.data,
                     "event_validator_provider_breaker_state{provider=\"gemini\",state=\"open\"}"),
        1);
    CU_ASSERT_EQUAL(
        sample_value(
            b.data, "event_validator_provider_breaker_state{provider=\"gemini\",state=\"closed\"}"),
        0);
    CU_ASSERT_EQUAL(
        sample_value(b.data,
                     "event_validator_provider_request_duration_seconds_count{provider=\"groq\"}"),
        2);
    CU_ASSERT_DOUBLE_EQUAL(
        sample_value(b.data,
                     "event_validator_provider_request_duration_seconds_sum{provider=\"groq\"}"),
        1.75, 1e-9);
    CU_ASSERT_EQUAL(sample_value(b.data, "event_validator_provider_request_duration_seconds_bucket{"
                                         "provider=\"groq\",le=\"0.25\"}"),
                    1);
    CU_ASSERT_EQUAL(
        sample_value(
            b.data,
            "event_validator_provider_request_duration_seconds_bucket{provider=\"groq\",le=\"1\"}"),
        1);
    CU_ASSERT_EQUAL(
        sample_value(
            b.data,
            "event_validator_provider_request_duration_seconds_bucket{provider=\"groq\",le=\"2\"}"),
        2);
    CU_ASSERT_EQUAL(
        sample_value(b.data, "event_validator_submissions_processed_total{status=\"validated\"}"),
        1);
    CU_ASSERT_EQUAL(
        sample_value(b.data, "event_validator_checks_total{check=\"image\",verdict=\"skipped\"}"),
        1);
    ev_stats_buf_free(&b);

    /* The validator itself catches the mistakes it is there for. */
    expo_quiet = true;
    CU_ASSERT(expo_check("event_validator_x 1\n", &e) > 0);
    CU_ASSERT(expo_check("# HELP event_validator_h h\n# TYPE event_validator_h histogram\n"
                         "event_validator_h_bucket{le=\"1\"} 2\n"
                         "event_validator_h_bucket{le=\"+Inf\"} 1\n"
                         "event_validator_h_sum 1\nevent_validator_h_count 1\n",
                         &e) > 0);
    CU_ASSERT(expo_check("# HELP event_validator_c c\n# TYPE event_validator_c counter\n"
                         "event_validator_c 1\n",
                         &e) > 0);
    expo_quiet = false;

    ev_stats_set_provider_probe(s, EV_PROVIDER_GEMINI, NULL, NULL);
    ev_stats_free(s);
    ev_fake_clock_free(fc);
}

static void test_names(void)
{
    CU_ASSERT_STRING_EQUAL(ev_stats_outcome_name(EV_STATS_OUTCOME_RATE_LIMITED), "rate_limited");
    CU_ASSERT_STRING_EQUAL(ev_stats_outcome_name(EV_STATS_OUTCOME_COUNT), "unknown");
    CU_ASSERT_STRING_EQUAL(ev_stats_status_name(EV_STATS_STATUS_NEEDS_REVIEW), "needs_review");
    CU_ASSERT_STRING_EQUAL(ev_stats_status_name((ev_stats_status_t)-1), "unknown");
    size_t n = 0;
    const int64_t *bounds = ev_stats_latency_bounds_ms(&n);
    CU_ASSERT(n > 5);
    for (size_t i = 1; i < n; i++)
        CU_ASSERT(bounds[i] > bounds[i - 1]);
    ev_stats_free(NULL);
}

static const ev_test_t stats_tests[] = {
    {"counters sum exactly under contention", test_counters_under_contention},
    {"latency percentiles from known distributions", test_percentiles},
    {"per_minute over the last 60 s (fake clock)", test_per_minute_window},
    {"JSON has every SPEC §7 key with its type", test_json_document},
    {"Prometheus exposition is well formed", test_prometheus_well_formed},
    {"names and bounds", test_names},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"stats", NULL, NULL, stats_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
