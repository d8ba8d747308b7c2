/*
 * groq.h - Groq chat-completions client (PROVIDERS.md "Groq").
 *
 * ev_groq_call() makes ONE HTTP attempt: POST {base_url}/chat/completions
 * (OpenAI-compatible) with "Authorization: Bearer KEY", json_object response
 * format, images as data URLs for the vision model. Groq takes no PDF: the
 * caller sends the PDF's extracted text (ev_llm_request_t.pdf_text); a PDF
 * media part is refused with EV_EINVAL before any HTTP. Groq's published
 * vision limits (images per request, base64 request size) are enforced before
 * sending: a request beyond them is a FALLBACK with too_large and no HTTP
 * attempt. It classifies the result and never retries, waits or logs.
 *
 * Threads: an ev_groq_t is immutable after creation and may be shared by
 * every worker; each call uses the caller's own ev_http_t.
 */
#ifndef EV_GROQ_H
#define EV_GROQ_H

#include "ev/config.h"
#include "ev/http.h"
#include "ev/provider.h"

#include <stdatomic.h>

/* Groq's published limits (defaults of ev_llm_client_options_t's 0). */
#define EV_GROQ_MAX_REQUEST_DEFAULT ((size_t)4 * 1000 * 1000)
#define EV_GROQ_MAX_IMAGES_DEFAULT 5

typedef struct ev_groq ev_groq_t;

/*
 * Creates a client from the Groq provider config: cfg->model is the text
 * model (GROQ_MODEL), cfg->vision_model the one used when images are sent
 * (GROQ_VISION_MODEL; NULL: cfg->model). The key is borrowed: cfg must
 * outlive the client. opts may be NULL. Returns 0 or EV_ECONFIG (no key,
 * model or base URL); *out is NULL on failure.
 */
int ev_groq_new(ev_groq_t **out, const ev_provider_config_t *cfg,
                const ev_llm_client_options_t *opts);
void ev_groq_free(ev_groq_t *g);

/* The full URL requests go to (never carries the key). */
const char *ev_groq_url(const ev_groq_t *g);

/* The model a request would be sent to: the vision model iff it carries
 * images (and is not text_only). Static for the client's lifetime. */
const char *ev_groq_model_for(const ev_groq_t *g, const ev_llm_request_t *req);

/*
 * One attempt; same contract as ev_gemini_call(). Returns 0 with a
 * classified outcome, EV_EINVAL (outcome EV_LLM_BAD_REQUEST, no HTTP) for a
 * PDF media part, a non-image media part or a request with no text, or
 * EV_ESHUTDOWN when *stop became true. `http` is not touched when the call
 * is refused before sending (tests pass NULL to prove it).
 */
int ev_groq_call(ev_groq_t *g, ev_http_t *http, const ev_llm_request_t *req, ev_llm_result_t *out,
                 const atomic_bool *stop);

/* --- Exposed so tests can check the wire format without HTTP. --- */

/* "{base_url}/chat/completions". Caller frees. */
char *ev_groq_build_url(const char *base_url);

/*
 * The JSON body for `req` sent to `model`. The system message is
 * system_prompt plus, unless it already contains the word "json",
 * ev_llm_verdict_instruction(). The user content is a plain string when no
 * image is sent (text models accept only strings) and otherwise an array:
 * the text part, then one image_url part per image. Returns 0 with *out
 * (caller frees) and *out_len (may be NULL), or with *out NULL: EV_EINVAL
 * (PDF or non-image media, empty file, no text and no image), EV_ETOOBIG (the
 * body's size would not fit in a size_t) or EV_ENOMEM (json-c failed). The
 * images' base64 is written straight into the body (never through json-c).
 */
int ev_groq_build_body(char **out, size_t *out_len, const ev_llm_request_t *req, const char *model);

/* Classifies one HTTP response (any status, any body, its headers) into
 * `out` (initialised with ev_llm_result_init()), including the rate-limit
 * headers. max_wait_ms as in ev_llm_client_options_t. */
void ev_groq_parse_response(ev_llm_result_t *out, const ev_http_response_t *resp,
                            int64_t max_wait_ms);

#endif
