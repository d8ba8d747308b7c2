/*
 * provider.c - helpers shared by the provider clients; see provider.h.
 *
 * Result lifetime, the verdict description, base64, a bounded JSON parse,
 * and the two-pass body assembler the clients use to write base64 media
 * straight into the request body (measure with a NULL buffer, then write
 * into one buffer of exactly the measured size).
 * Threads: pure functions on their arguments; no shared mutable state.
 */
#include "ev/provider.h"

#include "ev/error.h"
#include "ev/util.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *ev_llm_outcome_name(ev_llm_outcome_t o)
{
    switch (o) {
    case EV_LLM_OK:
        return "ok";
    case EV_LLM_RETRY:
        return "retry";
    case EV_LLM_FALLBACK:
        return "fallback";
    case EV_LLM_FATAL_CONFIG:
        return "fatal_config";
    case EV_LLM_BAD_ANSWER:
        return "bad_answer";
    case EV_LLM_BAD_REQUEST:
        return "bad_request";
    case EV_LLM_MODEL_UNAVAILABLE:
        return "model_unavailable";
    }
    return "unknown";
}

const char *ev_model_status_name(ev_model_status_t s)
{
    switch (s) {
    case EV_MODEL_AVAILABLE:
        return "available";
    case EV_MODEL_UNKNOWN:
        return "unknown";
    case EV_MODEL_RETIRED:
        return "retired";
    case EV_MODEL_UNUSABLE:
        return "unusable";
    case EV_MODEL_KEY_REJECTED:
        return "key rejected";
    case EV_MODEL_UNCHECKED:
        return "unchecked";
    }
    return "unknown";
}

void ev_llm_result_init(ev_llm_result_t *r)
{
    memset(r, 0, sizeof(*r));
    r->outcome = EV_LLM_OK;
    r->retry_after_ms = -1;
    r->ratelimit.limit_requests = -1;
    r->ratelimit.remaining_requests = -1;
    r->ratelimit.limit_tokens = -1;
    r->ratelimit.remaining_tokens = -1;
    r->ratelimit.reset_requests_ms = -1;
    r->ratelimit.reset_tokens_ms = -1;
}

void ev_llm_result_free(ev_llm_result_t *r)
{
    if (!r)
        return;
    free(r->text);
    free(r->finish_reason);
    free(r->request_id);
    free(r->model);
    ev_llm_result_init(r);
}

void ev_llm_result_set_error(ev_llm_result_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    va_end(ap);
}

static bool scrub_str(char **s, const ev_secret_t *key)
{
    if (*s && ev_secret_appears_in(key, *s, strlen(*s))) {
        free(*s);
        *s = NULL;
        return true;
    }
    return false;
}

json_object *ev_llm_json_get(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (o && json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, key, &v))
        return v;
    return NULL;
}

