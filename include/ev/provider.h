/*
 * provider.h - types shared by the LLM provider clients (gemini.h, groq.h).
 *
 * A client makes exactly ONE HTTP attempt per call and classifies what came
 * back into an ev_llm_outcome_t; the router owns retries, limiters,
 * semaphores, breakers and the call budget. The request is provider-neutral:
 * the caller says what to send (for Groq, the PDF's extracted text instead of
 * the PDF bytes), the client turns it into its wire format (PROVIDERS.md).
 *
 * Every check asks the model for the same JSON verdict
 * {"valid": bool, "score": number 0..1, "reason": string} (SPEC §5);
 * ev_llm_verdict_fields describes it so each client can request it in its own
 * way (Gemini: responseSchema; Groq: json_object mode + an instruction).
 */
#ifndef EV_PROVIDER_H
#define EV_PROVIDER_H

#include "ev/http.h"
#include "ev/secret.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;

/* What the router should do with a call's result. */
typedef enum {
    EV_LLM_OK = 0,            /* `text` holds the model's answer (still to be validated) */
    EV_LLM_RETRY,             /* transient: 429 per-minute, 5xx, 498, timeout, connection error */
    EV_LLM_FALLBACK,          /* this provider cannot serve it now: daily quota, no quota, request
                                 too large, or a server delay longer than the allowed wait */
    EV_LLM_FATAL_CONFIG,      /* invalid key, 401/403/404, bad model or URL: fix the config */
    EV_LLM_BAD_ANSWER,        /* 200 without a usable answer: blocked, SAFETY..., truncated,
                                 empty, not JSON, Groq json_validate_failed (worth one retry) */
    EV_LLM_BAD_REQUEST,       /* malformed request (400 INVALID_ARGUMENT): never retried */
    EV_LLM_MODEL_UNAVAILABLE, /* this model cannot answer (unknown, retired, or it rejects
                                 our configuration, e.g. the thinking budget); the same
                                 provider's next model may: `model_status` says which */
} ev_llm_outcome_t;

/* "ok", "retry", "fallback", "fatal_config", "bad_answer", "bad_request",
 * "model_unavailable". */
const char *ev_llm_outcome_name(ev_llm_outcome_t o);

/* What a provider says about one model (an answer to a call, or to the
 * model-metadata endpoint). */
typedef enum {
    EV_MODEL_AVAILABLE = 0,
    EV_MODEL_UNKNOWN,      /* the provider does not know it (typo, or retired without trace) */
    EV_MODEL_RETIRED,      /* the provider says it was decommissioned */
    EV_MODEL_UNUSABLE,     /* it exists but rejects our configuration on every call */
    EV_MODEL_KEY_REJECTED, /* the key was refused: nothing is known about the model */
    EV_MODEL_UNCHECKED,    /* no usable answer (timeout, 5xx, 429): unknown, assume usable */
} ev_model_status_t;

/* "available", "unknown", "retired", "unusable", "key rejected", "unchecked". */
const char *ev_model_status_name(ev_model_status_t s);

/* One file sent to the model: a PDF ("application/pdf") or an image
 * ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif").
 * Borrowed for the duration of the call. */
typedef struct ev_llm_media {
    const char *mime;
    const unsigned char *bytes;
    size_t len;
} ev_llm_media_t;

/* Default for ev_llm_request_t.max_output_tokens <= 0. */
#define EV_LLM_DEFAULT_MAX_OUTPUT_TOKENS 1024

/* A provider-neutral request. All pointers are borrowed for the call. */
typedef struct ev_llm_request {
    const char *system_prompt;   /* may be NULL */
    const char *user_text;       /* the question; required unless media or pdf_text is given */
    const ev_llm_media_t *media; /* `media_count` files, sent before the text */
    size_t media_count;
    bool text_only;        /* ignore `media` entirely (text checks); Groq then
                              uses its text model */
    const char *pdf_text;  /* NULL, or the PDF's extracted text: sent as text after
                              user_text (what Groq gets instead of PDF bytes) */
    int max_output_tokens; /* <= 0: EV_LLM_DEFAULT_MAX_OUTPUT_TOKENS */
    /* NULL: the answer is one verdict object. Otherwise the answer is one
     * object with these `answer_key_count` keys, each holding a verdict
     * object (several checks asked in one call); a provider that constrains
     * its output to a schema asks for exactly that shape. */
    const char *const *answer_keys;
    size_t answer_key_count;
} ev_llm_request_t;

