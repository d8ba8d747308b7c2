/*
 * config.h - the whole runtime configuration, parsed once at start.
 *
 * config.c holds one declarative table {variable, type, default, min, max,
 * flags} and is the only caller of getenv(). ev_config_load() validates every
 * variable of SPEC §3; a bad value fails with one line naming the variable and
 * its accepted range. After start the struct is const and shared read-only by
 * all threads; modules receive their own option structs built from it.
 */
#ifndef EV_CONFIG_H
#define EV_CONFIG_H

#include "ev/log.h"
#include "ev/secret.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    EV_PROVIDER_GEMINI = 0,
    EV_PROVIDER_GROQ = 1,
    EV_PROVIDER_OPENAI_COMPAT = 2, /* optional: any OpenAI-compatible endpoint */
    EV_PROVIDER_COUNT = 3
} ev_provider_id_t;

/* "gemini" / "groq" / "openai_compat". */
const char *ev_provider_name(ev_provider_id_t id);

/* Most models a *_MODELS list may name. */
#define EV_CONFIG_MAX_MODELS 8

typedef struct ev_provider_config {
    ev_provider_id_t id;
    ev_secret_t *api_key; /* NULL: provider not used */
    char *model;          /* the first of `models` (GEMINI_MODEL / GROQ_MODEL alias) */
    char *vision_model;   /* the first of `vision_models`, else `model` */
    char *models[EV_CONFIG_MAX_MODELS]; /* *_MODELS, in order of preference (>= 1) */
    size_t n_models;
    char *vision_models[EV_CONFIG_MAX_MODELS]; /* *_VISION_MODELS (Gemini: its models) */
    size_t n_vision_models;                    /* 0: this provider sends no images */
    char *models_spec;    /* raw *_MODELS as set, or NULL (parsed into `models`) */
    char *vision_spec;    /* raw *_VISION_MODELS, or NULL */
    char *model_alias;    /* raw *_MODEL, or NULL */
    char *vision_alias;   /* raw *_VISION_MODEL, or NULL */
    char *base_url;       /* no trailing slash */
    int max_concurrent;   /* *_MAX_CONCURRENT */
    double rpm_limit;     /* *_RPM_LIMIT (0 = unlimited) */
    int rpd_limit;        /* *_RPD_LIMIT: requests per provider day, cluster-wide (0 = none) */
    double safety_factor; /* (0,1] */
    bool jitter_enabled;
    double jitter_min, jitter_max;
    double cb_threshold; /* error rate in (0,1] that opens the breaker */
    int cb_window_s;
    int cb_cooldown_s;
    int cb_min_calls;
    int thinking_budget;       /* Gemini only: generationConfig.thinkingConfig; -1 = omit */
    int64_t max_request_bytes; /* *_MAX_REQUEST_BYTES; 0: the provider's published limit */
    int tpm_limit;             /* *_TPM_LIMIT: input + output tokens per minute; 0 = none */
} ev_provider_config_t;

