/*
 * router.h - the call path of SPEC §6: one verdict from the first provider
 * that can give it.
 *
 * For each provider in PROVIDER_ORDER that is configured, not disabled,
 * given a request for this check and configured with a model for it:
 *
 *   budget left? -> breaker allow (OPEN: fall back) -> limiter slot
 *   (a wait longer than RETRY_MAX_WAIT_MS: fall back; the breaker opened
 *   meanwhile: fall back) -> budget take ->
 *   semaphore held around the HTTP attempt only -> record the outcome in the
 *   breaker, the limiter (a 429 pauses the whole provider), the stats and the
 *   budget history.
 *
 * Retryable outcomes are retried up to MAX_RETRIES times per provider with
 * full-jitter backoff never shorter than the server's hint, while the
 * breaker still admits calls and the provider's retry budget allows; a hint
 * longer than RETRY_MAX_WAIT_MS falls back at once. A bad answer (blocked,
 * truncated, not our JSON) is asked again once on the same provider. A daily
 * quota cools the provider down until its table says the quota returns
 * (Gemini: midnight Pacific; Groq: the reset it announces); an invalid key
 * disables it for the life of the process (one loud log line, flagged in
 * stats). The router never names a provider: everything that differs is in
 * its ev_provider_ops_t (providers.h).
 *
 * The router is shared by every worker: its per-provider state (client,
 * semaphore, limiter, breaker, retry budget) is thread-safe; each call uses
 * the caller's own ev_http_t and ev_budget_t. Lock order: the router itself
 * holds no lock; the primitives it calls take only their own.
 */
#ifndef EV_ROUTER_H
#define EV_ROUTER_H

#include "ev/budget.h"
#include "ev/clock.h"
#include "ev/config.h"
#include "ev/http.h"
#include "ev/provider.h"
#include "ev/verdict.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct ev_stats;
typedef struct ev_router ev_router_t;

/* Creates the per-provider state for every provider with a key. `cfg` must
 * outlive the router; `stats` may be NULL; `clock` NULL means the system
 * clock. Returns 0, or EV_ECONFIG / EV_EINVAL with *out NULL. */
int ev_router_new(ev_router_t **out, const ev_config_t *cfg, struct ev_stats *stats,
                  const ev_clock_t *clock);
void ev_router_free(ev_router_t *r);

/* Spend accounting and daily limits (spend.h) for every later call; NULL:
 * none. Set before the workers start; `spend` must outlive the router. */
struct ev_spend;
void ev_router_set_spend(ev_router_t *r, struct ev_spend *spend);

/* Configured (has a key) and not disabled by a fatal configuration error. */
bool ev_router_usable(ev_router_t *r, ev_provider_id_t p);

/* True while at least one provider is usable. */
bool ev_router_any_usable(ev_router_t *r);

/* The models set aside so far (thread-safe): serve's preflight marks what it
 * finds there, and a cluster coordinator may subscribe to it and replay
 * other replicas' marks. Owned by the router. */
struct ev_availability *ev_router_availability(ev_router_t *r);

/* True while every check (theme, pdf, image) has a usable provider with a
 * model not set aside: what /readyz reports besides the database. */
bool ev_router_ready(ev_router_t *r);

/* The model a request to provider p would name now: the first of its list
 * not set aside, or "" when none is left. */
const char *ev_router_model(ev_router_t *r, ev_provider_id_t p, const ev_llm_request_t *req);

/* What one check's call path produced. */
typedef struct ev_router_result {
    bool has_verdict;
    ev_verdict_t verdict; /* valid when has_verdict */
    int provider;         /* ev_provider_id_t that answered, or the last tried; -1 none */
    char model[128];
    int http_attempts;  /* HTTP attempts made for this check (all providers) */
    int64_t latency_ms; /* summed HTTP time */
    int64_t tokens_in, tokens_out;
    char error[256]; /* why there is no verdict ("" when has_verdict) */
} ev_router_result_t;

/*
 * Runs the call path for one check. req[p] is the request for provider p,
 * or NULL when p cannot serve this check. `check` names the check in the
 * budget history and logs. Returns:
 *   0            out->verdict holds the model's verdict;
 *   EV_EBUDGET   the submission's call budget ran out first;
 *   EV_EHELD     a provider that could answer is held by its daily spend
 *                limit (the submission should wait, not spend an attempt);
 *   EV_EUNAVAIL  no provider could answer (out->error says why);
 *   EV_ESHUTDOWN *stop became true.
 */
int ev_router_judge(ev_router_t *r, ev_http_t *http, ev_budget_t *budget, const char *check,
                    const ev_llm_request_t *const req[EV_PROVIDER_COUNT], ev_router_result_t *out,
                    const atomic_bool *stop);

/* Judges an answer's text (len bytes) for ev_router_ask: returns 0 when it
 * is usable (the function keeps what it needs in ctx), or EV_EPARSE with
 * `why` (whylen bytes) saying what is wrong; the router then treats it as a
 * bad answer (asked again once). Called on the caller's thread, once per
 * answer received. */
typedef int (*ev_router_accept_fn)(void *ctx, const char *text, size_t len, char *why,
                                   size_t whylen);

/* As ev_router_judge, but the answer is judged by `accept` instead of being
 * parsed as one verdict: out->has_verdict then means "an answer was
 * accepted" and out->verdict stays empty. `accept` NULL is ev_router_judge. */
int ev_router_ask(ev_router_t *r, ev_http_t *http, ev_budget_t *budget, const char *check,
                  const ev_llm_request_t *const req[EV_PROVIDER_COUNT], ev_router_accept_fn accept,
                  void *accept_ctx, ev_router_result_t *out, const atomic_bool *stop);

/* Makes every configured provider's limits, breaker and disabling
 * cluster-wide through `c` (cluster.h), which must outlive the router's use
 * of it. Call after ev_router_new, before any worker runs. Returns 0 or the
 * error of ev_cluster_attach. */
struct ev_cluster;
int ev_router_attach_cluster(ev_router_t *r, struct ev_cluster *c);

#endif
