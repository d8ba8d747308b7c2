/*
 * router.c - the call path: budget, breaker, limiter, semaphore, HTTP,
 * retries and fallback (SPEC §6). See router.h for the order of steps.
 *
 * Threads: every worker calls ev_router_judge concurrently. Per-provider
 * objects are created once in ev_router_new and are thread-safe; the only
 * mutable router fields are the `disabled` and `cooldown` atomics. Nothing
 * here holds a lock; each primitive takes its own briefly. Decisions are
 * logged here, once, where they are made (breaker changes, disabling a
 * provider, daily-quota cool-down, fallbacks).
 */
#include "ev/router.h"

#include "ev/adaptive.h"
#include "ev/availability.h"
#include "ev/backoff.h"
#include "ev/breaker.h"
#include "ev/cluster.h"
#include "ev/error.h"
#include "ev/limiter.h"
#include "ev/log.h"
#include "ev/providers.h"
#include "ev/retry_budget.h"
#include "ev/semaphore.h"
#include "ev/spend.h"
#include "ev/stats.h"
#include "ev/tpm.h"
#include "ev/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A 429 without a hint still pauses the provider this long. */
#define DEFAULT_429_PAUSE_MS 1000

typedef struct provider {
    ev_provider_id_t id;
    const ev_provider_config_t *cfg;
    const ev_provider_ops_t *ops; /* NULL: not configured (no key) */
    ev_llm_client_options_t opts; /* immutable after ev_router_new */
    ev_semaphore_t *sem;
    ev_limiter_t *limiter;
    ev_breaker_t *breaker;
    ev_retry_budget_t *retry_budget;
    ev_adaptive_t *adaptive;     /* NULL: ADAPTIVE_LIMITS off or no RPM limit */
    _Atomic double applied_rate; /* the rate `adaptive` last gave the limiter, 0 none */
    ev_tpm_t *tpm;               /* tokens per minute (limit 0: only counted) */
    ev_cluster_t *cluster;       /* NULL: limits are this process's own; set before workers start */
    struct ev_stats *stats;      /* the router's, for cluster callbacks; may be NULL */
    atomic_bool disabled;        /* a fatal configuration error: never used again */
    atomic_bool cooling;         /* daily quota: cooling down until cooldown_until_us */
    _Atomic int64_t cooldown_until_us;
    _Atomic int64_t paused_until_us; /* a 429's provider-wide pause, monotonic clock */
} provider_t;

struct ev_router {
    const ev_config_t *cfg;  /* immutable */
    const ev_clock_t *clock; /* immutable */
    struct ev_stats *stats;  /* thread-safe, may be NULL */
    struct ev_spend *spend;  /* thread-safe, may be NULL; set before use */
    ev_backoff_options_t backoff;
    ev_availability_t *models; /* thread-safe: the models set aside */
    provider_t p[EV_PROVIDER_COUNT];
};

static bool has_model(ev_router_t *r, const provider_t *p);
static void on_model_set_aside(void *ctx, ev_provider_id_t id, const char *model,
                               ev_model_status_t status, const char *message);

static bool configured(const provider_t *p)
{
    return p->ops != NULL;
}

/* Feeds live breaker/semaphore/limiter state to the stats snapshot. */
static void stats_probe(ev_stats_probe_t *io, void *ctx)
{
    provider_t *p = ctx;
    if (!configured(p))
        return;
    ev_breaker_stats_t bs;
    ev_breaker_stats(p->breaker, &bs);
    io->breaker = ev_breaker_state_name(bs.state);
    io->error_rate = bs.error_rate;
    io->in_flight = ev_semaphore_in_flight(p->sem);
    io->max_concurrent = ev_semaphore_cap(p->sem);
    io->rpm_limit = ev_limiter_rate_per_s(p->limiter) * 60.0;
    io->rpm_ceiling = p->cfg->rpm_limit * p->cfg->safety_factor;
    ev_tpm_stats_t ts;
    ev_tpm_stats(p->tpm, &ts);
    io->tpm_limit = ts.limit_per_min;
    io->tpm_used = ts.used;
    io->limits_scope = ev_cluster_scope(p->cluster, p->id);
}

/* The adaptive controller and the token meter of a provider. */
static int quota_init(ev_router_t *r, provider_t *p)
{
    int rc = ev_tpm_new(&p->tpm, p->cfg->tpm_limit, 50000, r->clock);
    if (rc < 0 || !r->cfg->adaptive_limits || p->cfg->rpm_limit <= 0)
        return rc;
    ev_adaptive_options_t ao = EV_ADAPTIVE_OPTIONS_INIT;
    ao.ceiling_per_s = p->cfg->rpm_limit * p->cfg->safety_factor / 60.0;
    ao.safety_factor = p->cfg->safety_factor;
    return ev_adaptive_new(&p->adaptive, &ao, r->clock);
}

