/*
 * gemini.c - Gemini generateContent client; see gemini.h and PROVIDERS.md.
 *
 * How: the request body has media parts as plain base64 inline_data before
 * the text part and a responseSchema made only of the OpenAPI subset Gemini
 * accepts. json-c builds and escapes every piece but the media, and the body
 * is assembled around them in one buffer of the exact size, the base64 written
 * in place (ev_llm_body_build): passing ~200 KB of base64 through json-c's
 * escaper cost more CPU than anything else in a submission. One ev_http_post() per call. The
 * response is classified by HTTP status first and by body second, because error bodies may be HTML,
 * empty, an object or a one-element array: on 2xx the finish reason is checked before any text is
 * trusted; on errors the google.rpc details (RetryInfo, QuotaFailure, ErrorInfo, in any order,
 * matched by the end of @type) refine the class.
 *
 * Threads: ev_gemini_t is immutable after ev_gemini_new() and shared
 * read-only by all workers; everything else lives on the caller's stack or in
 * the caller's ev_http_t. No locks. Never logs.
 */
#include "ev/gemini.h"

#include "ev/error.h"
#include "ev/providers.h"
#include "ev/retryhint.h"
#include "ev/util.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct ev_gemini {
    ev_provider_config_t cfg; /* shallow copy: the key and strings are borrowed */
    char *model;
    char *url;
    ev_llm_client_options_t opts;
};

static const char *const mime_ok[] = {"application/pdf", "image/png",  "image/jpeg",
                                      "image/webp",      "image/heic", "image/heif"};

static const char *strip_models_prefix(const char *model)
{
    return strncmp(model, "models/", 7) == 0 ? model + 7 : model;
}

char *ev_gemini_build_url(const char *base_url, const char *model)
{
    size_t blen = strlen(base_url);
    while (blen > 0 && base_url[blen - 1] == '/')
        blen--;
    return ev_asprintf("%.*s/models/%s:generateContent", (int)blen, base_url,
                       strip_models_prefix(model));
}

static bool model_name_ok(const char *m)
{
    if (!m || !*m)
        return false;
    for (const char *p = m; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_';
        if (!ok)
            return false;
    }
    return true;
}

int ev_gemini_new(ev_gemini_t **out, const ev_provider_config_t *cfg,
                  const ev_llm_client_options_t *opts)
{
    *out = NULL;
    if (!cfg || !cfg->api_key || !cfg->model || !cfg->base_url || !cfg->base_url[0])
        return EV_ECONFIG;
    const char *model = strip_models_prefix(cfg->model);
    if (!model_name_ok(model))
        return EV_ECONFIG;
    ev_gemini_t *g = ev_calloc(1, sizeof(*g));
    ev_llm_client_options_t defaults = EV_LLM_CLIENT_OPTIONS_INIT;
    g->opts = opts ? *opts : defaults;
    if (g->opts.timeout_ms <= 0)
        g->opts.timeout_ms = defaults.timeout_ms;
    if (g->opts.max_request_bytes == 0)
        g->opts.max_request_bytes = EV_GEMINI_MAX_REQUEST_DEFAULT;
    g->cfg = *cfg;
    g->model = ev_strdup(model);
    g->url = ev_gemini_build_url(cfg->base_url, model);
    *out = g;
    return 0;
}

void ev_gemini_free(ev_gemini_t *g)
{
    if (!g)
        return;
    free(g->model);
    free(g->url);
    free(g);
}

const char *ev_gemini_model(const ev_gemini_t *g)
{
    return g->model;
}
const char *ev_gemini_url(const ev_gemini_t *g)
{
    return g->url;
}

/* ---------------------------------------------------------------- request */

static bool mime_supported(const char *mime)
{
    for (size_t i = 0; mime && i < EV_ARRAY_LEN(mime_ok); i++) {
        if (strcmp(mime, mime_ok[i]) == 0)
            return true;
    }
    return false;
}