const char *ev_llm_json_str(json_object *o, const char *key)
{
    json_object *v = ev_llm_json_get(o, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

int64_t ev_llm_json_int(json_object *o, const char *key)
{
    json_object *v = ev_llm_json_get(o, key);
    if (v && (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)))
        return json_object_get_int64(v);
    if (v && json_object_is_type(v, json_type_string)) {
        /* Some int64 fields are JSON strings in proto3 JSON. */
        const char *s = json_object_get_string(v);
        int64_t n = 0;
        for (; *s >= '0' && *s <= '9' && n < INT64_C(100000000000000); s++)
            n = n * 10 + (*s - '0');
        return n;
    }
    return 0;
}

int64_t ev_llm_json_count(json_object *o, const char *key)
{
    int64_t n = ev_llm_json_int(o, key);
    return n < 0 ? 0 : n > INT64_C(1000000000000) ? INT64_C(1000000000000) : n;
}

ev_llm_outcome_t ev_llm_outcome_for_status(int status, bool *too_large)
{
    if (status == 401 || status == 403 || status == 404)
        return EV_LLM_FATAL_CONFIG;
    if (status == 413) {
        *too_large = true;
        return EV_LLM_FALLBACK;
    }
    /* 498: Groq's flex capacity exceeded; 499: Gemini's cancelled request. */
    if (status == 408 || status == 498 || status == 499 || status >= 500)
        return EV_LLM_RETRY;
    if (status >= 300 && status < 400)
        return EV_LLM_FATAL_CONFIG; /* a redirect: the base URL is wrong */
    if (status >= 400)
        return EV_LLM_BAD_REQUEST;
    return EV_LLM_RETRY;
}

int ev_llm_send(ev_http_t *http, const char *url, const char *body, size_t body_len,
                const ev_secret_t *key, const char *secret_prefix,
                const ev_llm_client_options_t *opts, ev_llm_parse_fn parse, ev_llm_result_t *out,
                const atomic_bool *stop)
{
    if (!http) {
        out->outcome = EV_LLM_BAD_REQUEST;
        out->err = EV_EINVAL;
        ev_llm_result_set_error(out, "no HTTP handle");
        return EV_EINVAL;
    }
    if (stop && atomic_load(stop)) {
        ev_llm_result_transport(out, EV_ESHUTDOWN, NULL);
        return EV_ESHUTDOWN;
    }
    ev_http_request_t hreq = {
        .url = url,
        .body = body,
        .body_len = body_len,
        .secret = key,
        .secret_prefix = secret_prefix,
        .timeout_ms = opts->timeout_ms,
        .connect_timeout_ms = opts->connect_timeout_ms,
        .max_response_bytes = opts->max_response_bytes,
        .stop = stop,
    };
    ev_http_response_t resp;
    int rc = 0;
    out->http_attempted = true;
    int hrc = ev_http_post(http, &hreq, &resp);
    out->latency_ms = resp.elapsed_ms;
    if (hrc < 0) {
        out->http_status = resp.status;
        ev_llm_result_transport(out, hrc, resp.error);
        if (hrc == EV_ESHUTDOWN)
            rc = EV_ESHUTDOWN;
    } else {
        parse(out, &resp, opts->max_wait_ms);
        if (!out->request_id) {
            const char *rid = ev_http_response_header(&resp, "x-request-id");
            if (rid && rid[0])
                out->request_id = ev_strdup(rid);
        }
    }
    ev_http_response_free(&resp);
    return rc;
}

/* A key this short also occurs in ordinary words ("sim" in "similar"):
 * matching it would withhold every answer. Real keys are 39+ characters. */
#define SCRUB_MIN_KEY_LEN 8

int ev_llm_result_scrub(ev_llm_result_t *r, const ev_secret_t *key)
{
    if (!r || !key || ev_secret_length(key) < SCRUB_MIN_KEY_LEN)
        return 0;
    int n = 0;
    if (ev_secret_appears_in(key, r->error, strnlen(r->error, sizeof(r->error)))) {
        snprintf(r->error, sizeof(r->error),
                 "provider error (message withheld: it echoed the key)");
        n++;
    }
    if (scrub_str(&r->text, key)) {
        r->outcome = EV_LLM_BAD_ANSWER;
        snprintf(r->error, sizeof(r->error), "answer withheld: it contained the key");
        n++;
    }
    n += scrub_str(&r->finish_reason, key);
    n += scrub_str(&r->request_id, key);
    n += scrub_str(&r->model, key);
    return n;
}

bool ev_llm_contains_ci(const char *hay, const char *needle)
{
    if (!hay || !needle)
        return false;
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++) {
        if (strncasecmp(p, needle, n) == 0)
            return true;
    }
    return n == 0;
}