static int provider_init(ev_router_t *r, provider_t *p, ev_provider_id_t id)
{
    int rc = 0;
    const ev_config_t *cfg = r->cfg;
    p->id = id;
    p->cfg = &cfg->providers[id];
    atomic_init(&p->disabled, false);
    atomic_init(&p->applied_rate, 0.0);
    atomic_init(&p->cooling, false);
    atomic_init(&p->cooldown_until_us, 0);
    atomic_init(&p->paused_until_us, 0);
    if (!p->cfg->api_key)
        return 0;

    ev_llm_client_options_t co = EV_LLM_CLIENT_OPTIONS_INIT;
    co.timeout_ms = cfg->http_timeout_ms;
    co.connect_timeout_ms = EV_MIN(10000, cfg->http_timeout_ms);
    co.max_wait_ms = cfg->retry_max_wait_ms;
    co.max_images = cfg->max_images;
    co.max_request_bytes = (size_t)p->cfg->max_request_bytes;
    p->opts = co;
    p->ops = ev_providers_get(id);

    if ((rc = ev_semaphore_new(&p->sem, p->cfg->max_concurrent, r->clock)) < 0)
        return rc;
    ev_limiter_options_t lo = EV_LIMITER_OPTIONS_INIT;
    lo.rpm = p->cfg->rpm_limit;
    lo.safety_factor = p->cfg->safety_factor;
    lo.jitter_enabled = p->cfg->jitter_enabled;
    lo.jitter_min = p->cfg->jitter_min;
    lo.jitter_max = p->cfg->jitter_max;
    if ((rc = ev_limiter_new(&p->limiter, &lo, r->clock)) < 0)
        return rc;
    ev_breaker_options_t bo = EV_BREAKER_OPTIONS_INIT;
    bo.threshold = p->cfg->cb_threshold;
    bo.window_s = p->cfg->cb_window_s;
    bo.cooldown_s = p->cfg->cb_cooldown_s;
    bo.min_calls = p->cfg->cb_min_calls;
    if ((rc = ev_breaker_new(&p->breaker, &bo, r->clock)) < 0)
        return rc;
    ev_retry_budget_options_t ro = EV_RETRY_BUDGET_OPTIONS_INIT;
    ro.ratio = cfg->retry_budget_ratio;
    ro.window_s = p->cfg->cb_window_s;
    if ((rc = ev_retry_budget_new(&p->retry_budget, &ro, r->clock)) < 0)
        return rc;
    if ((rc = quota_init(r, p)) < 0)
        return rc;

    if (r->stats) {
        ev_stats_set_provider_configured(r->stats, id, true);
        ev_stats_set_provider_limits(r->stats, id, p->cfg->max_concurrent,
                                     p->cfg->rpm_limit * p->cfg->safety_factor);
        ev_stats_set_provider_probe(r->stats, id, stats_probe, p);
    }
    return 0;
}

static void provider_fini(ev_router_t *r, provider_t *p)
{
    if (r->stats && configured(p))
        ev_stats_set_provider_probe(r->stats, p->id, NULL, NULL);
    ev_semaphore_free(p->sem);
    ev_limiter_free(p->limiter);
    ev_breaker_free(p->breaker);
    ev_retry_budget_free(p->retry_budget);
    ev_adaptive_free(p->adaptive);
    ev_tpm_free(p->tpm);
}

int ev_router_new(ev_router_t **out, const ev_config_t *cfg, struct ev_stats *stats,
                  const ev_clock_t *clock)
{
    int rc = 0;
    ev_router_t *r = ev_calloc(1, sizeof(*r));
    *out = NULL;
    r->cfg = cfg;
    r->stats = stats;
    r->clock = clock ? clock : ev_clock_system();
    r->backoff = (ev_backoff_options_t)EV_BACKOFF_OPTIONS_INIT;
    r->backoff.base_ms = cfg->retry_base_ms;
    r->backoff.max_ms = cfg->retry_max_ms;
    if ((rc = ev_backoff_options_check(&r->backoff)) < 0)
        goto out;
    ev_availability_new(&r->models);
    ev_availability_on_change(r->models, on_model_set_aside, r);
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        if ((rc = provider_init(r, &r->p[i], (ev_provider_id_t)i)) < 0)
            goto out;
    }
out:
    if (rc < 0) {
        ev_router_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void ev_router_free(ev_router_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < EV_PROVIDER_COUNT; i++)
        provider_fini(r, &r->p[i]);
    ev_availability_free(r->models);
    free(r);
}

void ev_router_set_spend(ev_router_t *r, struct ev_spend *spend)
{
    r->spend = spend;
}

bool ev_router_usable(ev_router_t *r, ev_provider_id_t id)
{
    provider_t *p = &r->p[id];
    return configured(p) && !atomic_load(&p->disabled) && has_model(r, p);
}

bool ev_router_any_usable(ev_router_t *r)
{
    for (int i = 0; i < EV_PROVIDER_COUNT; i++)
        if (ev_router_usable(r, (ev_provider_id_t)i))
            return true;
    return false;
}