/* user_text, then (blank line) pdf_text; NULL when both are absent/empty. */
static char *join_text(const ev_llm_request_t *req)
{
    const char *u = req->user_text && req->user_text[0] ? req->user_text : NULL;
    const char *p = req->pdf_text && req->pdf_text[0] ? req->pdf_text : NULL;
    if (u && p)
        return ev_asprintf("%s\n\n%s", u, p);
    if (u || p)
        return ev_strdup(u ? u : p);
    return NULL;
}

static json_object *text_part(const char *text)
{
    json_object *part = json_object_new_object();
    json_object_object_add(part, "text", json_object_new_string(text));
    return part;
}

static json_object *verdict_schema(void)
{
    static const char *const type_names[] = {"BOOLEAN", "NUMBER", "STRING"};
    json_object *schema = json_object_new_object();
    json_object *props = json_object_new_object();
    json_object *required = json_object_new_array();
    json_object_object_add(schema, "type", json_object_new_string("OBJECT"));
    for (size_t i = 0; i < EV_ARRAY_LEN(ev_llm_verdict_fields); i++) {
        const ev_llm_field_t *f = &ev_llm_verdict_fields[i];
        json_object *p = json_object_new_object();
        json_object_object_add(p, "type", json_object_new_string(type_names[f->type]));
        json_object_object_add(props, f->name, p);
        json_object_array_add(required, json_object_new_string(f->name));
    }
    json_object_object_add(schema, "properties", props);
    json_object_object_add(schema, "required", required);
    return schema;
}

/* The responseSchema of a request: one verdict, or an object holding one
 * verdict per answer key. */
static json_object *answer_schema(const ev_llm_request_t *req)
{
    if (!req->answer_keys || req->answer_key_count == 0)
        return verdict_schema();
    json_object *schema = json_object_new_object();
    json_object *props = json_object_new_object();
    json_object *required = json_object_new_array();
    json_object_object_add(schema, "type", json_object_new_string("OBJECT"));
    for (size_t i = 0; i < req->answer_key_count; i++) {
        json_object_object_add(props, req->answer_keys[i], verdict_schema());
        json_object_array_add(required, json_object_new_string(req->answer_keys[i]));
    }
    json_object_object_add(schema, "properties", props);
    json_object_object_add(schema, "required", required);
    return schema;
}

/* A json-c value serialised as plain JSON; the text belongs to `o` and stays
 * valid until `o` is released. NULL when json-c runs out of memory. */
static const char *serialise(json_object *o, size_t *len)
{
    return json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
}

/* What emit_body() writes: JSON fragments already serialised by json-c, and
 * the media, whose base64 goes straight into the body. */
typedef struct body_parts {
    const char *system; /* the system_instruction value, or NULL */
    size_t system_len;
    const ev_llm_media_t *media;
    size_t media_count;
    const char *text; /* the {"text": ...} part, or NULL */
    size_t text_len;
    const char *config; /* the generationConfig value */
    size_t config_len;
} body_parts_t;

/* The PROVIDERS.md body, byte for byte what json-c would print for the same
 * tree: {"system_instruction":...,"contents":[{"role":"user","parts":[media
 * parts..., text part]}],"generationConfig":...}. */
static void emit_body(ev_llm_body_t *b, const void *arg)
{
    const body_parts_t *bp = arg;
    ev_llm_body_puts(b, "{");
    if (bp->system) {
        ev_llm_body_puts(b, "\"system_instruction\":");
        ev_llm_body_put(b, bp->system, bp->system_len);
        ev_llm_body_puts(b, ",");
    }
    ev_llm_body_puts(b, "\"contents\":[{\"role\":\"user\",\"parts\":[");
    /* Media first, then the question: Gemini answers better when the
     * instruction follows the documents. */
    for (size_t i = 0; i < bp->media_count; i++) {
        const ev_llm_media_t *m = &bp->media[i];
        if (i > 0)
            ev_llm_body_puts(b, ",");
        /* The MIME type is one of mime_ok, so nothing in it needs escaping;
         * base64 has no character that JSON escapes ('/' is left alone, as
         * JSON_C_TO_STRING_NOSLASHESCAPE does elsewhere). */
        ev_llm_body_puts(b, "{\"inline_data\":{\"mime_type\":\"");
        ev_llm_body_puts(b, m->mime);
        ev_llm_body_puts(b, "\",\"data\":\"");
        ev_llm_body_put_base64(b, m->bytes, m->len);
        ev_llm_body_puts(b, "\"}}");
    }
    if (bp->text) {
        if (bp->media_count > 0)
            ev_llm_body_puts(b, ",");
        ev_llm_body_put(b, bp->text, bp->text_len);
    }
    ev_llm_body_puts(b, "]}],\"generationConfig\":");
    ev_llm_body_put(b, bp->config, bp->config_len);
    ev_llm_body_puts(b, "}");
}

