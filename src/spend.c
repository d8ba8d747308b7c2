/*
 * spend.c - prices, per-call costs, cluster-wide spend totals and the
 * limits that hold calls; see spend.h.
 *
 * How: ev_spend_record adds a call to an in-memory delta keyed by (provider,
 * model, event). The spend thread, every refresh interval, swaps the deltas
 * out, upserts them into spend_daily in one transaction, and reads back the
 * per-provider totals, the events' totals and budgets and the daily limit
 * set with `spend limit`. Until the totals that include a flushed delta are
 * read, that delta still counts as "in transit", so the figures the limits
 * compare never dip. A flush that fails keeps its deltas for the next round
 * (money is never forgotten because the database blinked).
 *
 * Threads: workers call record/allow, stats-server threads read, the spend
 * thread (ev_thread_create, "ev-spend") flushes and refreshes. `lock` guards
 * every mutable field below it in struct ev_spend and is a leaf: libpq and
 * the logger are only called with it released. Logging happens here because
 * this is where a limit's state is decided (once per change).
 */
#include "ev/spend.h"

#include "ev/cluster_state.h"
#include "ev/console.h"
#include "ev/db.h"
#include "ev/error.h"
#include "ev/log.h"
#include "ev/threads.h"
#include "ev/util.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Prices ---------------------------------------------------------- */

/* USD per million tokens, standard (paid, non-batch) tier, text input,
 * prompts up to 200k tokens; read on 2026-12-02 (the README names the pages).
 * The default models come first. qwen/qwen3.8-27b had no Groq price we could
 * find: it is given qwen/qwen3.6-27b's, so that spend limits still count it
 * (MODEL_PRICES corrects it). -1: no cached-input discount published. */
static const ev_price_row_t builtin[] = {
    {"gemini", "gemini-3.5-flash-lite", {0.30, 2.50, 0.03}},
    {"gemini", "gemini-3.5-flash", {1.50, 9.00, 0.15}},
    {"groq", "openai/gpt-oss-120b", {0.15, 0.60, 0.075}},
    {"groq", "openai/gpt-oss-20b", {0.075, 0.30, 0.0375}},
    {"groq", "qwen/qwen3.8-27b", {0.60, 3.00, -1}},
    {"groq", "qwen/qwen3.6-27b", {0.60, 3.00, -1}},
    {"gemini", "gemini-3.1-flash-lite", {0.25, 1.50, 0.025}},
    {"gemini", "gemini-3-flash", {0.50, 3.00, 0.05}},
    {"gemini", "gemini-2.5-flash", {0.30, 2.50, 0.03}},
    {"gemini", "gemini-2.5-flash-lite", {0.10, 0.40, 0.01}},
    {"gemini", "gemini-2.5-pro", {1.25, 10.00, 0.125}},
    {"groq", "meta-llama/llama-4-scout-17b-16e-instruct", {0.11, 0.34, -1}},
    {"groq", "llama-3.3-70b-versatile", {0.59, 0.79, -1}},
    {"groq", "llama-3.1-8b-instant", {0.05, 0.08, -1}},
};

const ev_price_row_t *ev_price_table(size_t *n)
{
    *n = EV_ARRAY_LEN(builtin);
    return builtin;
}

/* One non-negative decimal ending at one of `ends`; advances *p past it. */
static bool parse_price(const char **p, const char *ends, double *out)
{
    char *end = NULL;
    double v = strtod(*p, &end);
    if (end == *p || !isfinite(v) || v < 0 || v > 1e6 || (*end && !strchr(ends, *end)))
        return false;
    *out = v;
    *p = end;
    return true;
}

/* Parses one "model=IN/OUT[/CACHED]" entry starting at *p (ending at ',' or
 * NUL); the model name is [*p, eq). Advances *p past the entry. */
static bool parse_entry(const char **p, const char **model, size_t *model_len, ev_price_t *out)
{
    const char *s = *p, *eq = strchr(s, '=');
    const char *comma = strchr(s, ',');
    if (!eq || (comma && comma < eq) || eq == s)
        return false;
    *model = s;
    *model_len = (size_t)(eq - s);
    s = eq + 1;
    out->cached_input = -1;
    if (!parse_price(&s, "/", &out->input) || *s++ != '/' || !parse_price(&s, "/,", &out->output))
        return false;
    if (*s == '/') {
        s++;
        if (!parse_price(&s, ",", &out->cached_input))
            return false;
    }
    *p = *s == ',' ? s + 1 : s;
    return true;
}