struct json_object *ev_llm_json_parse(const char *body, size_t len)
{
    if (!body || len == 0 || len > INT32_MAX)
        return NULL;
    json_tokener *tok = json_tokener_new_ex(64);
    if (!tok)
        return NULL;
    json_object *obj = json_tokener_parse_ex(tok, body, (int)len);
    size_t used = (size_t)json_tokener_get_parse_end(tok);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (!obj || jerr != json_tokener_success) {
        /* json_tokener_continue means the text ended inside a value. */
        json_object_put(obj);
        return NULL;
    }
    for (size_t i = used; i < len; i++) {
        char c = body[i];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            json_object_put(obj);
            return NULL;
        }
    }
    if (json_object_is_type(obj, json_type_array) && json_object_array_length(obj) == 1) {
        json_object *inner = json_object_get(json_object_array_get_idx(obj, 0));
        json_object_put(obj);
        obj = inner;
    }
    return obj;
}

const ev_llm_field_t ev_llm_verdict_fields[3] = {
    {"valid", EV_LLM_FIELD_BOOLEAN},
    {"score", EV_LLM_FIELD_NUMBER},
    {"reason", EV_LLM_FIELD_STRING},
};

const char *ev_llm_verdict_instruction(void)
{
    return "Respond with a single json object and nothing else, exactly of the form "
           "{\"valid\": true or false, \"score\": a number from 0 to 1, "
           "\"reason\": \"one or two sentences explaining the verdict\"}.";
}

size_t ev_llm_base64_len(size_t len)
{
    return (len + 2) / 3 * 4;
}

size_t ev_llm_base64_into(char *dst, const unsigned char *bytes, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = dst;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t)bytes[i] << 16) | ((uint32_t)bytes[i + 1] << 8) | bytes[i + 2];
        *o++ = tbl[(v >> 18) & 63];
        *o++ = tbl[(v >> 12) & 63];
        *o++ = tbl[(v >> 6) & 63];
        *o++ = tbl[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)bytes[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)bytes[i + 1] << 8;
        *o++ = tbl[(v >> 18) & 63];
        *o++ = tbl[(v >> 12) & 63];
        *o++ = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    return (size_t)(o - dst);
}

char *ev_llm_base64(const unsigned char *bytes, size_t len, size_t *out_len)
{
    size_t n = ev_llm_base64_len(len);
    char *out = ev_malloc(n + 1);
    size_t written = ev_llm_base64_into(out, bytes, len);
    EV_ASSERT(written == n);
    out[n] = '\0';
    if (out_len)
        *out_len = n;
    return out;
}

/* ---------------------------------------------------- hand-assembled bodies */

void ev_llm_body_put(ev_llm_body_t *b, const char *s, size_t n)
{
    if (__builtin_add_overflow(b->len, n, &b->len)) {
        b->overflow = true;
        return;
    }
    if (b->buf) {
        EV_ASSERT(b->len <= b->cap);
        memcpy(b->buf + b->len - n, s, n);
    }
}

void ev_llm_body_puts(ev_llm_body_t *b, const char *s)
{
    ev_llm_body_put(b, s, strlen(s));
}

void ev_llm_body_put_base64(ev_llm_body_t *b, const unsigned char *bytes, size_t len)
{
    /* (len + 2) / 3 * 4 must not wrap: 4 * ceil(len / 3) <= SIZE_MAX. */
    if (len > SIZE_MAX / 4 * 3 - 2) {
        b->overflow = true;
        return;
    }
    size_t n = ev_llm_base64_len(len);
    if (__builtin_add_overflow(b->len, n, &b->len)) {
        b->overflow = true;
        return;
    }
    if (b->buf) {
        EV_ASSERT(b->len <= b->cap);
        size_t written = ev_llm_base64_into(b->buf + b->len - n, bytes, len);
        EV_ASSERT(written == n);
    }
}

