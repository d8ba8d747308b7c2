/*
 * spend.h - what provider calls cost, and the limits that stop them.
 *
 * Prices: a small built-in table of USD per million tokens (input, output,
 * cached input where the provider discounts it) for the models this service
 * uses by default, overridable with MODEL_PRICES. Every call's cost is
 * tokens x price.
 *
 * Accounting: every call is added to `spend_daily` (provider day, provider,
 * model, event) by one background thread, which also reads the cluster-wide
 * totals back every refresh interval (and at once when the shared provider
 * state announces a change); so the figures and the limits
 * are those of every replica together, give or take the calls of the last
 * interval. The provider day is the calendar date in US Pacific time (the
 * day Gemini's quotas use), computed by the database so every replica
 * agrees.
 *
 * Holds: the same thread reads the cluster's shared provider state; a
 * provider paused by an operator or by the emergency stop (console.h) is
 * held exactly like one at its spend limit.
 *
 * Limits: DAILY_SPEND_LIMIT_USD (or the value `spend limit` set for the
 * cluster) caps each provider's spend per provider day; an event's
 * `budget_usd` caps what its submissions may cost in all. At a limit, calls
 * to that provider (or for that event) are held: the router falls back to
 * another provider or the submission waits as pending, never failed. Calls
 * already in flight finish, so the limit can be passed by what they cost.
 * Each change of a limit's state is logged once and shown in stats.
 *
 * Threads: ev_spend_* functions are thread-safe (workers record and ask,
 * the stats server reads, the spend thread writes); `lock` guards the
 * cached totals and the pending deltas and is a leaf lock (nothing is called
 * while holding it, least of all libpq or the logger).
 */
#ifndef EV_SPEND_H
#define EV_SPEND_H

#include "ev/clock.h"
#include "ev/config.h"
#include "ev/stats.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* USD per million tokens. cached_input < 0: cached input costs what input
 * costs (no discount published). */
typedef struct ev_price {
    double input, output, cached_input;
} ev_price_t;

/* Checks a MODEL_PRICES value: "model=IN/OUT[/CACHED][,model=...]" with
 * non-negative decimal prices. 0 or EV_EINVAL with err naming the entry. */
int ev_price_check_overrides(const char *spec, char *err, size_t errlen);

/* The price of `model`: the override from `overrides` (may be NULL) if it
 * names the model, else the built-in table. False when neither knows it
 * (*out is then all zero). */
bool ev_price_lookup(const char *overrides, const char *model, ev_price_t *out);

/* tokens x price in USD; cached_in is the part of tokens_in served from the
 * provider's cache (billed at cached_input). */
double ev_price_cost(const ev_price_t *p, int64_t tokens_in, int64_t cached_in, int64_t tokens_out);

/* The built-in table, for docs and tests: *n receives the number of rows. */
typedef struct ev_price_row {
    const char *provider;
    const char *model;
    ev_price_t price;
} ev_price_row_t;
const ev_price_row_t *ev_price_table(size_t *n);

typedef struct ev_spend ev_spend_t;

typedef struct ev_spend_options {
    const char *database_url;    /* required */
    double daily_limit_usd;      /* DAILY_SPEND_LIMIT_USD; 0: none */
    const char *price_overrides; /* MODEL_PRICES; NULL: built-in table only */
    int refresh_ms;              /* flush and re-read interval */
    ev_stats_t *stats;           /* may be NULL */
} ev_spend_options_t;

#define EV_SPEND_OPTIONS_INIT                                                                      \
    {                                                                                              \
        NULL, 0, NULL, 1000, NULL                                                                  \
    }

/* Starts the spend thread (its own database session) after reading the
 * totals once, so limits hold from the first call. Strings in opts are
 * copied. 0 with *out set, or EV_EDBCONN/EV_EDB/EV_EINVAL with err set and
 * *out NULL. Call from the main thread before the workers start. */
int ev_spend_start(ev_spend_t **out, const ev_spend_options_t *opts, char *err, size_t errlen);

/* Stops the thread after a last flush; frees. Accepts NULL. */
void ev_spend_stop(ev_spend_t *s);

/* 0 when provider p may be called now, EV_EHELD when its daily limit is
 * reached. Any thread; never blocks on the database. */
int ev_spend_allow_provider(ev_spend_t *s, ev_provider_id_t p);

/* 0 when a call for event_id may be made, EV_EHELD when the event's budget
 * is spent. Any thread. */
int ev_spend_allow_event(ev_spend_t *s, int64_t event_id);

/* Records one call's usage and returns its cost in USD (0 for a model
 * without a price, which is counted as unpriced). Any thread. */
double ev_spend_record(ev_spend_t *s, ev_provider_id_t p, const char *model, int64_t event_id,
                       int64_t tokens_in, int64_t cached_in, int64_t tokens_out);

/* Flushes the pending records and re-reads the totals now (tests, drain).
 * 0 or the database error. Any thread but the spend thread. */
int ev_spend_sync(ev_spend_t *s);

/* Adds "spend" to a /stats document (takes no ownership of root). */
void ev_spend_json_add(ev_spend_t *s, json_object *root);

/* Appends the spend families to a /metrics page. */
void ev_spend_render_prometheus(ev_spend_t *s, ev_stats_buf_t *b);

/* One provider's figures, for the dashboard and status. */
typedef struct ev_spend_provider_view {
    double today_usd, total_usd;
    bool capped;
} ev_spend_provider_view_t;
void ev_spend_provider_view(ev_spend_t *s, ev_provider_id_t p, ev_spend_provider_view_t *out);

/* The daily limit in force (0: none). */
double ev_spend_daily_limit(ev_spend_t *s);

#endif