int ev_price_check_overrides(const char *spec, char *err, size_t errlen)
{
    const char *p = spec;
    while (p && *p) {
        const char *start = p, *model;
        size_t len;
        ev_price_t pr;
        if (!parse_entry(&p, &model, &len, &pr)) {
            const char *comma = strchr(start, ',');
            int n = comma ? (int)(comma - start) : (int)strlen(start);
            ev_set_error(err, errlen,
                         "MODEL_PRICES: bad entry '%.*s' (expected model=INPUT/OUTPUT[/CACHED], "
                         "USD per million tokens, each 0 to 1000000)",
                         n, start);
            return EV_EINVAL;
        }
    }
    return 0;
}

bool ev_price_lookup(const char *overrides, const char *model, ev_price_t *out)
{
    const char *p = overrides;
    memset(out, 0, sizeof(*out));
    if (!model)
        return false;
    while (p && *p) {
        const char *m;
        size_t len;
        ev_price_t pr;
        if (!parse_entry(&p, &m, &len, &pr))
            break;
        if (strlen(model) == len && strncmp(model, m, len) == 0) {
            *out = pr;
            return true;
        }
    }
    for (size_t i = 0; i < EV_ARRAY_LEN(builtin); i++)
        if (strcmp(builtin[i].model, model) == 0) {
            *out = builtin[i].price;
            return true;
        }
    return false;
}

double ev_price_cost(const ev_price_t *p, int64_t tokens_in, int64_t cached_in, int64_t tokens_out)
{
    cached_in = EV_MAX((int64_t)0, EV_MIN(cached_in, tokens_in));
    double cached_rate = p->cached_input >= 0 ? p->cached_input : p->input;
    return ((double)(tokens_in - cached_in) * p->input + (double)cached_in * cached_rate +
            (double)tokens_out * p->output) /
           1e6;
}

/* ---- Accounting ------------------------------------------------------ */

#define MAX_EVENTS 200
#define MIN_ROUND_MS 50
#define MODEL_MAX 128

typedef struct delta {
    int provider;
    char model[MODEL_MAX];
    int64_t event_id;
    int64_t calls, tokens_in, tokens_out;
    double usd;
} delta_t;

typedef struct event_row {
    int64_t id;
    char name[64];
    double budget; /* < 0: none */
    double total_usd, today_usd;
} event_row_t;

typedef struct totals {
    double today[EV_PROVIDER_COUNT], total[EV_PROVIDER_COUNT];
    int64_t calls[EV_PROVIDER_COUNT], tokens_in[EV_PROVIDER_COUNT], tokens_out[EV_PROVIDER_COUNT];
    double limit_override; /* < 0: none set */
    /* Operator holds read from the shared provider state: 1 paused by an
     * operator, 2 by the emergency stop, 0 none. */
    int hold[EV_PROVIDER_COUNT];
    char day[16];
    event_row_t events[MAX_EVENTS];
    int nevents;
} totals_t;

struct ev_spend {
    /* Immutable after start. */
    char *conninfo;
    char *overrides;
    double config_limit;
    int refresh_ms;
    ev_stats_t *stats;
    ev_thread_t thread;
    ev_db_t *db;             /* the spend thread's own, or the caller's during sync */
    pthread_mutex_t db_lock; /* serialises flush+refresh between thread and sync */

    _Atomic int64_t unpriced[EV_PROVIDER_COUNT];
    _Atomic int64_t refresh_failures;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* Guarded by lock. */
    bool stopping;
    delta_t *pending; /* not yet sent to the database */
    size_t npending, cap;
    delta_t *transit; /* sent, not yet part of `t` */
    size_t ntransit;
    totals_t t;
    bool capped[EV_PROVIDER_COUNT];
    int logged_hold[EV_PROVIDER_COUNT];
};

static double limit_locked(const ev_spend_t *s)
{
    return s->t.limit_override >= 0 ? s->t.limit_override : s->config_limit;
}