/* The first model of `list` not set aside, or "". */
static const char *first_available(ev_router_t *r, ev_provider_id_t id, char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ev_availability_is_available(r->models, id, list[i]))
            return list[i];
    return "";
}

const char *ev_router_model(ev_router_t *r, ev_provider_id_t id, const ev_llm_request_t *req)
{
    provider_t *p = &r->p[id];
    size_t n = 0;
    char *const *models = configured(p) ? ev_provider_models_for(p->ops, p->cfg, req, &n) : NULL;
    return first_available(r, id, models, n);
}

/* Whether a text model of the provider is still available: every
 * submission needs the theme check, so a provider left with vision models
 * only can finish none. */
static bool has_model(ev_router_t *r, const provider_t *p)
{
    return first_available(r, p->id, p->cfg->models, p->cfg->n_models)[0];
}

/* The list `model` belongs to, and its first still available model. */
static const char *next_model(ev_router_t *r, const provider_t *p, const char *model, bool *vision)
{
    const ev_provider_config_t *c = p->cfg;
    *vision = false;
    for (size_t i = 0; i < c->n_models; i++)
        if (strcmp(c->models[i], model) == 0)
            return first_available(r, p->id, c->models, c->n_models);
    *vision = true;
    return first_available(r, p->id, c->vision_models, c->n_vision_models);
}

/*
 * A model was set aside (by this process or, through a coordinator, by
 * another): one line with the provider's words and what is used instead,
 * the count in stats, and when the provider has no model left at all, the
 * same end as an invalid key.
 */
static void on_model_set_aside(void *ctx, ev_provider_id_t id, const char *model,
                               ev_model_status_t status, const char *message)
{
    ev_router_t *r = ctx;
    provider_t *p = &r->p[id];
    if (!configured(p))
        return;
    bool vision = false;
    const char *next = next_model(r, p, model, &vision);
    const char *env = p->ops->env;
    if (next[0])
        ev_log(EV_LOG_WARN,
               "%s model %s is %s (%s): set aside for the life of this process; using %s",
               p->ops->name, model,
               status == EV_MODEL_UNUSABLE ? "unusable with this configuration"
                                           : ev_model_status_name(status),
               message, next);
    else
        ev_log(EV_LOG_ERROR,
               "%s model %s is %s (%s): set aside for the life of this process; no model of "
               "%s_%sMODELS is left",
               p->ops->name, model,
               status == EV_MODEL_UNUSABLE ? "unusable with this configuration"
                                           : ev_model_status_name(status),
               message, env, vision ? "VISION_" : "");
    if (r->stats)
        ev_stats_set_provider_models_unavailable(r->stats, id,
                                                 (int)ev_availability_count(r->models, id));
    if (!has_model(r, p)) {
        ev_log(EV_LOG_ERROR,
               "%s disabled for the life of this process: none of its configured models can "
               "answer the theme check any more; check %s_MODELS",
               p->ops->name, env);
        if (r->stats)
            ev_stats_set_provider_disabled(r->stats, id, true);
    }
}

ev_availability_t *ev_router_availability(ev_router_t *r)
{
    return r->models;
}

bool ev_router_ready(ev_router_t *r)
{
    bool text = false, image = false;
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        provider_t *p = &r->p[i];
        if (!configured(p) || atomic_load(&p->disabled))
            continue;
        const ev_provider_config_t *c = p->cfg;
        text = text || first_available(r, p->id, c->models, c->n_models)[0];
        if (p->ops->caps & EV_PROVIDER_CAP_IMAGES) {
            bool own = p->ops->caps & EV_PROVIDER_CAP_VISION_MODELS;
            image = image || first_available(r, p->id, own ? c->vision_models : c->models,
                                             own ? c->n_vision_models : c->n_models)[0];
        }
    }
    return text && image;
}

/* ---- the call path ---- */

static ev_stats_outcome_t stats_outcome(const ev_llm_result_t *res, bool answer_ok)
{
    if (res->http_status == 429)
        return EV_STATS_OUTCOME_RATE_LIMITED;
    if (res->http_status >= 500 || res->http_status == 498)
        return EV_STATS_OUTCOME_SERVER_ERROR;
    if (res->http_status == 0)
        return res->err == EV_ETIMEOUT ? EV_STATS_OUTCOME_TIMEOUT : EV_STATS_OUTCOME_TRANSPORT;
    if (res->http_status >= 400)
        return EV_STATS_OUTCOME_CLIENT_ERROR;
    return answer_ok ? EV_STATS_OUTCOME_OK : EV_STATS_OUTCOME_BAD_RESPONSE;
}

static ev_breaker_outcome_t breaker_outcome(const ev_llm_result_t *res)
{
    switch (res->outcome) {
    case EV_LLM_OK:
    case EV_LLM_BAD_ANSWER: /* the provider is up and answering */
        return EV_BREAKER_SUCCESS;
    case EV_LLM_RETRY:
        return EV_BREAKER_FAILURE;
    case EV_LLM_FALLBACK:
        return res->rate_limited ? EV_BREAKER_FAILURE : EV_BREAKER_NEUTRAL;
    default:
        return EV_BREAKER_NEUTRAL;
    }
}