int ev_gemini_build_body(char **out, size_t *out_len, const ev_llm_request_t *req,
                         int thinking_budget)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    int rc = 0;
    json_object *si = NULL, *tp = NULL, *gc = NULL;
    char *text = NULL;
    body_parts_t bp = {0};
    size_t media_count = req && !req->text_only ? req->media_count : 0;
    if (!req || (media_count > 0 && !req->media)) {
        rc = EV_EINVAL;
        goto out;
    }
    for (size_t i = 0; i < media_count; i++) {
        const ev_llm_media_t *m = &req->media[i];
        if (!mime_supported(m->mime) || !m->bytes || m->len == 0) {
            rc = EV_EINVAL;
            goto out;
        }
    }
    text = join_text(req);
    if (!text && media_count == 0) {
        rc = EV_EINVAL;
        goto out;
    }

    /* Everything but the media is built and escaped by json-c; the media's
     * base64 (most of the body) is written by emit_body() directly. */
    bp.media = req->media;
    bp.media_count = media_count;
    if (req->system_prompt && req->system_prompt[0]) {
        si = json_object_new_object();
        json_object *parts = json_object_new_array();
        json_object_array_add(parts, text_part(req->system_prompt));
        json_object_object_add(si, "parts", parts);
        bp.system = serialise(si, &bp.system_len);
        if (!bp.system) {
            rc = EV_ENOMEM;
            goto out;
        }
    }
    if (text) {
        tp = text_part(text);
        bp.text = serialise(tp, &bp.text_len);
        if (!bp.text) {
            rc = EV_ENOMEM;
            goto out;
        }
    }

    gc = json_object_new_object();
    json_object_object_add(gc, "responseMimeType", json_object_new_string("application/json"));
    json_object_object_add(gc, "responseSchema", answer_schema(req));
    json_object_object_add(gc, "temperature", json_object_new_int(0));
    json_object_object_add(gc, "maxOutputTokens",
                           json_object_new_int(req->max_output_tokens > 0
                                                   ? req->max_output_tokens
                                                   : EV_LLM_DEFAULT_MAX_OUTPUT_TOKENS));
    if (thinking_budget >= 0) {
        json_object *tc = json_object_new_object();
        json_object_object_add(tc, "thinkingBudget", json_object_new_int(thinking_budget));
        json_object_object_add(gc, "thinkingConfig", tc);
    }
    bp.config = serialise(gc, &bp.config_len);
    if (!bp.config) {
        rc = EV_ENOMEM;
        goto out;
    }

    rc = ev_llm_body_build(out, out_len, emit_body, &bp);

out:
    json_object_put(si);
    json_object_put(tp);
    json_object_put(gc);
    free(text);
    return rc;
}

/* --------------------------------------------------------------- response */

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* True when a quota value (string or number) is zero. */
static bool quota_is_zero(json_object *v)
{
    if (!v)
        return false;
    if (json_object_is_type(v, json_type_int))
        return json_object_get_int64(v) == 0;
    if (json_object_is_type(v, json_type_string))
        return strcmp(json_object_get_string(v), "0") == 0;
    return false;
}

/* "limit: 0" followed by a non-digit in a quota message means no quota. */
static bool message_says_limit_zero(const char *msg)
{
    if (!msg)
        return false;
    for (const char *p = strstr(msg, "limit: 0"); p; p = strstr(p + 1, "limit: 0")) {
        char next = p[8];
        if (!(next >= '0' && next <= '9') && next != '.')
            return true;
    }
    return false;
}