/* Sum of deltas matching provider p (p < 0: any) and event (0: any). */
static double delta_sum(const delta_t *d, size_t n, int p, int64_t event)
{
    double usd = 0;
    for (size_t i = 0; i < n; i++)
        if ((p < 0 || d[i].provider == p) && (event == 0 || d[i].event_id == event))
            usd += d[i].usd;
    return usd;
}

static double provider_today_locked(const ev_spend_t *s, int p)
{
    return s->t.today[p] + delta_sum(s->pending, s->npending, p, 0) +
           delta_sum(s->transit, s->ntransit, p, 0);
}

int ev_spend_allow_provider(ev_spend_t *s, ev_provider_id_t p)
{
    if (!s || p < 0 || p >= EV_PROVIDER_COUNT)
        return 0;
    pthread_mutex_lock(&s->lock);
    double limit = limit_locked(s);
    bool held = s->t.hold[p] != 0 || (limit > 0 && provider_today_locked(s, p) >= limit);
    pthread_mutex_unlock(&s->lock);
    return held ? EV_EHELD : 0;
}

int ev_spend_allow_event(ev_spend_t *s, int64_t event_id)
{
    int rc = 0;
    if (!s || event_id <= 0)
        return 0;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->t.nevents; i++) {
        const event_row_t *e = &s->t.events[i];
        if (e->id != event_id || e->budget < 0)
            continue;
        double spent = e->total_usd + delta_sum(s->pending, s->npending, -1, event_id) +
                       delta_sum(s->transit, s->ntransit, -1, event_id);
        if (spent >= e->budget)
            rc = EV_EHELD;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

double ev_spend_record(ev_spend_t *s, ev_provider_id_t p, const char *model, int64_t event_id,
                       int64_t tokens_in, int64_t cached_in, int64_t tokens_out)
{
    ev_price_t price;
    if (!s || p < 0 || p >= EV_PROVIDER_COUNT)
        return 0;
    if (!ev_price_lookup(s->overrides, model, &price))
        atomic_fetch_add_explicit(&s->unpriced[p], 1, memory_order_relaxed);
    double usd = ev_price_cost(&price, tokens_in, cached_in, tokens_out);
    pthread_mutex_lock(&s->lock);
    delta_t *d = NULL;
    for (size_t i = 0; i < s->npending && !d; i++)
        if (s->pending[i].provider == (int)p && s->pending[i].event_id == event_id &&
            strcmp(s->pending[i].model, model ? model : "") == 0)
            d = &s->pending[i];
    if (!d) {
        if (s->npending == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 16;
            s->pending = ev_realloc(s->pending, s->cap * sizeof(*s->pending));
        }
        d = &s->pending[s->npending++];
        memset(d, 0, sizeof(*d));
        d->provider = (int)p;
        d->event_id = event_id;
        snprintf(d->model, sizeof(d->model), "%s", model ? model : "");
    }
    d->calls++;
    d->tokens_in += tokens_in;
    d->tokens_out += tokens_out;
    d->usd += usd;
    pthread_mutex_unlock(&s->lock);
    return usd;
}

/* ---- The database side ------------------------------------------------ */

#define TODAY "(now() AT TIME ZONE 'America/Los_Angeles')::date"

static int flush(ev_db_t *db, const delta_t *d, size_t n)
{
    int rc = n ? ev_db_exec(db, NULL, "BEGIN", 0, NULL) : 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char ev[24], calls[24], tin[24], tout[24], usd[48];
        snprintf(ev, sizeof(ev), "%" PRId64, d[i].event_id);
        snprintf(calls, sizeof(calls), "%" PRId64, d[i].calls);
        snprintf(tin, sizeof(tin), "%" PRId64, d[i].tokens_in);
        snprintf(tout, sizeof(tout), "%" PRId64, d[i].tokens_out);
        snprintf(usd, sizeof(usd), "%.12f", d[i].usd);
        const char *params[] = {ev_provider_name((ev_provider_id_t)d[i].provider),
                                d[i].model,
                                ev,
                                calls,
                                tin,
                                tout,
                                usd};
        rc = ev_db_exec(db, NULL,
                        "INSERT INTO spend_daily AS s"
                        " (day, provider, model, event_id, calls, tokens_in, tokens_out, usd)"
                        " VALUES (" TODAY ", $1, $2, $3::bigint, $4::bigint, $5::bigint,"
                        "         $6::bigint, $7::numeric)"
                        " ON CONFLICT (day, provider, model, event_id) DO UPDATE"
                        " SET calls = s.calls + excluded.calls,"
                        "     tokens_in = s.tokens_in + excluded.tokens_in,"
                        "     tokens_out = s.tokens_out + excluded.tokens_out,"
                        "     usd = s.usd + excluded.usd, updated_at = now()",
                        7, params);
    }
    if (n && rc == 0)
        rc = ev_db_exec(db, NULL, "COMMIT", 0, NULL);
    if (n && rc < 0 && PQtransactionStatus(ev_db_conn(db)) != PQTRANS_IDLE)
        (void)ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
    return rc;
}