static void log_breaker_change(const provider_t *p, const ev_breaker_change_t *ch)
{
    if (!ch->changed)
        return;
    ev_log_kv(ch->to == EV_BREAKER_OPEN ? EV_LOG_WARN : EV_LOG_INFO,
              "circuit breaker changed state", "breaker_provider", ev_provider_name(p->id), "from",
              ev_breaker_state_name(ch->from), "to", ev_breaker_state_name(ch->to), NULL);
}

static void disable_provider(ev_router_t *r, provider_t *p, const ev_llm_result_t *res)
{
    bool expected = false;
    if (!atomic_compare_exchange_strong(&p->disabled, &expected, true))
        return;
    const char *env = p->ops->env;
    if (res->outcome == EV_LLM_MODEL_UNAVAILABLE && res->config_hint)
        ev_log(EV_LOG_ERROR,
               "%s disabled for the life of this process: model %s is unusable with this "
               "configuration (HTTP %d: %s); check %s",
               ev_provider_name(p->id), res->model ? res->model : "?", res->http_status, res->error,
               res->config_hint);
    else if (res->outcome == EV_LLM_MODEL_UNAVAILABLE)
        ev_log(EV_LOG_ERROR,
               "%s disabled for the life of this process: model %s is %s (HTTP %d: %s); "
               "check %s_MODEL",
               ev_provider_name(p->id), res->model ? res->model : "?",
               ev_model_status_name(res->model_status), res->http_status, res->error, env);
    else
        ev_log(EV_LOG_ERROR,
               "%s disabled for the life of this process: configuration error (HTTP %d: %s); "
               "check %s_API_KEY, %s_MODEL and %s_BASE_URL",
               ev_provider_name(p->id), res->http_status, res->error, env, env, env);
    if (r->stats)
        ev_stats_set_provider_disabled(r->stats, p->id, true);
    ev_cluster_report_disabled(p->cluster, p->id, res->error);
}

/* Another replica disabled the provider (cluster.h): the same, told once. */
static void disable_from_cluster(void *ctx, const char *reason)
{
    provider_t *p = ctx;
    bool expected = false;
    if (!atomic_compare_exchange_strong(&p->disabled, &expected, true))
        return;
    ev_log(EV_LOG_ERROR, "%s disabled cluster-wide by another replica: %s", ev_provider_name(p->id),
           reason);
    if (p->stats)
        ev_stats_set_provider_disabled(p->stats, p->id, true);
}

int ev_router_attach_cluster(ev_router_t *r, ev_cluster_t *c)
{
    int rc = 0;
    for (int i = 0; i < EV_PROVIDER_COUNT && rc == 0; i++) {
        provider_t *p = &r->p[i];
        if (!configured(p))
            continue;
        ev_cluster_provider_t cp = {
            .limiter = p->limiter,
            .sem = p->sem,
            .breaker = p->breaker,
            .ceiling_per_min = p->cfg->rpm_limit * p->cfg->safety_factor,
            .burst = 1,
            .rpd_limit = p->cfg->rpd_limit,
            .max_concurrent = p->cfg->max_concurrent,
            .probe_timeout_s = p->cfg->cb_cooldown_s,
            .disable = disable_from_cluster,
            .ctx = p,
        };
        p->stats = r->stats;
        if ((rc = ev_cluster_attach(c, p->id, &cp)) == 0)
            p->cluster = c;
    }
    return rc;
}

/* How long a daily quota keeps the provider away, in microseconds from now:
 * the provider's table knows when its quota comes back. */
static int64_t cooldown_us(const ev_router_t *r, const provider_t *p, const ev_llm_result_t *res)
{
    int64_t wall = ev_clock_wall_us(r->clock);
    return p->ops->quota_reset_us(res, wall) - wall;
}

static void cool_down(ev_router_t *r, provider_t *p, const ev_llm_result_t *res)
{
    int64_t now = ev_clock_now_us(r->clock);
    int64_t until = now + cooldown_us(r, p, res);
    ev_breaker_change_t ch = {0};
    ev_breaker_force_open(p->breaker, until, &ch);
    ev_limiter_pause_until(p->limiter, until);
    atomic_store(&p->cooldown_until_us, until);
    bool was = atomic_exchange(&p->cooling, true);
    if (!was) {
        ev_log(EV_LOG_WARN,
               "%s %s: cooling down for %lld s (until its quota returns), using the fallback",
               ev_provider_name(p->id),
               res->no_quota ? "has no quota for this model" : "daily quota exhausted",
               (long long)((until - now) / 1000000));
        if (r->stats)
            ev_stats_set_provider_quota_cooldown(r->stats, p->id, true);
    }
    log_breaker_change(p, &ch);
}

