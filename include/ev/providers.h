/*
 * providers.h - one constant operations table per LLM provider.
 *
 * Everything that differs between providers lives in an ev_provider_ops_t
 * under src/providers/ (the pattern of curl's struct Curl_ssl and redis's
 * ConnectionType): its name, what it can take (inline PDF, images, how many,
 * how large a request), which configured models answer a request, how a
 * request is written and an answer classified, when a daily quota comes
 * back, and how to ask about a model without spending generation quota.
 * The router and the pipeline see only this table; neither names a provider.
 *
 * ev_provider_call() is the generic single attempt every provider shares:
 * local refusals (media the provider cannot take, size limits) before any
 * HTTP, then the body, one POST and the classification. Never retries,
 * waits or logs.
 *
 * Threads: the tables are immutable; every function here is reentrant and
 * uses the caller's own ev_http_t.
 */
#ifndef EV_PROVIDERS_H
#define EV_PROVIDERS_H

#include "ev/config.h"
#include "ev/http.h"
#include "ev/provider.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Capability flags. */
#define EV_PROVIDER_CAP_INLINE_PDF 0x1u    /* PDF bytes can be sent; else its extracted text */
#define EV_PROVIDER_CAP_IMAGES 0x2u        /* images can be sent (to the vision models) */
#define EV_PROVIDER_CAP_VISION_MODELS 0x4u /* images go to a separate list of vision models */

typedef struct ev_provider_ops {
    ev_provider_id_t id;
    const char *name;        /* "gemini": logs, stats, PROVIDER_ORDER */
    const char *env;         /* "GEMINI": prefix of its variables, for operator messages */
    unsigned caps;           /* EV_PROVIDER_CAP_* */
    int max_images;          /* images per request it accepts; 0: no limit of its own */
    size_t max_request;      /* published request-size limit, base64 included */
    bool limit_is_media;     /* the size limit applies only to requests carrying media */
    const char *auth_prefix; /* the header line before the key */
    /* The image types it accepts (NULL-terminated); every image the local
     * checks accept goes to a provider that takes them all. */
    const char *const *image_types;
    int image_tokens;    /* input tokens billed per image (an estimate, high side) */
    int pdf_page_tokens; /* input tokens billed per inline PDF page */

    /* The URL of one generation call to `model` (never carries the key). */
    char *(*call_url)(const char *base_url, const char *model);
    /* The request body for `model` (contract of ev_gemini_build_body). */
    int (*build_body)(char **out, size_t *out_len, const ev_llm_request_t *req, const char *model,
                      const ev_provider_config_t *cfg);
    /* Classifies one answer into an initialised result. */
    ev_llm_parse_fn parse_response;
    /* Wall-clock microseconds when an exhausted daily quota returns, from
     * the answer that said so and the current wall time. */
    int64_t (*quota_reset_us)(const ev_llm_result_t *res, int64_t wall_us);
    /* The model-metadata URL (a GET that spends no generation quota). */
    char *(*model_info_url)(const char *base_url, const char *model);
    /* What that GET says about `model`; `msg` gets the provider's words. */
    ev_model_status_t (*parse_model_info)(const ev_http_response_t *resp, const char *model,
                                          char *msg, size_t msglen);
} ev_provider_ops_t;

extern const ev_provider_ops_t ev_provider_gemini;
extern const ev_provider_ops_t ev_provider_groq;
extern const ev_provider_ops_t ev_provider_openai_compat;

/* The table of provider `id` (never NULL for a valid id). */
const ev_provider_ops_t *ev_providers_get(ev_provider_id_t id);

/* The table named `name` ("gemini", "groq", "openai_compat"), or NULL. */
const ev_provider_ops_t *ev_providers_find(const char *name);

/* Whether the provider can be sent an image of type `mime` (false for a
 * provider without images). */
bool ev_provider_accepts_image(const ev_provider_ops_t *ops, const char *mime);

/* Whether `req` carries media the provider would be sent (not text_only). */
bool ev_provider_req_has_media(const ev_llm_request_t *req);

/* The configured models that may answer `req`, in order of preference:
 * the vision list when the request carries images and the provider keeps
 * one, else the model list. *n is 0 when none may (e.g. images for a
 * provider configured without vision models). Borrowed from cfg. */
char *const *ev_provider_models_for(const ev_provider_ops_t *ops, const ev_provider_config_t *cfg,
                                    const ev_llm_request_t *req, size_t *n);

/*
 * One attempt of `req` to `model`. `out` need not be initialised (its old
 * contents are not freed); free it with ev_llm_result_free(). Returns 0 when
 * `out` holds a classified outcome (including too-large refusals made before
 * any HTTP: FALLBACK with too_large and http_attempted false), EV_EINVAL
 * (BAD_REQUEST, no HTTP) for media the provider cannot take or an empty
 * request, or EV_ESHUTDOWN. opts->max_request_bytes / max_images of 0 mean
 * the table's limits. Every string of `out` is scrubbed against the key.
 */
int ev_provider_call(const ev_provider_ops_t *ops, const ev_provider_config_t *cfg,
                     const ev_llm_client_options_t *opts, ev_http_t *http, const char *model,
                     const ev_llm_request_t *req, ev_llm_result_t *out, const atomic_bool *stop);

/*
 * Asks the provider's model-metadata endpoint about `model` (one GET, no
 * generation quota). Returns the status; `msg` (size msglen) gets a short
 * explanation in the provider's words, never the key. A transport failure,
 * a 5xx or a 429 gives EV_MODEL_UNCHECKED.
 */
ev_model_status_t ev_provider_check_model(const ev_provider_ops_t *ops,
                                          const ev_provider_config_t *cfg, ev_http_t *http,
                                          int timeout_ms, const char *model, char *msg,
                                          size_t msglen);

/* Pieces shared by the OpenAI-shaped providers (Groq, OpenAI-compatible):
 * POST {base}/chat/completions, GET {base}/models. */
char *ev_provider_openai_call_url(const char *base_url, const char *model);
/* The image types an OpenAI-shaped data URL may carry (no HEIC/HEIF). */
extern const char *const ev_provider_openai_image_types[];
int ev_provider_openai_body(char **out, size_t *out_len, const ev_llm_request_t *req,
                            const char *model, const ev_provider_config_t *cfg);
int64_t ev_provider_openai_quota_reset(const ev_llm_result_t *res, int64_t wall_us);
char *ev_provider_openai_models_url(const char *base_url, const char *model);
ev_model_status_t ev_provider_openai_model_info(const ev_http_response_t *resp, const char *model,
                                                char *msg, size_t msglen);

/* Wall-clock microseconds of the next midnight in US Pacific time after
 * `wall_us` (DST by the US rule): when Gemini's daily quotas reset.
 * Exposed for tests. */
int64_t ev_gemini_next_pacific_midnight(int64_t wall_us);

#endif