static int read_providers(ev_db_t *db, totals_t *t)
{
    PGresult *res = NULL;
    int rc = ev_db_exec(db, &res,
                        "SELECT provider,"
                        " coalesce(sum(usd) FILTER (WHERE day = " TODAY "), 0)::float8,"
                        " sum(usd)::float8, sum(calls), sum(tokens_in), sum(tokens_out),"
                        " " TODAY "::text"
                        " FROM spend_daily GROUP BY provider",
                        0, NULL);
    if (rc < 0)
        return rc;
    for (int r = 0; r < PQntuples(res); r++) {
        for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
            if (strcmp(PQgetvalue(res, r, 0), ev_provider_name((ev_provider_id_t)p)) != 0)
                continue;
            t->today[p] = strtod(PQgetvalue(res, r, 1), NULL);
            t->total[p] = strtod(PQgetvalue(res, r, 2), NULL);
            t->calls[p] = strtoll(PQgetvalue(res, r, 3), NULL, 10);
            t->tokens_in[p] = strtoll(PQgetvalue(res, r, 4), NULL, 10);
            t->tokens_out[p] = strtoll(PQgetvalue(res, r, 5), NULL, 10);
        }
    }
    PQclear(res);
    res = NULL;
    rc = ev_db_exec(db, &res,
                    "SELECT " TODAY "::text, (SELECT value FROM console_settings"
                    "  WHERE key = 'daily_spend_limit_usd')",
                    0, NULL);
    if (rc < 0)
        return rc;
    snprintf(t->day, sizeof(t->day), "%s", PQgetvalue(res, 0, 0));
    t->limit_override = PQgetisnull(res, 0, 1) ? -1 : strtod(PQgetvalue(res, 0, 1), NULL);
    PQclear(res);
    return 0;
}

/* Which providers an operator holds (pause or emergency stop), from the
 * cluster's shared state; a provider without a state row is not held. */
static int read_holds(ev_db_t *db, totals_t *t)
{
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        ev_cluster_provider_state_t st;
        int rc = ev_cluster_state_read(db, (ev_provider_id_t)p, &st);
        t->hold[p] = 0;
        if (rc == EV_ENOTFOUND)
            continue;
        if (rc < 0)
            return rc;
        if (st.pause_remaining_s <= 0)
            continue;
        if (strcmp(st.pause_reason, EV_CONSOLE_EMERGENCY_REASON) == 0)
            t->hold[p] = 2;
        else if (strncmp(st.pause_reason, EV_CONSOLE_PAUSE_PREFIX,
                         strlen(EV_CONSOLE_PAUSE_PREFIX)) == 0)
            t->hold[p] = 1;
    }
    return 0;
}

static int read_events(ev_db_t *db, totals_t *t)
{
    PGresult *res = NULL;
    char max[16];
    snprintf(max, sizeof(max), "%d", MAX_EVENTS);
    const char *params[] = {max};
    /* Every event with a budget first (the limits need them), then the
     * biggest spenders for the figures. */
    int rc = ev_db_exec(db, &res,
                        "SELECT e.id, e.name, coalesce(e.budget_usd::float8, -1),"
                        " coalesce(sum(s.usd), 0)::float8,"
                        " coalesce(sum(s.usd) FILTER (WHERE s.day = " TODAY "), 0)::float8"
                        " FROM events e LEFT JOIN spend_daily s ON s.event_id = e.id"
                        " GROUP BY e.id"
                        " HAVING e.budget_usd IS NOT NULL OR coalesce(sum(s.usd), 0) > 0"
                        " ORDER BY (e.budget_usd IS NOT NULL) DESC, 4 DESC, e.id"
                        " LIMIT $1::int",
                        1, params);
    if (rc < 0)
        return rc;
    t->nevents = 0;
    for (int r = 0; r < PQntuples(res) && r < MAX_EVENTS; r++) {
        event_row_t *e = &t->events[t->nevents++];
        e->id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
        snprintf(e->name, sizeof(e->name), "%s", PQgetvalue(res, r, 1));
        e->budget = strtod(PQgetvalue(res, r, 2), NULL);
        e->total_usd = strtod(PQgetvalue(res, r, 3), NULL);
        e->today_usd = strtod(PQgetvalue(res, r, 4), NULL);
    }
    PQclear(res);
    return 0;
}