/*
 * A 429 pauses the whole provider for its Retry-After, capped by
 * PROVIDER_MAX_PAUSE_MS: one absurd header must not silence a provider for
 * hours while nothing says so. Shown in /stats and /metrics; logged once
 * per pause (a pause that extends a running one is not news).
 */
static void pause_provider(ev_router_t *r, provider_t *p, int64_t asked_ms)
{
    int64_t ms = asked_ms > 0 ? asked_ms : DEFAULT_429_PAUSE_MS;
    bool capped = ms > r->cfg->provider_max_pause_ms;
    ms = EV_MIN(ms, (int64_t)r->cfg->provider_max_pause_ms);
    int64_t now = ev_clock_now_us(r->clock), until = now + ms * 1000;
    ev_limiter_pause_until(p->limiter, until);
    int64_t before = atomic_load(&p->paused_until_us);
    while (before < until && !atomic_compare_exchange_weak(&p->paused_until_us, &before, until))
        ;
    if (before >= until)
        return;
    if (r->stats)
        ev_stats_set_provider_pause(r->stats, p->id, ev_clock_wall_us(r->clock) + ms * 1000,
                                    capped ? "rate limited (429), Retry-After capped"
                                           : "rate limited (429)");
    if (before <= now && (capped || ms >= 10000))
        ev_log(EV_LOG_WARN, "%s paused for %lld ms after a 429 (asked %lld ms%s)",
               ev_provider_name(p->id), (long long)ms, (long long)asked_ms,
               capped ? ", capped by PROVIDER_MAX_PAUSE_MS" : "");
}

/* Clears the cool-down flag once its time has passed. */
static void check_cooldown(ev_router_t *r, provider_t *p)
{
    if (atomic_load(&p->cooling) &&
        ev_clock_now_us(r->clock) >= atomic_load(&p->cooldown_until_us) &&
        atomic_exchange(&p->cooling, false) && r->stats)
        ev_stats_set_provider_quota_cooldown(r->stats, p->id, false);
}

/* Input tokens of a request in the provider's count (its table says what an
 * image and a PDF page cost; an estimate is reconciled with the reported
 * usage anyway). */
static int64_t estimate_input(const provider_t *p, const ev_llm_request_t *req)
{
    return ev_tpm_estimate_input(req, p->ops->image_tokens, p->ops->pdf_page_tokens);
}

/* A per-minute token 429 or the provider's token headers state its token
 * limit: with ADAPTIVE_LIMITS the meter adopts a lower one. Returns whether
 * the meter now limits tokens. */
static bool learn_tokens(provider_t *p, const ev_llm_result_t *res)
{
    double stated = res->rate_limited && res->tokens_limited ? res->stated_per_min : 0;
    if (stated <= 0 && res->ratelimit.limit_tokens > 0)
        stated = (double)res->ratelimit.limit_tokens;
    int64_t cur = ev_tpm_limit(p->tpm);
    if (stated >= 1 && (cur == 0 || (int64_t)stated < cur))
        ev_tpm_set_limit(p->tpm, (int64_t)stated);
    return ev_tpm_limit(p->tpm) > 0;
}

/*
 * Feeds a finished call to the token meter and the adaptive controller and
 * applies the learned rate to the limiter. Returns true for a 429 they
 * absorbed (the rate went down, or the call was released at an older, higher
 * rate; a token 429 with a token limit in force).
 */
static bool learn(ev_router_t *r, provider_t *p, const ev_llm_result_t *res, int64_t released_us,
                  const ev_tpm_ticket_t *tk)
{
    bool absorbed = false;
    if (!res->http_attempted || res->rate_limited)
        ev_tpm_settle(p->tpm, tk, 0, 0);
    else if (res->tokens_in > 0)
        ev_tpm_settle(p->tpm, tk, res->tokens_in, res->tokens_out);
    if (r->cfg->adaptive_limits && learn_tokens(p, res) && res->rate_limited && res->tokens_limited)
        absorbed = true;
    ev_tpm_observe(p->tpm, res->ratelimit.limit_tokens, res->ratelimit.remaining_tokens);
    if (!p->adaptive || !res->http_attempted || (res->rate_limited && res->tokens_limited))
        return absorbed;

    ev_adaptive_signal_t sig = EV_ADAPTIVE_SIGNAL_INIT;
    sig.released_us = released_us;
    sig.ok = res->http_status >= 200 && res->http_status < 500 && !res->rate_limited;
    sig.rate_limited = res->rate_limited && !res->daily_quota && !res->no_quota;
    sig.stated_per_min = res->stated_per_min;
    sig.remaining_requests = res->ratelimit.remaining_requests;
    sig.reset_requests_ms = res->ratelimit.reset_requests_ms;
    double before = ev_limiter_rate_per_s(p->limiter);
    double mine = atomic_load(&p->applied_rate);
    /* The limiter's rate changed under us: another replica's learned rate,
     * shared through the cluster. Learn on from it rather than over it. */
    if (mine > 0 && fabs(before - mine) > 1e-9 * mine)
        ev_adaptive_adopt(p->adaptive, before);
    double rate = ev_adaptive_observe(p->adaptive, &sig, &absorbed);
    ev_limiter_set_rate(p->limiter, rate);
    atomic_store(&p->applied_rate, ev_limiter_rate_per_s(p->limiter));
    if (sig.rate_limited && rate < before * 0.999) {
        char stated[48] = "not stated";
        if (res->stated_per_min > 0)
            snprintf(stated, sizeof(stated), "stated %g per minute", res->stated_per_min);
        ev_log(EV_LOG_INFO, "%s rate lowered after a 429: %.1f -> %.1f calls per minute (%s)",
               ev_provider_name(p->id), before * 60, rate * 60, stated);
    }
    return absorbed;
}