/* Options for a client, built by the caller from the config. */
typedef struct ev_llm_client_options {
    int timeout_ms;            /* HTTP_TIMEOUT_MS: total time of one HTTP attempt */
    int connect_timeout_ms;    /* <= 0 or > timeout_ms: timeout_ms */
    int64_t max_wait_ms;       /* RETRY_MAX_WAIT_MS: a longer server-suggested delay
                                  turns RETRY into FALLBACK; <= 0: no limit */
    size_t max_response_bytes; /* 0: EV_HTTP_MAX_RESPONSE_DEFAULT */
    size_t max_request_bytes;  /* 0: the provider's published limit (Gemini 100 MB for
                                  any request, Groq 4 MB for a request with images) */
    int max_images;            /* 0: the provider's limit (Gemini none, Groq 5) */
} ev_llm_client_options_t;

#define EV_LLM_CLIENT_OPTIONS_INIT                                                                 \
    {                                                                                              \
        .timeout_ms = 60000, .connect_timeout_ms = 10000, .max_wait_ms = 10000,                    \
        .max_response_bytes = 0, .max_request_bytes = 0, .max_images = 0                           \
    }

/* Groq's rate-limit headers (PROVIDERS.md); -1 when absent or unparsable.
 * requests are counted per DAY, tokens per MINUTE. */
typedef struct ev_llm_ratelimit {
    int64_t limit_requests;
    int64_t remaining_requests;
    int64_t limit_tokens;
    int64_t remaining_tokens;
    int64_t reset_requests_ms;
    int64_t reset_tokens_ms;
} ev_llm_ratelimit_t;

#define EV_LLM_ERROR_MAX 200

/*
 * The result of one call. Strings are owned by the result: free them with
 * ev_llm_result_free(). The clients never put a secret in any field; the
 * call functions additionally scrub every string against the key.
 */
typedef struct ev_llm_result {
    ev_llm_outcome_t outcome;
    int err;                        /* 0, or the transport/local code behind the outcome:
                                       EV_ETIMEOUT, EV_EHTTP, EV_ETOOBIG, EV_ESHUTDOWN, EV_EINVAL,
                                       EV_ECONFIG, EV_EPARSE */
    bool http_attempted;            /* an HTTP request was started: it counts against the budget */
    int http_status;                /* 0 when no HTTP response was received */
    int64_t retry_after_ms;         /* server-suggested delay, -1 when none */
    bool rate_limited;              /* HTTP 429 */
    bool daily_quota;               /* a daily quota is exhausted: retrying today is pointless */
    bool no_quota;                  /* the key has no quota at all for this model (limit 0) */
    bool too_large;                 /* the request is too large for this provider/model */
    bool tokens_limited;            /* the 429 was for tokens per minute, not requests */
    double stated_per_min;          /* the per-minute limit a 429 stated (Gemini QuotaFailure
                                       quotaValue, Groq "Limit N"): requests, or tokens when
                                       tokens_limited; 0 when not stated */
    ev_model_status_t model_status; /* with EV_LLM_MODEL_UNAVAILABLE: why */
    const char *config_hint; /* static: the variable to fix with an unusable model, or NULL */
    char *text;              /* joined answer text; set only when outcome == EV_LLM_OK */
    char *finish_reason;     /* provider's finish/block reason as sent, or NULL */
    int64_t tokens_in;       /* prompt tokens, 0 when unknown */
    int64_t tokens_out;      /* output tokens (Gemini: candidates + thoughts) */
    int64_t tokens_cached;   /* part of tokens_in served from the provider's cache */
    char *request_id;        /* Gemini responseId / Groq x_groq.id, or NULL */
    char *model;             /* the model the request was sent to */
    int64_t latency_ms;      /* time spent in HTTP (0 when none) */
    ev_llm_ratelimit_t ratelimit;
    char error[EV_LLM_ERROR_MAX]; /* short description, "" when outcome == EV_LLM_OK */
} ev_llm_result_t;