/* Logs each provider whose limit state changed; called without the lock. */
static void log_changes(ev_spend_t *s)
{
    bool was[EV_PROVIDER_COUNT], now[EV_PROVIDER_COUNT];
    int hold_was[EV_PROVIDER_COUNT], hold_now[EV_PROVIDER_COUNT];
    double spent[EV_PROVIDER_COUNT], limit;
    pthread_mutex_lock(&s->lock);
    limit = limit_locked(s);
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        was[p] = s->capped[p];
        spent[p] = provider_today_locked(s, p);
        now[p] = limit > 0 && spent[p] >= limit;
        s->capped[p] = now[p];
        hold_was[p] = s->logged_hold[p];
        hold_now[p] = s->t.hold[p];
        s->logged_hold[p] = hold_now[p];
    }
    pthread_mutex_unlock(&s->lock);
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        if (hold_was[p] != hold_now[p])
            ev_log(hold_now[p] ? EV_LOG_WARN : EV_LOG_INFO, "%s calls %s",
                   ev_provider_name((ev_provider_id_t)p),
                   hold_now[p] == 2   ? "stopped by the emergency stop"
                   : hold_now[p] == 1 ? "held: paused by an operator"
                                      : "no longer held by an operator");
        if (was[p] == now[p])
            continue;
        if (now[p])
            ev_log(EV_LOG_WARN,
                   "%s daily spend limit reached: %.6g USD spent today, limit %.6g USD "
                   "(DAILY_SPEND_LIMIT_USD or `spend limit`); calls to it are held until the "
                   "next provider day or a raised limit",
                   ev_provider_name((ev_provider_id_t)p), spent[p], limit);
        else
            ev_log(EV_LOG_INFO, "%s daily spend limit no longer reached (%.6g of %.6g USD)",
                   ev_provider_name((ev_provider_id_t)p), spent[p], limit);
    }
}

/* One round: flush what is pending, read the totals, publish. Caller holds
 * db_lock. */
static int round_locked(ev_spend_t *s, ev_db_t *db)
{
    pthread_mutex_lock(&s->lock);
    EV_ASSERT(s->ntransit == 0);
    s->transit = s->pending;
    s->ntransit = s->npending;
    s->pending = NULL;
    s->npending = s->cap = 0;
    pthread_mutex_unlock(&s->lock);

    totals_t *t = ev_calloc(1, sizeof(*t));
    int rc = ev_db_ensure(db);
    if (rc == 0)
        rc = flush(db, s->transit, s->ntransit);
    bool flushed = rc == 0;
    if (rc == 0)
        rc = read_providers(db, t);
    if (rc == 0)
        rc = read_events(db, t);
    if (rc == 0)
        rc = read_holds(db, t);

    pthread_mutex_lock(&s->lock);
    if (rc == 0)
        s->t = *t;
    if (flushed) {
        free(s->transit);
    } else {
        /* Not sent: back in front of whatever arrived meanwhile. */
        size_t n = s->ntransit + s->npending;
        delta_t *all = ev_calloc(n ? n : 1, sizeof(*all));
        if (s->ntransit)
            memcpy(all, s->transit, s->ntransit * sizeof(*all));
        if (s->npending)
            memcpy(all + s->ntransit, s->pending, s->npending * sizeof(*all));
        free(s->transit);
        free(s->pending);
        s->pending = all;
        s->npending = n;
        s->cap = n ? n : 1;
    }
    s->transit = NULL;
    s->ntransit = 0;
    pthread_mutex_unlock(&s->lock);
    free(t);
    if (rc < 0)
        atomic_fetch_add(&s->refresh_failures, 1);
    else
        log_changes(s);
    return rc;
}