typedef enum { NEXT_RETURN, NEXT_RETRY, NEXT_FALLBACK } next_t;

/* Records what the provider said about `model`; the subscriber logs it. */
static void set_aside(ev_router_t *r, provider_t *p, const char *model, const ev_llm_result_t *res)
{
    char msg[EV_LLM_ERROR_MAX + 64];
    if (res->config_hint)
        snprintf(msg, sizeof(msg), "%s; check %s", res->error, res->config_hint);
    else
        snprintf(msg, sizeof(msg), "%s", res->error);
    ev_availability_mark(r->models, p->id, model, res->model_status, msg);
}

/* One provider's attempts for a check. Returns 0 with a verdict, or a
 * negative code (EV_EBUDGET / EV_ESHUTDOWN end the whole call; anything else
 * means "try the next provider"). */
/* How an answer's text is judged: as one verdict (accept NULL) or by the
 * caller's function. */
typedef struct answer_rule {
    ev_router_accept_fn accept;
    void *ctx;
} answer_rule_t;

static int accept_answer(const answer_rule_t *rule, ev_router_result_t *out, const char *text,
                         char *why, size_t whylen)
{
    if (rule->accept)
        return rule->accept(rule->ctx, text, strlen(text), why, whylen);
    return ev_verdict_parse(&out->verdict, text, strlen(text), why, whylen);
}

