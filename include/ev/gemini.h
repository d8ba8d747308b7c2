/*
 * gemini.h - Google Gemini generateContent client (PROVIDERS.md "Gemini").
 *
 * ev_gemini_call() makes ONE HTTP attempt: POST
 * {base_url}/models/{model}:generateContent with the key in x-goog-api-key,
 * PDF and images as base64 inline_data parts before the text, JSON output
 * requested through generationConfig.responseSchema. It classifies the answer
 * or the failure into an ev_llm_outcome_t and never retries, waits or logs:
 * the router does that.
 *
 * Threads: an ev_gemini_t is immutable after creation and may be shared by
 * every worker; each call uses the caller's own ev_http_t.
 */
#ifndef EV_GEMINI_H
#define EV_GEMINI_H

#include "ev/config.h"
#include "ev/http.h"
#include "ev/provider.h"

#include <stdatomic.h>

/* Gemini's published inline-data limit for a whole request, base64
 * included: 100 MB since January 2026 (it was 20 MB). */
#define EV_GEMINI_MAX_REQUEST_DEFAULT ((size_t)100 * 1000 * 1000)

typedef struct ev_gemini ev_gemini_t;

/*
 * Creates a client from the Gemini provider config. The key (cfg->api_key)
 * is borrowed: cfg must outlive the client. Strings are copied. opts may be
 * NULL (EV_LLM_CLIENT_OPTIONS_INIT). Returns 0, or EV_ECONFIG when there is
 * no key, no model/base URL, or the model name has characters other than
 * [A-Za-z0-9._-] (a leading "models/" is accepted); *out is NULL on failure.
 */
int ev_gemini_new(ev_gemini_t **out, const ev_provider_config_t *cfg,
                  const ev_llm_client_options_t *opts);
void ev_gemini_free(ev_gemini_t *g);

/* The model requests are sent to, and the full URL (static for the
 * client's lifetime; the URL never carries the key). */
const char *ev_gemini_model(const ev_gemini_t *g);
const char *ev_gemini_url(const ev_gemini_t *g);

/*
 * One attempt. `out` need not be initialised (its previous contents are NOT
 * freed); free it with ev_llm_result_free() whatever the return value.
 * Returns 0 when `out` holds a classified outcome (including RETRY/FALLBACK
 * and transport failures; out->http_attempted says whether a request was
 * sent). Returns EV_EINVAL (outcome EV_LLM_BAD_REQUEST, no HTTP) for an
 * unusable request (no text and no media, unsupported MIME type, empty file),
 * or EV_ESHUTDOWN (outcome EV_LLM_RETRY) when *stop became true.
 * A request larger than the request limit gives EV_LLM_FALLBACK with
 * too_large set and no HTTP attempt.
 */
int ev_gemini_call(ev_gemini_t *g, ev_http_t *http, const ev_llm_request_t *req,
                   ev_llm_result_t *out, const atomic_bool *stop);

/* --- Exposed so tests can check the wire format without HTTP. --- */

/* "{base_url}/models/{model}:generateContent" (a trailing '/' of base_url
 * and a leading "models/" of model are dropped). Caller frees. */
char *ev_gemini_build_url(const char *base_url, const char *model);

/* The JSON body for `req` (PROVIDERS.md shape). thinking_budget < 0 omits
 * thinkingConfig; `text_only` drops the media. The media's base64 is written
 * straight into the body (it never passes through json-c). Returns 0 with *out
 * (caller frees) and *out_len (may be NULL), or with *out NULL: EV_EINVAL (no
 * text and no media, unsupported MIME type, empty file), EV_ETOOBIG (the body's
 * size would not fit in a size_t) or EV_ENOMEM (json-c failed). */
int ev_gemini_build_body(char **out, size_t *out_len, const ev_llm_request_t *req,
                         int thinking_budget);

/* Classifies one HTTP response (any status, any body) into `out`, which must
 * have been initialised with ev_llm_result_init(). Sets outcome, http_status,
 * retry_after_ms, the quota flags, text (OK only), finish_reason, tokens,
 * request_id and error. max_wait_ms as in ev_llm_client_options_t. */
void ev_gemini_parse_response(ev_llm_result_t *out, const ev_http_response_t *resp,
                              int64_t max_wait_ms);

#endif