int ev_spend_sync(ev_spend_t *s)
{
    pthread_mutex_lock(&s->db_lock);
    int rc = round_locked(s, s->db);
    pthread_mutex_unlock(&s->db_lock);
    return rc;
}

/* Waits `ms` on the cond (woken early by stop). Called with s->lock held. */
static void pause_locked(ev_spend_t *s, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (int64_t)(ms % 1000) * 1000000;
    ts.tv_sec += ms / 1000 + ns / 1000000000;
    ts.tv_nsec = (long)(ns % 1000000000);
    pthread_cond_timedwait(&s->cond, &s->lock, &ts);
}

/*
 * A round every refresh interval, and at once when the shared provider state
 * changes (NOTIFY): an operator's pause or emergency stop then holds calls
 * within milliseconds, before the cluster's limiter pause could make them
 * fail (and spend an attempt) instead of wait.
 */
static void *spend_thread(void *arg)
{
    ev_spend_t *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        pthread_mutex_unlock(&s->lock);
        pthread_mutex_lock(&s->db_lock);
        int woke = ev_db_wait_notify(s->db, s->refresh_ms);
        (void)round_locked(s, s->db); /* reconnects when the session broke */
        pthread_mutex_unlock(&s->db_lock);
        pthread_mutex_lock(&s->lock);
        /* A broken connection returns at once: keep the interval; a burst of
         * notifications gets one round per MIN_ROUND_MS. */
        if (!s->stopping)
            pause_locked(s, woke < 0 ? s->refresh_ms : MIN_ROUND_MS);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void spend_free(ev_spend_t *s)
{
    if (!s)
        return;
    ev_db_free(s->db);
    free(s->pending);
    free(s->transit);
    free(s->conninfo);
    free(s->overrides);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->db_lock);
    free(s);
}

int ev_spend_start(ev_spend_t **out, const ev_spend_options_t *o, char *err, size_t errlen)
{
    int rc;
    *out = NULL;
    if (!o || !o->database_url || o->refresh_ms <= 0 || o->daily_limit_usd < 0) {
        ev_set_error(err, errlen, "spend: invalid options");
        return EV_EINVAL;
    }
    ev_spend_t *s = ev_calloc(1, sizeof(*s));
    s->conninfo = ev_strdup(o->database_url);
    s->overrides = o->price_overrides ? ev_strdup(o->price_overrides) : NULL;
    s->config_limit = o->daily_limit_usd;
    s->refresh_ms = o->refresh_ms;
    s->stats = o->stats;
    s->t.limit_override = -1;
    EV_ASSERT(pthread_mutex_init(&s->lock, NULL) == 0);
    EV_ASSERT(pthread_mutex_init(&s->db_lock, NULL) == 0);
    pthread_condattr_t ca;
    EV_ASSERT(pthread_condattr_init(&ca) == 0);
    EV_ASSERT(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0);
    EV_ASSERT(pthread_cond_init(&s->cond, &ca) == 0);
    pthread_condattr_destroy(&ca);

    char why[256] = "";
    rc = ev_db_connect(&s->db, s->conninfo, why, sizeof(why));
    if (rc == 0)
        rc = ev_db_listen(s->db, EV_CLUSTER_STATE_CHANNEL);
    if (rc == 0)
        rc = ev_spend_sync(s);
    if (rc < 0) {
        ev_set_error(err, errlen, "spend: cannot read the spend totals: %s",
                     why[0] ? why : (s->db ? ev_db_error(s->db) : ev_strerror(rc)));
        goto out;
    }
    rc = ev_thread_create(&s->thread, "ev-spend", spend_thread, s);
    if (rc < 0)
        ev_set_error(err, errlen, "spend: cannot create its thread");
out:
    if (rc < 0) {
        spend_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void ev_spend_stop(ev_spend_t *s)
{
    if (!s)
        return;
    if (s->thread.started) {
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        ev_thread_join(&s->thread, NULL);
    }
    /* The last calls' costs are written before the process goes. */
    (void)ev_spend_sync(s);
    spend_free(s);
}

/* ---- Reading ---------------------------------------------------------- */

double ev_spend_daily_limit(ev_spend_t *s)
{
    pthread_mutex_lock(&s->lock);
    double v = limit_locked(s);
    pthread_mutex_unlock(&s->lock);
    return v;
}

void ev_spend_provider_view(ev_spend_t *s, ev_provider_id_t p, ev_spend_provider_view_t *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->lock);
    double pend = provider_today_locked(s, p) - s->t.today[p];
    out->today_usd = s->t.today[p] + pend;
    out->total_usd = s->t.total[p] + pend;
    double limit = limit_locked(s);
    out->capped = limit > 0 && out->today_usd >= limit;
    pthread_mutex_unlock(&s->lock);
}

/* A consistent copy of the figures, pending deltas folded in. */
static void snapshot(ev_spend_t *s, totals_t *t, double *limit)
{
    pthread_mutex_lock(&s->lock);
    *t = s->t;
    *limit = limit_locked(s);
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        double pend = provider_today_locked(s, p) - s->t.today[p];
        t->today[p] += pend;
        t->total[p] += pend;
    }
    for (int i = 0; i < t->nevents; i++) {
        int64_t id = t->events[i].id;
        double pend =
            delta_sum(s->pending, s->npending, -1, id) + delta_sum(s->transit, s->ntransit, -1, id);
        t->events[i].today_usd += pend;
        t->events[i].total_usd += pend;
    }
    pthread_mutex_unlock(&s->lock);
}