static int try_provider(ev_router_t *r, provider_t *p, ev_http_t *http, ev_budget_t *budget,
                        const char *check, const ev_llm_request_t *req, const answer_rule_t *rule,
                        ev_router_result_t *out, const atomic_bool *stop)
{
    int retries = 0, bad_answers = 0;
    const int64_t max_wait_us = (int64_t)r->cfg->retry_max_wait_ms * 1000;
    const char *pname = ev_provider_name(p->id);
    bool first = true;

    check_cooldown(r, p);
    for (;;) {
        if (stop && atomic_load(stop))
            return EV_ESHUTDOWN;
        /* Chosen per attempt: a model set aside meanwhile is skipped. */
        const char *model = ev_router_model(r, p->id, req);
        if (!model[0]) {
            snprintf(out->error, sizeof(out->error), "%s has no usable model for this check",
                     pname);
            return EV_EUNAVAIL;
        }
        if (ev_budget_remaining(budget) <= 0) {
            ev_budget_take(budget); /* counts the refusal */
            snprintf(out->error, sizeof(out->error), "call budget of %d exhausted",
                     ev_budget_limit(budget));
            return EV_EBUDGET;
        }
        if (ev_spend_allow_provider(r->spend, p->id) < 0) {
            snprintf(out->error, sizeof(out->error),
                     "%s calls are held (operator pause, emergency stop or daily spend limit)",
                     pname);
            return EV_EHELD;
        }
        ev_breaker_ticket_t ticket;
        ev_breaker_change_t ch = {0};
        int rc = ev_breaker_allow(p->breaker, &ticket, &ch);
        log_breaker_change(p, &ch);
        if (rc < 0) {
            snprintf(out->error, sizeof(out->error), "%s circuit breaker is open", pname);
            return EV_EOPEN;
        }
        int64_t waited = 0;
        rc = ev_limiter_acquire(p->limiter, &waited, max_wait_us, stop);
        if (rc < 0) {
            ev_breaker_record(p->breaker, &ticket, EV_BREAKER_NEUTRAL, NULL);
            if (rc == EV_ESHUTDOWN)
                return rc;
            snprintf(out->error, sizeof(out->error), "%s rate limit wait exceeds %d ms", pname,
                     r->cfg->retry_max_wait_ms);
            return EV_ELIMIT;
        }
        if (r->stats)
            ev_stats_record_limiter_wait(r->stats, p->id, waited / 1000);
        /* A breaker that opened during the wait (here, or in another replica)
         * stops the call before it is sent; its slot is simply left unused. */
        if (ev_breaker_state(p->breaker) == EV_BREAKER_OPEN) {
            ev_breaker_record(p->breaker, &ticket, EV_BREAKER_NEUTRAL, NULL);
            snprintf(out->error, sizeof(out->error), "%s circuit breaker is open", pname);
            return EV_EOPEN;
        }
        ev_tpm_ticket_t tk = EV_TPM_TICKET_INIT;
        rc = ev_tpm_acquire(p->tpm, estimate_input(p, req), ev_tpm_max_output(req),
                            EV_MAX((int64_t)0, max_wait_us - waited), stop, &tk, NULL);
        if (rc < 0) {
            ev_breaker_record(p->breaker, &ticket, EV_BREAKER_NEUTRAL, NULL);
            if (rc == EV_ESHUTDOWN)
                return rc;
            snprintf(out->error, sizeof(out->error), "%s token limit wait exceeds %d ms", pname,
                     r->cfg->retry_max_wait_ms);
            return EV_ELIMIT;
        }
        int64_t released_us = ev_clock_now_us(r->clock);
        EV_ASSERT(ev_budget_take(budget) == 0);
        if (first)
            ev_retry_budget_note_attempt(p->retry_budget);
        first = false;

        /* The semaphore is held around the HTTP request only. */
        rc = ev_semaphore_acquire(p->sem, -1, stop);
        if (rc < 0) {
            ev_breaker_record(p->breaker, &ticket, EV_BREAKER_NEUTRAL, NULL);
            return EV_ESHUTDOWN;
        }
        /* Asked again now: calls queued at the semaphore while a model was
         * set aside must not each spend a call on it. */
        model = ev_router_model(r, p->id, req);
        if (!model[0]) {
            ev_semaphore_release(p->sem);
            ev_breaker_record(p->breaker, &ticket, EV_BREAKER_NEUTRAL, NULL);
            ev_tpm_settle(p->tpm, &tk, 0, 0);
            ev_budget_give_back(budget);
            snprintf(out->error, sizeof(out->error), "%s has no usable model for this check",
                     pname);
            return EV_EUNAVAIL;
        }
        ev_llm_result_t res;
        rc = ev_provider_call(p->ops, p->cfg, &p->opts, http, model, req, &res, stop);
        ev_semaphore_release(p->sem);

        /* Judge the answer itself before recording: a 200 whose text is not
         * our verdict is a bad answer. */
        bool answer_ok = false;
        char why[160] = "";
        if (res.outcome == EV_LLM_OK) {
            if (accept_answer(rule, out, res.text, why, sizeof(why)) == 0)
                answer_ok = true;
            else {
                res.outcome = EV_LLM_BAD_ANSWER;
                ev_llm_result_set_error(&res, "answer is not the requested verdict: %s", why);
            }
        }
        ev_stats_outcome_t so = stats_outcome(&res, answer_ok);
        if (!res.http_attempted)
            ev_budget_give_back(budget); /* refused before sending: not an attempt */
        if (res.http_attempted) {
            out->http_attempts++;
            out->latency_ms += res.latency_ms;
            out->tokens_in += res.tokens_in;
            out->tokens_out += res.tokens_out;
            ev_budget_record(budget, check, pname, ev_stats_outcome_name(so), res.http_status,
                             res.latency_ms);
            if (r->stats)
                ev_stats_record_call(r->stats, p->id, so, res.latency_ms, res.tokens_in,
                                     res.tokens_out);
            ev_spend_record(r->spend, p->id, res.model ? res.model : ev_router_model(r, p->id, req),
                            ev_budget_event(budget), res.tokens_in, res.tokens_cached,
                            res.tokens_out);
        }
        out->provider = p->id;
        snprintf(out->model, sizeof(out->model), "%s",
                 res.model ? res.model : ev_router_model(r, p->id, req));
        /* A 429 the limits absorbed (they slowed down) says nothing about
         * the provider's health: only persistent ones count. */
        bool absorbed = learn(r, p, &res, released_us, &tk);
        ev_breaker_record(p->breaker, &ticket,
                          absorbed ? EV_BREAKER_NEUTRAL : breaker_outcome(&res), &ch);
        log_breaker_change(p, &ch);

        if (res.rate_limited) {
            /* The whole provider is out of quota, not just this thread. */
            pause_provider(r, p, res.retry_after_ms);
        }

        next_t next = NEXT_FALLBACK;
        int64_t delay_ms = 0;
        switch (res.outcome) {
        case EV_LLM_OK:
            next = NEXT_RETURN;
            break;
        case EV_LLM_BAD_ANSWER:
            if (rc == 0 && bad_answers++ < 1)
                next = NEXT_RETRY;
            break;
        case EV_LLM_RETRY:
            if (rc == EV_ESHUTDOWN || (stop && atomic_load(stop))) {
                ev_llm_result_free(&res);
                return EV_ESHUTDOWN;
            }
            if (retries >= r->cfg->max_retries)
                break;
            /* SPEC §6: it is the server's suggested delay that decides between
             * waiting and falling back; our own backoff (and the jitter on top
             * of a hint) is only clamped to the allowed wait. */
            if (res.retry_after_ms > r->cfg->retry_max_wait_ms) {
                ev_llm_result_set_error(&res,
                                        "%s asked to wait %lld ms (more than RETRY_MAX_WAIT_MS)",
                                        pname, (long long)res.retry_after_ms);
                break;
            }
            delay_ms = ev_backoff_delay_ms(&r->backoff, retries, res.retry_after_ms);
            delay_ms = EV_MIN(delay_ms, (int64_t)r->cfg->retry_max_wait_ms);
            if (ev_breaker_state(p->breaker) == EV_BREAKER_OPEN)
                break;
            if (ev_retry_budget_try_retry(p->retry_budget) < 0) {
                ev_llm_result_set_error(&res, "%s retry budget exhausted", pname);
                break;
            }
            /* Counted here, not by the sleep: full jitter may draw 0 ms. */
            retries++;
            next = NEXT_RETRY;
            break;
        case EV_LLM_FALLBACK:
            if (res.daily_quota || res.no_quota)
                cool_down(r, p, &res);
            break;
        case EV_LLM_FATAL_CONFIG:
            disable_provider(r, p, &res);
            break;
        case EV_LLM_MODEL_UNAVAILABLE:
            /* The model, not this submission: its call is given back and the
             * next model is asked at once, without a retry or a wait. */
            set_aside(r, p, model, &res);
            ev_budget_give_back(budget);
            next = NEXT_RETRY;
            break;
        case EV_LLM_BAD_REQUEST:
        default:
            break;
        }

        if (next == NEXT_RETURN) {
            out->has_verdict = true;
            out->error[0] = '\0';
            ev_llm_result_free(&res);
            return 0;
        }
        snprintf(out->error, sizeof(out->error), "%s: %s", pname,
                 res.error[0] ? res.error : ev_llm_outcome_name(res.outcome));
        ev_log_kv(EV_LOG_INFO,
                  res.outcome == EV_LLM_MODEL_UNAVAILABLE ? "model unavailable, asking the next"
                  : next == NEXT_RETRY                    ? "provider call failed, retrying"
                                                          : "provider call failed",
                  "provider_call", pname, "outcome", ev_llm_outcome_name(res.outcome), "error",
                  out->error, NULL);
        bool new_model = res.outcome == EV_LLM_MODEL_UNAVAILABLE;
        ev_llm_result_free(&res);
        if (next == NEXT_FALLBACK)
            return EV_EUNAVAIL;
        if (new_model)
            continue;
        if (r->stats)
            ev_stats_record_retry(r->stats, p->id);
        if (ev_backoff_sleep(r->clock, delay_ms, stop) < 0)
            return EV_ESHUTDOWN;
    }
}

