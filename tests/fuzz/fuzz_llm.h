/*
 * fuzz_llm.h - input layout and result checks shared by the Gemini and Groq
 * response-parser harnesses.
 *
 * Input layout (readable, so seeds are plain files):
 *   [STATUS[ MAXWAIT]\n][header lines (Groq only)\n\n]BODY
 * STATUS is up to 4 decimal digits (the HTTP status; absent: 200 and the
 * whole input is the body); MAXWAIT is the max_wait_ms given to the parser
 * (absent: 10000, "0": no limit). The body is handed over like ev_http_post
 * does: body_len bytes plus a NUL, NULL when empty.
 *
 * Checks (provider.h's contract of ev_llm_result_t, for any response):
 * the outcome is one of the enum; http_status is the response's; text is set
 * iff the outcome is OK; error is NUL-terminated, empty iff OK; a RETRY never
 * asks to wait longer than max_wait_ms; counters are never below their
 * "unknown" values; every string is readable (ASan); and after
 * ev_llm_result_scrub() with a key no field contains that key.
 */
#ifndef EV_FUZZ_LLM_H
#define EV_FUZZ_LLM_H

#include "fuzz_common.h"

#include "ev/error.h"
#include "ev/http.h"
#include "ev/provider.h"
#include "ev/secret.h"

/* A key the fuzzer can learn from the string compares in the scrubber. */
#define FUZZ_KEY "gsk_FUZZ-key-0123456789"

typedef struct fuzz_head {
    int status;
    int64_t max_wait_ms;
    size_t off; /* where the rest of the input starts */
} fuzz_head_t;

static inline size_t fuzz_digits(const uint8_t *data, size_t size, size_t off, size_t max,
                                 int64_t *value)
{
    size_t n = 0;
    *value = 0;
    while (off + n < size && n < max && data[off + n] >= '0' && data[off + n] <= '9') {
        *value = *value * 10 + (data[off + n] - '0');
        n++;
    }
    return n;
}

static inline fuzz_head_t fuzz_read_head(const uint8_t *data, size_t size)
{
    fuzz_head_t h = {200, 10000, 0};
    int64_t v = 0;
    size_t n = fuzz_digits(data, size, 0, 4, &v);
    if (n == 0)
        return h;
    h.status = (int)v;
    h.off = n;
    if (h.off < size && data[h.off] == ' ') {
        size_t m = fuzz_digits(data, size, h.off + 1, 9, &v);
        if (m > 0) {
            h.max_wait_ms = v;
            h.off += 1 + m;
        }
    }
    if (h.off < size && data[h.off] == '\r')
        h.off++;
    if (h.off < size && data[h.off] == '\n')
        h.off++;
    return h;
}

static inline void fuzz_set_body(ev_http_response_t *resp, const uint8_t *p, size_t n)
{
    if (n == 0)
        return;
    resp->body = malloc(n + 1);
    if (!resp->body)
        abort();
    memcpy(resp->body, p, n);
    resp->body[n] = '\0';
    resp->body_len = n;
}

static inline const ev_secret_t *fuzz_key(void)
{
    static ev_secret_t *key;
    if (!key && ev_secret_new(&key, FUZZ_KEY) != 0)
        abort();
    return key;
}

static inline int fuzz_no_key(const char *s)
{
    return s == NULL || strstr(s, FUZZ_KEY) == NULL;
}

static inline void fuzz_check_result(ev_llm_result_t *r, const ev_http_response_t *resp,
                                     int64_t max_wait_ms)
{
    FUZZ_CHECK(r->outcome >= EV_LLM_OK && r->outcome <= EV_LLM_MODEL_UNAVAILABLE);
    /* A model status comes only with an unavailable model. */
    FUZZ_CHECK((r->outcome == EV_LLM_MODEL_UNAVAILABLE) == (r->model_status != EV_MODEL_AVAILABLE));
    FUZZ_CHECK(r->http_status == resp->status);
    FUZZ_CHECK((r->outcome == EV_LLM_OK) == (r->text != NULL));
    FUZZ_CHECK(fuzz_terminated(r->error, sizeof(r->error)));
    FUZZ_CHECK((r->outcome == EV_LLM_OK) == (r->error[0] == '\0'));
    FUZZ_CHECK(r->retry_after_ms >= -1);
    if (r->outcome == EV_LLM_RETRY && max_wait_ms > 0)
        FUZZ_CHECK(r->retry_after_ms <= max_wait_ms);
    FUZZ_CHECK(r->tokens_in >= 0 && r->tokens_out >= 0);
    const int64_t *rl = &r->ratelimit.limit_requests;
    for (int i = 0; i < 6; i++)
        FUZZ_CHECK(rl[i] >= -1);
    /* Every string must be readable to its end. */
    const char *strs[] = {r->text, r->finish_reason, r->request_id, r->model};
    size_t total = 0;
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        total += strs[i] ? strlen(strs[i]) : 0;
    (void)total;

    ev_llm_result_scrub(r, fuzz_key());
    FUZZ_CHECK(fuzz_no_key(r->error) && fuzz_no_key(r->text) && fuzz_no_key(r->finish_reason) &&
               fuzz_no_key(r->request_id) && fuzz_no_key(r->model));
    FUZZ_CHECK((r->outcome == EV_LLM_OK) == (r->text != NULL));
}

#endif