typedef struct ev_config {
    char *database_url;

    int max_workers; /* DEFAULT_MAX_WORKERS */
    int worker_stagger_ms;
    int stagger_min_ms, stagger_max_ms;
    int poll_interval_ms;
    int lease_seconds;
    int max_attempts;
    int requeue_base_ms;   /* REQUEUE_BASE_MS: first submission-level backoff */
    int requeue_max_ms;    /* REQUEUE_MAX_MS: its cap */
    int shutdown_grace_ms; /* SHUTDOWN_GRACE_MS: in-flight time allowed after SIGTERM */

    ev_provider_config_t providers[EV_PROVIDER_COUNT];
    /* PROVIDER_ORDER: the chain, first asked first; configured providers the
     * variable does not name follow in id order. */
    ev_provider_id_t provider_order[EV_PROVIDER_COUNT];
    int n_provider_order;
    char *provider_order_spec; /* raw PROVIDER_ORDER */
    bool preflight;            /* PREFLIGHT: check every configured model at start */
    int http_timeout_ms;

    int max_retries;
    int retry_base_ms;
    int retry_max_ms;
    int retry_max_wait_ms;
    int provider_max_pause_ms; /* PROVIDER_MAX_PAUSE_MS: cap on a provider-wide 429 pause */
    double retry_budget_ratio;

    int max_api_calls_per_submission;
    char *check_mode;     /* CHECK_MODE: "separate" (one call per check) or "combined"
                             (the checks a submission still needs in one call) */
    bool adaptive_limits; /* ADAPTIVE_LIMITS: the RPM limits are ceilings, the real
                             limit is learned from the providers' signals */

    int64_t pdf_max_bytes;
    int pdf_max_pages;
    int64_t image_max_bytes;
    int max_images;
    char *upload_dir;            /* NULL: storage paths refused */
    int parse_cpu_ms;            /* PARSE_CPU_MS: CPU time of one sandboxed parse */
    int parse_memory_mb;         /* PARSE_MEMORY_MB: memory one parse may add */
    int parse_timeout_ms;        /* PARSE_TIMEOUT_MS: wall clock of one parse */
    double image_max_megapixels; /* IMAGE_MAX_MEGAPIXELS: from the image header */
    bool image_split_requests;   /* IMAGE_SPLIT_REQUESTS: else too many bytes fail locally */

    bool cluster_enabled;     /* CLUSTER_COORDINATION: limits shared by all replicas */
    int cluster_heartbeat_ms; /* CLUSTER_HEARTBEAT_MS */
    int cluster_expire_s;     /* CLUSTER_REPLICA_EXPIRE_S */
    int cluster_keepalive_s;  /* CLUSTER_KEEPALIVE_S */

    char *stats_addr;
    int stats_port;

    /* The organisers' API (api_server.h) and its webhooks (webhook.h). */
    bool api_enabled;           /* API_ENABLED */
    char *api_addr;             /* API_ADDR */
    int api_port;               /* API_PORT; 0 = any free port */
    int api_uploads_per_minute; /* API_UPLOADS_PER_MINUTE per token; 0 = no limit */
    int api_upload_burst;       /* API_UPLOAD_BURST */
    int api_idle_timeout_s;     /* API_IDLE_TIMEOUT_S: a silent connection is closed */
    bool webhook_allow_private; /* WEBHOOK_ALLOW_PRIVATE */
    int webhook_timeout_ms;     /* WEBHOOK_TIMEOUT_MS per delivery attempt */
    int webhook_retry_base_ms;  /* WEBHOOK_RETRY_BASE_MS */
    int webhook_retry_max_ms;   /* WEBHOOK_RETRY_MAX_MS */
    int webhook_max_age_s;      /* WEBHOOK_MAX_AGE_S: then the delivery is failed */

    ev_log_level_t log_level;

    /* Operator console. */
    double daily_spend_limit_usd; /* per provider and provider day; 0: none */
    char *model_prices;           /* MODEL_PRICES overrides; NULL: built-in table */
    int hold_retry_ms;            /* a held submission is tried again after this */
} ev_config_t;

/*
 * Reads the environment through `getenv_fn` (pass NULL for getenv; tests pass
 * their own lookup). On success *out is a new config (free with
 * ev_config_free) and 0 is returned. On a bad value returns EV_ECONFIG, *out
 * is NULL and `err` (if non-NULL, size errlen) holds one line such as
 * "GEMINI_RPM_LIMIT: 'abc' is not a number (accepted: 0 to 100000)".
 */
typedef const char *(*ev_getenv_fn)(const char *name, void *ctx);
int ev_config_load(ev_config_t **out, ev_getenv_fn getenv_fn, void *ctx, char *err, size_t errlen);
void ev_config_free(ev_config_t *cfg);

/* Logs the effective configuration (one info line, secrets masked). */
void ev_config_log(const ev_config_t *cfg);

/*
 * The table's variables, for documentation checks: the name of the i-th
 * variable, or NULL past the last. *file_variant (may be NULL) is set when
 * NAME_FILE is accepted too (secrets and DATABASE_URL). Thread-safe.
 */
const char *ev_config_var_name(size_t i, bool *file_variant);
/* For variable i of the table: true when it is a number, with the smallest
 * and largest value it accepts (tests load both ends and build the service
 * from them). False for other types and past the end. */
bool ev_config_var_range(size_t i, double *min, double *max);

/* True when at least one provider has a key. */
bool ev_config_any_provider(const ev_config_t *cfg);

#endif