static json_object *usd(double v)
{
    char text[48];
    snprintf(text, sizeof(text), "%.6f", v);
    return json_object_new_double_s(v, text);
}

void ev_spend_json_add(ev_spend_t *s, json_object *root)
{
    totals_t *t = ev_malloc(sizeof(*t));
    double limit;
    snapshot(s, t, &limit);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "day", json_object_new_string(t->day));
    json_object_object_add(o, "daily_limit_usd", limit > 0 ? usd(limit) : NULL);
    double today = 0, total = 0;
    json_object *provs = json_object_new_object();
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        json_object *po = json_object_new_object();
        json_object_object_add(po, "today_usd", usd(t->today[p]));
        json_object_object_add(po, "total_usd", usd(t->total[p]));
        json_object_object_add(po, "limit_reached",
                               json_object_new_boolean(limit > 0 && t->today[p] >= limit));
        json_object_object_add(po, "held",
                               json_object_new_string(t->hold[p] == 2   ? "emergency"
                                                      : t->hold[p] == 1 ? "paused"
                                                                        : "no"));
        json_object_object_add(
            po, "unpriced_calls",
            json_object_new_int64(atomic_load_explicit(&s->unpriced[p], memory_order_relaxed)));
        json_object_object_add(provs, ev_provider_name((ev_provider_id_t)p), po);
        today += t->today[p];
        total += t->total[p];
    }
    bool emergency = false;
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        emergency |= t->hold[p] == 2;
    json_object_object_add(o, "emergency", json_object_new_boolean(emergency));
    json_object_object_add(o, "today_usd", usd(today));
    json_object_object_add(o, "total_usd", usd(total));
    json_object_object_add(o, "providers", provs);
    json_object *evs = json_object_new_array();
    for (int i = 0; i < t->nevents; i++) {
        const event_row_t *e = &t->events[i];
        json_object *eo = json_object_new_object();
        json_object_object_add(eo, "id", json_object_new_int64(e->id));
        json_object_object_add(eo, "name", json_object_new_string(e->name));
        json_object_object_add(eo, "today_usd", usd(e->today_usd));
        json_object_object_add(eo, "total_usd", usd(e->total_usd));
        json_object_object_add(eo, "budget_usd", e->budget >= 0 ? usd(e->budget) : NULL);
        json_object_object_add(
            eo, "budget_reached",
            json_object_new_boolean(e->budget >= 0 && e->total_usd >= e->budget));
        json_object_array_add(evs, eo);
    }
    json_object_object_add(o, "events", evs);
    json_object_object_add(root, "spend", o);
    free(t);
}