typedef struct gerror {
    const char *message;
    const char *status;
    int64_t retry_ms;
    bool daily;
    bool no_quota;
    bool key_invalid;
    bool tokens;    /* a per-minute token quota was hit */
    double per_min; /* the per-minute quota's value, 0 unknown */
} gerror_t;

/* A quota value (string or number) as a positive number, or 0. */
static double quota_value(json_object *v)
{
    double d = 0;
    if (v && json_object_is_type(v, json_type_int))
        d = (double)json_object_get_int64(v);
    else if (v && json_object_is_type(v, json_type_string))
        d = strtod(json_object_get_string(v), NULL);
    return d > 0 && d < 1e12 ? d : 0;
}

/* A per-minute violation states the real limit: the adaptive limiter uses
 * it. Its quotaId says whether requests or input tokens are counted. */
static void read_per_minute(gerror_t *e, const char *qid, json_object *value)
{
    if (!qid || !strstr(qid, "PerMinute"))
        return;
    double v = quota_value(value);
    if (v <= 0)
        return;
    e->tokens = strstr(qid, "Token") != NULL;
    e->per_min = v;
}

/* Reads what it can from an error body; every field stays "unknown" when
 * the body is not the expected shape. Strings point into `root`. */
static void read_error(json_object *root, gerror_t *e)
{
    memset(e, 0, sizeof(*e));
    e->retry_ms = -1;
    json_object *err = ev_llm_json_get(root, "error");
    if (!err && ev_llm_json_get(root, "message"))
        err = root;
    if (!err)
        return;
    e->message = ev_llm_json_str(err, "message");
    e->status = ev_llm_json_str(err, "status");
    json_object *details = ev_llm_json_get(err, "details");
    size_t n = details && json_object_is_type(details, json_type_array)
                   ? json_object_array_length(details)
                   : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *d = json_object_array_get_idx(details, i);
        const char *type = ev_llm_json_str(d, "@type");
        if (!type)
            continue;
        if (ends_with(type, "RetryInfo")) {
            json_object *rd = ev_llm_json_get(d, "retryDelay");
            int64_t ms = -1;
            if (rd && json_object_is_type(rd, json_type_string)) {
                ev_retryhint_gemini_delay(&ms, json_object_get_string(rd));
            } else if (rd && json_object_is_type(rd, json_type_object)) {
                /* google.protobuf.Duration as an object {seconds, nanos}. */
                int64_t sec = ev_llm_json_int(rd, "seconds"), nanos = ev_llm_json_int(rd, "nanos");
                if (sec >= 0 && sec < EV_RETRYHINT_MAX_MS / 1000 && nanos >= 0 &&
                    nanos < 1000000000)
                    ms = sec * 1000 + (nanos + 999999) / 1000000;
            }
            if (ms >= 0)
                e->retry_ms = ms;
        } else if (ends_with(type, "QuotaFailure")) {
            json_object *vs = ev_llm_json_get(d, "violations");
            size_t nv =
                vs && json_object_is_type(vs, json_type_array) ? json_object_array_length(vs) : 0;
            for (size_t j = 0; j < nv; j++) {
                json_object *v = json_object_array_get_idx(vs, j);
                const char *qid = ev_llm_json_str(v, "quotaId");
                if (qid && strstr(qid, "PerDay"))
                    e->daily = true;
                if (quota_is_zero(ev_llm_json_get(v, "quotaValue")))
                    e->no_quota = true;
                read_per_minute(e, qid, ev_llm_json_get(v, "quotaValue"));
            }
        } else if (ends_with(type, "ErrorInfo")) {
            const char *reason = ev_llm_json_str(d, "reason");
            if (reason && strcmp(reason, "API_KEY_INVALID") == 0)
                e->key_invalid = true;
            json_object *md = ev_llm_json_get(d, "metadata");
            const char *ql = ev_llm_json_str(md, "quota_limit");
            if (ql && strstr(ql, "PerDay"))
                e->daily = true;
            if (quota_is_zero(ev_llm_json_get(md, "quota_limit_value")))
                e->no_quota = true;
        }
    }
    /* Best effort when the details are missing. */
    if (e->retry_ms < 0 && e->message)
        ev_retryhint_from_message(&e->retry_ms, e->message);
    if (e->message &&
        (strstr(e->message, "API key not valid") || strstr(e->message, "API_KEY_INVALID")))
        e->key_invalid = true;
    if (message_says_limit_zero(e->message))
        e->no_quota = true;
    if (e->message && strstr(e->message, "PerDay"))
        e->daily = true;
}

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? ev_strdup(s) : NULL;
}