int ev_router_judge(ev_router_t *r, ev_http_t *http, ev_budget_t *budget, const char *check,
                    const ev_llm_request_t *const req[EV_PROVIDER_COUNT], ev_router_result_t *out,
                    const atomic_bool *stop)
{
    return ev_router_ask(r, http, budget, check, req, NULL, NULL, out, stop);
}

int ev_router_ask(ev_router_t *r, ev_http_t *http, ev_budget_t *budget, const char *check,
                  const ev_llm_request_t *const req[EV_PROVIDER_COUNT], ev_router_accept_fn accept,
                  void *accept_ctx, ev_router_result_t *out, const atomic_bool *stop)
{
    const answer_rule_t rule = {accept, accept_ctx};
    memset(out, 0, sizeof(*out));
    out->provider = -1;
    snprintf(out->error, sizeof(out->error), "%s",
             ev_router_any_usable(r) ? "no provider can serve this check"
                                     : "every provider is disabled by a configuration error "
                                       "(invalid key or model)");
    int last = -1;
    bool held = false;
    for (int k = 0; k < r->cfg->n_provider_order; k++) {
        int i = (int)r->cfg->provider_order[k];
        provider_t *p = &r->p[i];
        /* No request, or no configured model for it (images without vision models). */
        if (!req[i] || !ev_router_usable(r, (ev_provider_id_t)i) ||
            !ev_router_model(r, (ev_provider_id_t)i, req[i])[0])
            continue;
        if (last >= 0 && r->stats)
            ev_stats_record_fallback(r->stats, (ev_provider_id_t)last);
        if (last >= 0)
            ev_log_kv(EV_LOG_INFO, "falling back", "from", ev_provider_name((ev_provider_id_t)last),
                      "to", ev_provider_name(p->id), NULL);
        ev_log_ctx_provider(ev_provider_name(p->id));
        int rc = try_provider(r, p, http, budget, check, req[i], &rule, out, stop);
        ev_log_ctx_provider(NULL);
        if (rc == 0 || rc == EV_EBUDGET || rc == EV_ESHUTDOWN)
            return rc;
        held |= rc == EV_EHELD;
        last = i;
    }
    /* A provider held by its spend limit could answer once the limit lifts:
     * the submission waits for it instead of spending its attempts. */
    return held ? EV_EHELD : EV_EUNAVAIL;
}