void ev_spend_render_prometheus(ev_spend_t *s, ev_stats_buf_t *b)
{
    totals_t *t = ev_malloc(sizeof(*t));
    double limit;
    snapshot(s, t, &limit);
#define P "event_validator_"
    ev_stats_buf_printf(b, "# HELP " P "spend_today_usd Cost of provider calls this provider day "
                           "(all replicas).\n# TYPE " P "spend_today_usd gauge\n");
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        ev_stats_buf_printf(b, P "spend_today_usd{provider=\"%s\"} %.6f\n",
                            ev_provider_name((ev_provider_id_t)p), t->today[p]);
    ev_stats_buf_printf(b, "# HELP " P "spend_usd_total Cost of provider calls since the "
                           "database was created (all replicas).\n# TYPE " P
                           "spend_usd_total counter\n");
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        ev_stats_buf_printf(b, P "spend_usd_total{provider=\"%s\"} %.6f\n",
                            ev_provider_name((ev_provider_id_t)p), t->total[p]);
    ev_stats_buf_printf(b,
                        "# HELP " P "spend_daily_limit_usd Daily spend limit per provider "
                        "(0: none).\n# TYPE " P "spend_daily_limit_usd gauge\n" P
                        "spend_daily_limit_usd %.6f\n",
                        limit > 0 ? limit : 0);
    ev_stats_buf_printf(b, "# HELP " P "spend_limit_ratio Today's spend over the daily limit "
                           "(0 without a limit).\n# TYPE " P "spend_limit_ratio gauge\n");
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        ev_stats_buf_printf(b, P "spend_limit_ratio{provider=\"%s\"} %.6f\n",
                            ev_provider_name((ev_provider_id_t)p),
                            limit > 0 ? t->today[p] / limit : 0);
    ev_stats_buf_printf(b,
                        "# HELP " P "spend_limit_reached 1 while the provider's calls are "
                        "held by the daily spend limit.\n# TYPE " P "spend_limit_reached gauge\n");
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        ev_stats_buf_printf(b, P "spend_limit_reached{provider=\"%s\"} %d\n",
                            ev_provider_name((ev_provider_id_t)p),
                            limit > 0 && t->today[p] >= limit ? 1 : 0);
    bool emergency = false;
    ev_stats_buf_printf(b, "# HELP " P "provider_held 1 while an operator's pause or the "
                           "emergency stop holds the provider's calls.\n# TYPE " P
                           "provider_held gauge\n");
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        ev_stats_buf_printf(b, P "provider_held{provider=\"%s\"} %d\n",
                            ev_provider_name((ev_provider_id_t)p), t->hold[p] != 0);
        emergency |= t->hold[p] == 2;
    }
    ev_stats_buf_printf(b,
                        "# HELP " P "emergency_stop 1 while the emergency stop is on.\n"
                        "# TYPE " P "emergency_stop gauge\n" P "emergency_stop %d\n",
                        emergency ? 1 : 0);
    ev_stats_buf_printf(b, "# HELP " P "spend_unpriced_calls_total Calls to a model without a "
                           "price (set MODEL_PRICES).\n# TYPE " P
                           "spend_unpriced_calls_total counter\n");
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        ev_stats_buf_printf(b, P "spend_unpriced_calls_total{provider=\"%s\"} %" PRId64 "\n",
                            ev_provider_name((ev_provider_id_t)p),
                            atomic_load_explicit(&s->unpriced[p], memory_order_relaxed));
    ev_stats_buf_printf(b, "# HELP " P "event_spend_usd_total Cost of an event's submissions "
                           "(events with a budget or spend).\n# TYPE " P
                           "event_spend_usd_total counter\n");
    for (int i = 0; i < t->nevents; i++)
        ev_stats_buf_printf(b, P "event_spend_usd_total{event=\"%" PRId64 "\"} %.6f\n",
                            t->events[i].id, t->events[i].total_usd);
    ev_stats_buf_printf(b, "# HELP " P "event_budget_reached 1 while the event's budget holds "
                           "its calls.\n# TYPE " P "event_budget_reached gauge\n");
    for (int i = 0; i < t->nevents; i++)
        if (t->events[i].budget >= 0)
            ev_stats_buf_printf(b, P "event_budget_reached{event=\"%" PRId64 "\"} %d\n",
                                t->events[i].id,
                                t->events[i].total_usd >= t->events[i].budget ? 1 : 0);
    ev_stats_buf_printf(b,
                        "# HELP " P "spend_refresh_failures_total Failed spend flushes or "
                        "reads.\n# TYPE " P "spend_refresh_failures_total counter\n" P
                        "spend_refresh_failures_total %" PRId64 "\n",
                        (int64_t)atomic_load(&s->refresh_failures));
#undef P
    free(t);
}