static bool all_blank(const char *s)
{
    for (; *s; s++) {
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
            return false;
    }
    return true;
}

static void parse_success(ev_llm_result_t *out, json_object *root)
{
    if (!root || !json_object_is_type(root, json_type_object)) {
        out->outcome = EV_LLM_BAD_ANSWER;
        out->err = EV_EPARSE;
        ev_llm_result_set_error(out, "HTTP %d with a body that is not a JSON object",
                                out->http_status);
        return;
    }
    const char *rid = ev_llm_json_str(root, "responseId");
    if (rid)
        set_str(&out->request_id, rid);
    json_object *usage = ev_llm_json_get(root, "usageMetadata");
    out->tokens_in = ev_llm_json_count(usage, "promptTokenCount");
    out->tokens_cached = ev_llm_json_count(usage, "cachedContentTokenCount");
    out->tokens_out = ev_llm_json_count(usage, "candidatesTokenCount") +
                      ev_llm_json_count(usage, "thoughtsTokenCount");

    json_object *cands = ev_llm_json_get(root, "candidates");
    json_object *cand =
        cands && json_object_is_type(cands, json_type_array) && json_object_array_length(cands) > 0
            ? json_object_array_get_idx(cands, 0)
            : NULL;
    out->outcome = EV_LLM_BAD_ANSWER;
    if (!cand) {
        const char *block = ev_llm_json_str(ev_llm_json_get(root, "promptFeedback"), "blockReason");
        if (block) {
            set_str(&out->finish_reason, block);
            ev_llm_result_set_error(out, "prompt blocked: %s", block);
        } else {
            ev_llm_result_set_error(out, "no candidates in the answer");
        }
        return;
    }
    /* The finish reason decides before any text is looked at. */
    const char *finish = ev_llm_json_str(cand, "finishReason");
    if (finish)
        set_str(&out->finish_reason, finish);
    if (finish && strcmp(finish, "STOP") != 0) {
        if (strcmp(finish, "MAX_TOKENS") == 0)
            ev_llm_result_set_error(out, "answer truncated at MAX_TOKENS");
        else
            ev_llm_result_set_error(out, "no usable answer: finish reason %s", finish);
        return;
    }
    json_object *content = ev_llm_json_get(cand, "content");
    json_object *parts = ev_llm_json_get(content, "parts");
    if (!content || !parts || !json_object_is_type(parts, json_type_array)) {
        ev_llm_result_set_error(out, "candidate has no content");
        return;
    }
    size_t n = json_object_array_length(parts), total = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(parts, i);
        json_object *thought = ev_llm_json_get(p, "thought");
        const char *t = ev_llm_json_str(p, "text");
        if (t && !(thought && json_object_get_boolean(thought)))
            total += strlen(t);
    }
    char *text = ev_malloc(total + 1);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(parts, i);
        json_object *thought = ev_llm_json_get(p, "thought");
        const char *t = ev_llm_json_str(p, "text");
        if (t && !(thought && json_object_get_boolean(thought))) {
            size_t l = strlen(t);
            memcpy(text + off, t, l);
            off += l;
        }
    }
    text[off] = '\0';
    if (all_blank(text)) {
        free(text);
        ev_llm_result_set_error(out, "empty answer text");
        return;
    }
    out->text = text;
    out->outcome = EV_LLM_OK;
    out->error[0] = '\0';
}

/* "... does not support setting thinking_budget to 0", "The thinking budget
 * (N) is invalid ...", "Budget 0 is invalid. This model only works in
 * thinking mode." */