int ev_llm_body_build(char **out, size_t *out_len, ev_llm_body_emit_fn emit, const void *arg)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    ev_llm_body_t b = {0};
    emit(&b, arg);
    if (b.overflow || b.len == SIZE_MAX)
        return EV_ETOOBIG;
    size_t measured = b.len;
    b.buf = ev_malloc(measured + 1);
    b.cap = measured;
    b.len = 0;
    emit(&b, arg);
    /* The emitter must write exactly what it measured: same arguments, same bytes. */
    EV_ASSERT(!b.overflow && b.len == measured);
    b.buf[measured] = '\0';
    *out = b.buf;
    if (out_len)
        *out_len = measured;
    return 0;
}

void ev_llm_snippet(char *dst, size_t n, const char *src, size_t src_len)
{
    if (n == 0)
        return;
    size_t o = 0;
    bool blank = false;
    size_t i = 0;
    for (; src && i < src_len && src[i] != '\0'; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c < 0x20 || c == 0x7f || c == ' ') {
            blank = o > 0;
            continue;
        }
        size_t need = (blank ? 1 : 0) + 1;
        if (o + need > n - 1)
            break;
        if (blank)
            dst[o++] = ' ';
        blank = false;
        dst[o++] = (char)c;
    }
    /* Mark a cut; back up over a partial UTF-8 sequence first. */
    if (src && i < src_len && src[i] != '\0' && n > 4) {
        while (o > n - 4)
            o--;
        while (o > 0 && ((unsigned char)dst[o - 1] & 0xC0) == 0x80)
            o--;
        if (o > 0 && ((unsigned char)dst[o - 1] & 0xC0) == 0xC0)
            o--;
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

void ev_llm_result_transport(ev_llm_result_t *r, int rc, const char *detail)
{
    r->err = rc;
    const char *d = detail && detail[0] ? detail : ev_strerror(rc);
    switch (rc) {
    case EV_ETIMEOUT:
        r->outcome = EV_LLM_RETRY;
        ev_llm_result_set_error(r, "HTTP timeout: %s", d);
        break;
    case EV_EHTTP:
        r->outcome = EV_LLM_RETRY;
        ev_llm_result_set_error(r, "HTTP connection failed: %s", d);
        break;
    case EV_ETOOBIG:
        r->outcome = EV_LLM_BAD_ANSWER;
        ev_llm_result_set_error(r, "response body too large");
        break;
    case EV_ECONFIG:
        r->outcome = EV_LLM_FATAL_CONFIG;
        ev_llm_result_set_error(r, "bad provider URL: %s", d);
        break;
    case EV_ESHUTDOWN:
        r->outcome = EV_LLM_RETRY;
        ev_llm_result_set_error(r, "aborted: shutting down");
        break;
    default:
        r->outcome = EV_LLM_RETRY;
        ev_llm_result_set_error(r, "HTTP failure: %s", d);
        break;
    }
}

void ev_llm_result_apply_max_wait(ev_llm_result_t *r, int64_t max_wait_ms)
{
    if (r->outcome != EV_LLM_RETRY || max_wait_ms <= 0 || r->retry_after_ms <= max_wait_ms)
        return;
    r->outcome = EV_LLM_FALLBACK;
    char prev[EV_LLM_ERROR_MAX];
    snprintf(prev, sizeof(prev), "%s", r->error);
    ev_llm_result_set_error(r, "server asks to wait %lld ms (> %lld ms allowed): %s",
                            (long long)r->retry_after_ms, (long long)max_wait_ms, prev);
}

void ev_llm_result_apply_should_retry(ev_llm_result_t *r, const ev_http_response_t *resp)
{
    const char *v = ev_http_response_header(resp, "x-should-retry");
    if (r->outcome != EV_LLM_RETRY || !v || strcasecmp(v, "false") != 0)
        return;
    r->outcome = EV_LLM_FALLBACK;
    char prev[EV_LLM_ERROR_MAX];
    snprintf(prev, sizeof(prev), "%s", r->error);
    ev_llm_result_set_error(r, "the provider says not to retry: %s", prev);
}