/* Sets every field to "nothing known" (retry_after_ms and ratelimit -1). */
void ev_llm_result_init(ev_llm_result_t *r);
/* Frees the owned strings and re-initialises; accepts NULL. */
void ev_llm_result_free(ev_llm_result_t *r);

/* printf into r->error (truncated to fit). */
void ev_llm_result_set_error(ev_llm_result_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Removes any trace of `key` from the result: a string field containing it
 * is dropped (the error is replaced by a neutral text and a text answer turns
 * the outcome into EV_LLM_BAD_ANSWER). Returns how many fields were touched.
 * The clients call it before returning; exposed for tests. */
int ev_llm_result_scrub(ev_llm_result_t *r, const ev_secret_t *key);

/* Parses a provider's body (len bytes, need not be NUL-terminated) as JSON,
 * nesting at most 64 deep; trailing non-blank bytes make it invalid. A
 * one-element array [x] is unwrapped to x (Gemini sometimes wraps errors).
 * Returns a new reference (release with json_object_put) or NULL. */
struct json_object *ev_llm_json_parse(const char *body, size_t len);

/* The outcome an HTTP error status implies by itself, for both providers
 * (their 400s and 429s need the body and are classified by each client):
 * 401/403/404 and redirects FATAL_CONFIG, 413 FALLBACK with *too_large set,
 * 408/498/499/5xx RETRY, other 4xx BAD_REQUEST. */
ev_llm_outcome_t ev_llm_outcome_for_status(int status, bool *too_large);

/* Tolerant readers of an untrusted provider body (NULL/0 when absent or of
 * another type): a member of an object, a string member, an integer member
 * (numbers or proto3 digit strings), and a token count (an integer clamped
 * to 0..10^12 so that sums cannot overflow). */
struct json_object *ev_llm_json_get(struct json_object *o, const char *key);
const char *ev_llm_json_str(struct json_object *o, const char *key);
int64_t ev_llm_json_int(struct json_object *o, const char *key);
int64_t ev_llm_json_count(struct json_object *o, const char *key);

/* Case-insensitive substring test; false for NULL arguments. */
bool ev_llm_contains_ci(const char *hay, const char *needle);

/* Copies at most n-1 bytes of src (src_len bytes, NUL ends it early) into
 * dst for an error message: control characters become spaces, runs of blanks
 * collapse, "..." marks a cut. dst is always NUL-terminated (n > 0). */
void ev_llm_snippet(char *dst, size_t n, const char *src, size_t src_len);

/* Classifies one HTTP response of a provider (ev_gemini_parse_response,
 * ev_groq_parse_response). */
typedef void (*ev_llm_parse_fn)(ev_llm_result_t *out, const ev_http_response_t *resp,
                                int64_t max_wait_ms);

/*
 * The common tail of the clients' call functions: POSTs a prepared body to
 * `url` with the key in the header `secret_prefix` + key, then classifies the
 * answer with `parse` (or the transport failure) into `out`, which the caller
 * initialised. Returns 0 (out holds the outcome), EV_EINVAL (no HTTP handle;
 * nothing sent) or EV_ESHUTDOWN (*stop was or became true). The caller
 * scrubs `out` against the key.
 */
int ev_llm_send(ev_http_t *http, const char *url, const char *body, size_t body_len,
                const ev_secret_t *key, const char *secret_prefix,
                const ev_llm_client_options_t *opts, ev_llm_parse_fn parse, ev_llm_result_t *out,
                const atomic_bool *stop);

/* Fills `r` for an HTTP attempt that got no usable response: rc is what
 * ev_http_post returned (EV_ETIMEOUT, EV_EHTTP -> RETRY; EV_ETOOBIG ->
 * BAD_ANSWER; EV_ECONFIG -> FATAL_CONFIG; EV_ESHUTDOWN, EV_ENOMEM, others ->
 * RETRY). `detail` is the transport's short text (may be NULL). */
void ev_llm_result_transport(ev_llm_result_t *r, int rc, const char *detail);

/* A RETRY whose server-suggested delay exceeds max_wait_ms (> 0) becomes a
 * FALLBACK (waiting that long is not allowed); the error says so. */
void ev_llm_result_apply_max_wait(ev_llm_result_t *r, int64_t max_wait_ms);

/* A RETRY the server marked `x-should-retry: false` becomes a FALLBACK: the
 * provider says that repeating this request cannot succeed. Every parser
 * calls it after classifying. */
void ev_llm_result_apply_should_retry(ev_llm_result_t *r, const ev_http_response_t *resp);

/* The verdict every check asks for. */
typedef enum { EV_LLM_FIELD_BOOLEAN, EV_LLM_FIELD_NUMBER, EV_LLM_FIELD_STRING } ev_llm_field_type_t;

typedef struct ev_llm_field {
    const char *name;
    ev_llm_field_type_t type;
} ev_llm_field_t;

/* {"valid": BOOLEAN, "score": NUMBER, "reason": STRING}, all required. */
extern const ev_llm_field_t ev_llm_verdict_fields[3];

/* An instruction asking for that object, containing the lower-case word
 * "json" (required by Groq's json_object mode). Static string. */
const char *ev_llm_verdict_instruction(void);

/*
 * Standard base64 (RFC 4648, with padding, no line breaks, no "data:"
 * prefix) of `len` bytes. Returns a new NUL-terminated string the caller
 * frees, and its length in *out_len (may be NULL).
 */
char *ev_llm_base64(const unsigned char *bytes, size_t len, size_t *out_len);
/* Length of the base64 text for `len` bytes (without the NUL). */
size_t ev_llm_base64_len(size_t len);
/* Writes exactly ev_llm_base64_len(len) characters of that base64 to dst (no
 * NUL) and returns that count. */
size_t ev_llm_base64_into(char *dst, const unsigned char *bytes, size_t len);

/*
 * A request body assembled by hand around base64 media, so that hundreds of
 * kilobytes of base64 never pass through json-c (whose string escaper looks
 * at every byte and whose buffer doubles as it grows). The client writes an
 * emitter that puts the body piece by piece: JSON fragments it serialised
 * with json-c, literal punctuation, and base64 written in place.
 * ev_llm_body_build() runs the emitter twice: first with buf NULL, only
 * measuring, then into one buffer of exactly the measured size. The emitter
 * must therefore emit the same bytes on both runs (it is a pure function of
 * its argument).
 */
typedef struct ev_llm_body {
    char *buf;     /* NULL while measuring */
    size_t cap;    /* size of buf (without the NUL), when writing */
    size_t len;    /* bytes emitted so far */
    bool overflow; /* the size does not fit in a size_t */
} ev_llm_body_t;

typedef void (*ev_llm_body_emit_fn)(ev_llm_body_t *b, const void *arg);

/* Appends n bytes of s. */
void ev_llm_body_put(ev_llm_body_t *b, const char *s, size_t n);
/* Appends a NUL-terminated string. */
void ev_llm_body_puts(ev_llm_body_t *b, const char *s);
/* Appends the standard base64 of `len` bytes (no quotes, no prefix). */
void ev_llm_body_put_base64(ev_llm_body_t *b, const unsigned char *bytes, size_t len);

/* Runs `emit(b, arg)` to measure, then to write. Returns 0 with *out a new
 * NUL-terminated string (caller frees) and *out_len (may be NULL) its length,
 * or EV_ETOOBIG (the size would not fit in a size_t) with *out NULL. */
int ev_llm_body_build(char **out, size_t *out_len, ev_llm_body_emit_fn emit, const void *arg);

#endif