static bool thinking_budget_refused(const char *msg)
{
    return ev_llm_contains_ci(msg, "thinking_budget") ||
           ev_llm_contains_ci(msg, "thinking budget") ||
           (ev_llm_contains_ci(msg, "budget") && ev_llm_contains_ci(msg, "thinking mode"));
}

/* "models/X is not found for API version v1beta, or is not supported for
 * generateContent": a 404 that names the model, unlike a wrong base URL. */
static bool model_not_found(const char *msg)
{
    return msg && strstr(msg, "models/") && ev_llm_contains_ci(msg, "not found");
}

static void parse_error(ev_llm_result_t *out, json_object *root, const ev_http_response_t *resp)
{
    int st = resp->status;
    gerror_t e;
    read_error(root, &e);
    out->retry_after_ms = e.retry_ms;

    char msg[120];
    if (e.message)
        ev_llm_snippet(msg, sizeof(msg), e.message, strlen(e.message));
    else if (!resp->body || resp->body_len == 0)
        snprintf(msg, sizeof(msg), "(empty body)");
    else if (!root)
        snprintf(msg, sizeof(msg), "(body is not JSON)");
    else
        snprintf(msg, sizeof(msg), "(no error message)");
    ev_llm_result_set_error(out, "HTTP %d%s%s: %s", st, e.status ? " " : "",
                            e.status ? e.status : "", msg);

    bool too_large =
        e.message && (ev_llm_contains_ci(e.message, "payload size exceeds") ||
                      ev_llm_contains_ci(e.message, "exceeds the maximum number of tokens"));
    if (st == 400 && !e.key_invalid && thinking_budget_refused(e.message)) {
        /* Recurs on every call to this model: our configuration, not this request. */
        out->outcome = EV_LLM_MODEL_UNAVAILABLE;
        out->model_status = EV_MODEL_UNUSABLE;
        out->config_hint = "GEMINI_THINKING_BUDGET";
    } else if (st == 404 && model_not_found(e.message)) {
        /* Gemini answers the same for a typo and for a model it shut down. */
        out->outcome = EV_LLM_MODEL_UNAVAILABLE;
        out->model_status = EV_MODEL_UNKNOWN;
    } else if (st == 400) {
        if (e.key_invalid)
            out->outcome = EV_LLM_FATAL_CONFIG;
        else if (too_large)
            out->outcome = EV_LLM_FALLBACK, out->too_large = true;
        else if (e.status && strcmp(e.status, "FAILED_PRECONDITION") == 0)
            out->outcome = EV_LLM_FATAL_CONFIG; /* e.g. region or billing: not this request */
        else
            out->outcome = EV_LLM_BAD_REQUEST;
    } else if (st == 429) {
        out->rate_limited = true;
        out->daily_quota = e.daily;
        out->no_quota = e.no_quota;
        out->tokens_limited = e.tokens;
        out->stated_per_min = e.per_min;
        out->outcome = e.daily || e.no_quota ? EV_LLM_FALLBACK : EV_LLM_RETRY;
    } else {
        out->outcome = ev_llm_outcome_for_status(st, &out->too_large);
    }
}

void ev_gemini_parse_response(ev_llm_result_t *out, const ev_http_response_t *resp,
                              int64_t max_wait_ms)
{
    out->http_status = resp->status;
    json_object *root = ev_llm_json_parse(resp->body, resp->body_len);
    if (resp->status >= 200 && resp->status < 300)
        parse_success(out, root);
    else
        parse_error(out, root, resp);
    json_object_put(root);
    ev_llm_result_apply_should_retry(out, resp);
    ev_llm_result_apply_max_wait(out, max_wait_ms);
}

/* ------------------------------------------------------------------- call */

int ev_gemini_call(ev_gemini_t *g, ev_http_t *http, const ev_llm_request_t *req,
                   ev_llm_result_t *out, const atomic_bool *stop)
{
    if (!g) {
        ev_llm_result_init(out);
        out->outcome = EV_LLM_BAD_REQUEST;
        out->err = EV_EINVAL;
        ev_llm_result_set_error(out, "invalid call arguments");
        return EV_EINVAL;
    }
    return ev_provider_call(&ev_provider_gemini, &g->cfg, &g->opts, http, g->model, req, out, stop);
}
