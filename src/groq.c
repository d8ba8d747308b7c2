/*
 * groq.c - Groq chat-completions client; see groq.h and PROVIDERS.md.
 *
 * How: the body has the OpenAI shape Groq documents. json-c builds and
 * escapes every piece but the images, and the body is assembled around them
 * in one buffer of the exact size, their base64 written in place
 * (ev_llm_body_build), so ~100 KB of base64 never passes through json-c;
 * the vision limits are checked from the request before anything is encoded
 * and again on the encoded body; one ev_http_post() per call. Responses are
 * classified by HTTP status first (error bodies may be HTML or empty), then
 * refined by the error code/message and the rate-limit headers.
 *
 * Threads: ev_groq_t is immutable after ev_groq_new() and shared read-only
 * by all workers; everything else is per call. No locks. Never logs.
 */
#include "ev/groq.h"

#include "ev/error.h"
#include "ev/providers.h"
#include "ev/retryhint.h"
#include "ev/util.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct ev_groq {
    ev_provider_config_t cfg; /* shallow copy: the key and strings are borrowed */
    char *model;
    char *vision_model;
    char *url;
    ev_llm_client_options_t opts;
};

char *ev_groq_build_url(const char *base_url)
{
    size_t blen = strlen(base_url);
    while (blen > 0 && base_url[blen - 1] == '/')
        blen--;
    return ev_asprintf("%.*s/chat/completions", (int)blen, base_url);
}

int ev_groq_new(ev_groq_t **out, const ev_provider_config_t *cfg,
                const ev_llm_client_options_t *opts)
{
    *out = NULL;
    if (!cfg || !cfg->api_key || !cfg->model || !cfg->model[0] || !cfg->base_url ||
        !cfg->base_url[0])
        return EV_ECONFIG;
    ev_groq_t *g = ev_calloc(1, sizeof(*g));
    ev_llm_client_options_t defaults = EV_LLM_CLIENT_OPTIONS_INIT;
    g->opts = opts ? *opts : defaults;
    if (g->opts.timeout_ms <= 0)
        g->opts.timeout_ms = defaults.timeout_ms;
    if (g->opts.max_request_bytes == 0)
        g->opts.max_request_bytes = EV_GROQ_MAX_REQUEST_DEFAULT;
    if (g->opts.max_images <= 0)
        g->opts.max_images = EV_GROQ_MAX_IMAGES_DEFAULT;
    g->cfg = *cfg;
    g->model = ev_strdup(cfg->model);
    g->vision_model =
        ev_strdup(cfg->vision_model && cfg->vision_model[0] ? cfg->vision_model : cfg->model);
    g->url = ev_groq_build_url(cfg->base_url);
    *out = g;
    return 0;
}

void ev_groq_free(ev_groq_t *g)
{
    if (!g)
        return;
    free(g->model);
    free(g->vision_model);
    free(g->url);
    free(g);
}

const char *ev_groq_url(const ev_groq_t *g)
{
    return g->url;
}

static size_t media_sent(const ev_llm_request_t *req)
{
    return req->text_only || !req->media ? 0 : req->media_count;
}

const char *ev_groq_model_for(const ev_groq_t *g, const ev_llm_request_t *req)
{
    return media_sent(req) > 0 ? g->vision_model : g->model;
}

/* ---------------------------------------------------------------- request */

static bool is_pdf(const char *mime)
{
    return mime && strcmp(mime, "application/pdf") == 0;
}
static bool is_image(const char *mime)
{
    return mime && strncmp(mime, "image/", 6) == 0;
}

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

static char *system_text(const ev_llm_request_t *req)
{
    const char *sp = req->system_prompt && req->system_prompt[0] ? req->system_prompt : NULL;
    /* json_object mode answers 400 unless the messages mention "json". */
    if (sp && strstr(sp, "json"))
        return ev_strdup(sp);
    if (sp)
        return ev_asprintf("%s\n\n%s", sp, ev_llm_verdict_instruction());
    return ev_strdup(ev_llm_verdict_instruction());
}

/* A json-c value serialised as plain JSON; the text belongs to `o` and stays
 * valid until `o` is released. NULL when json-c runs out of memory. */
static const char *serialise(json_object *o, size_t *len)
{
    return json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
}

/* One image's data URL up to its base64: the JSON string
 * "data:<mime>;base64," serialised (so escaped) by json-c, without its
 * closing quote; the base64 and the quote follow in the body. */
typedef struct url_head {
    json_object *obj;
    const char *json;
    size_t len;
} url_head_t;

/* What emit_body() writes: JSON fragments already serialised by json-c, and
 * the images, whose base64 goes straight into the body. */
typedef struct body_parts {
    const char *model; /* the model as a JSON string */
    size_t model_len;
    const char *system; /* the whole system message object */
    size_t system_len;
    const char *text; /* the user text: a JSON string, or a {"type":"text"} part with images */
    size_t text_len;
    const ev_llm_media_t *media;
    const url_head_t *heads; /* one per image */
    size_t media_count;
    int max_tokens;
} body_parts_t;

/* The PROVIDERS.md body, byte for byte what json-c would print for the same
 * tree: {"model":...,"messages":[system message,{"role":"user","content":
 * text or [text part, image parts...]}],"response_format":{"type":
 * "json_object"},"temperature":0,"max_completion_tokens":N}. */
static void emit_body(ev_llm_body_t *b, const void *arg)
{
    const body_parts_t *bp = arg;
    ev_llm_body_puts(b, "{\"model\":");
    ev_llm_body_put(b, bp->model, bp->model_len);
    ev_llm_body_puts(b, ",\"messages\":[");
    ev_llm_body_put(b, bp->system, bp->system_len);
    ev_llm_body_puts(b, ",{\"role\":\"user\",\"content\":");
    if (bp->media_count == 0) {
        ev_llm_body_put(b, bp->text, bp->text_len);
    } else {
        ev_llm_body_puts(b, "[");
        if (bp->text) {
            ev_llm_body_put(b, bp->text, bp->text_len);
            ev_llm_body_puts(b, ",");
        }
        for (size_t i = 0; i < bp->media_count; i++) {
            if (i > 0)
                ev_llm_body_puts(b, ",");
            ev_llm_body_puts(b, "{\"type\":\"image_url\",\"image_url\":{\"url\":");
            ev_llm_body_put(b, bp->heads[i].json, bp->heads[i].len);
            /* Base64 has no character that JSON escapes. */
            ev_llm_body_put_base64(b, bp->media[i].bytes, bp->media[i].len);
            ev_llm_body_puts(b, "\"}}");
        }
        ev_llm_body_puts(b, "]");
    }
    char tokens[24];
    snprintf(tokens, sizeof(tokens), "%d", bp->max_tokens);
    ev_llm_body_puts(b, "}],\"response_format\":{\"type\":\"json_object\"},\"temperature\":0,"
                        "\"max_completion_tokens\":");
    ev_llm_body_puts(b, tokens);
    ev_llm_body_puts(b, "}");
}

int ev_groq_build_body(char **out, size_t *out_len, const ev_llm_request_t *req, const char *model)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    int rc = 0;
    json_object *mo = NULL, *sm = NULL, *to = NULL;
    url_head_t *heads = NULL;
    char *text = NULL, *sys = NULL;
    body_parts_t bp = {0};
    size_t n = 0;
    if (!req || !model) {
        rc = EV_EINVAL;
        goto out;
    }
    n = media_sent(req);
    for (size_t i = 0; i < n; i++) {
        const ev_llm_media_t *m = &req->media[i];
        /* Groq has no PDF input: the caller must send extracted text. */
        if (is_pdf(m->mime) || !is_image(m->mime) || !m->bytes || m->len == 0) {
            rc = EV_EINVAL;
            goto out;
        }
    }
    text = join_text(req);
    if (!text && n == 0) {
        rc = EV_EINVAL;
        goto out;
    }
    sys = system_text(req);

    /* Everything but the images is built and escaped by json-c; their
     * base64 (most of the body) is written by emit_body() directly. */
    bp.media = req->media;
    bp.media_count = n;
    bp.max_tokens =
        req->max_output_tokens > 0 ? req->max_output_tokens : EV_LLM_DEFAULT_MAX_OUTPUT_TOKENS;
    mo = json_object_new_string(model);
    bp.model = serialise(mo, &bp.model_len);
    sm = json_object_new_object();
    json_object_object_add(sm, "role", json_object_new_string("system"));
    json_object_object_add(sm, "content", json_object_new_string(sys));
    bp.system = serialise(sm, &bp.system_len);
    if (!bp.model || !bp.system) {
        rc = EV_ENOMEM;
        goto out;
    }
    if (n == 0) {
        /* Text models accept only a plain string. */
        to = json_object_new_string(text);
    } else if (text) {
        to = json_object_new_object();
        json_object_object_add(to, "type", json_object_new_string("text"));
        json_object_object_add(to, "text", json_object_new_string(text));
    }
    if (to) {
        bp.text = serialise(to, &bp.text_len);
        if (!bp.text) {
            rc = EV_ENOMEM;
            goto out;
        }
    }
    if (n > 0) {
        heads = ev_calloc(n, sizeof(*heads));
        bp.heads = heads;
    }
    for (size_t i = 0; i < n; i++) {
        char *head = ev_asprintf("data:%s;base64,", req->media[i].mime);
        heads[i].obj = json_object_new_string(head);
        free(head);
        heads[i].json = serialise(heads[i].obj, &heads[i].len);
        if (!heads[i].json) {
            rc = EV_ENOMEM;
            goto out;
        }
        /* Drop the closing quote: the base64 goes before it. */
        EV_ASSERT(heads[i].len >= 2 && heads[i].json[heads[i].len - 1] == '"');
        heads[i].len--;
    }

    rc = ev_llm_body_build(out, out_len, emit_body, &bp);

out:
    for (size_t i = 0; heads && i < n; i++)
        json_object_put(heads[i].obj);
    free(heads);
    json_object_put(mo);
    json_object_put(sm);
    json_object_put(to);
    free(text);
    free(sys);
    return rc;
}

/* --------------------------------------------------------------- response */

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? ev_strdup(s) : NULL;
}

/* A non-negative integer header value, or -1. */
static int64_t header_int(const ev_http_response_t *resp, const char *name)
{
    const char *s = ev_http_response_header(resp, name);
    if (!s || !*s)
        return -1;
    int64_t n = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (n > INT64_C(100000000000000))
            return -1;
        n = n * 10 + (*s - '0');
    }
    return n;
}

static int64_t header_duration(const ev_http_response_t *resp, const char *name)
{
    int64_t ms = -1;
    const char *s = ev_http_response_header(resp, name);
    if (s)
        ev_retryhint_duration(&ms, s);
    return ms;
}

static void read_ratelimit(ev_llm_result_t *out, const ev_http_response_t *resp)
{
    out->ratelimit.limit_requests = header_int(resp, "x-ratelimit-limit-requests");
    out->ratelimit.remaining_requests = header_int(resp, "x-ratelimit-remaining-requests");
    out->ratelimit.limit_tokens = header_int(resp, "x-ratelimit-limit-tokens");
    out->ratelimit.remaining_tokens = header_int(resp, "x-ratelimit-remaining-tokens");
    out->ratelimit.reset_requests_ms = header_duration(resp, "x-ratelimit-reset-requests");
    out->ratelimit.reset_tokens_ms = header_duration(resp, "x-ratelimit-reset-tokens");
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
    out->outcome = EV_LLM_BAD_ANSWER;
    if (!root || !json_object_is_type(root, json_type_object)) {
        out->err = EV_EPARSE;
        ev_llm_result_set_error(out, "HTTP %d with a body that is not a JSON object",
                                out->http_status);
        return;
    }
    const char *rid = ev_llm_json_str(ev_llm_json_get(root, "x_groq"), "id");
    if (!rid)
        rid = ev_llm_json_str(root, "id");
    if (rid)
        set_str(&out->request_id, rid);
    json_object *usage = ev_llm_json_get(root, "usage");
    out->tokens_in = ev_llm_json_count(usage, "prompt_tokens");
    out->tokens_cached =
        ev_llm_json_count(ev_llm_json_get(usage, "prompt_tokens_details"), "cached_tokens");
    out->tokens_out = ev_llm_json_count(usage, "completion_tokens");

    json_object *choices = ev_llm_json_get(root, "choices");
    json_object *choice = choices && json_object_is_type(choices, json_type_array) &&
                                  json_object_array_length(choices) > 0
                              ? json_object_array_get_idx(choices, 0)
                              : NULL;
    if (!choice) {
        ev_llm_result_set_error(out, "no choices in the answer");
        return;
    }
    /* The finish reason decides before any text is looked at. */
    const char *finish = ev_llm_json_str(choice, "finish_reason");
    if (finish)
        set_str(&out->finish_reason, finish);
    if (finish && strcmp(finish, "stop") != 0) {
        if (strcmp(finish, "length") == 0)
            ev_llm_result_set_error(out, "answer truncated (finish_reason length)");
        else
            ev_llm_result_set_error(out, "no usable answer: finish_reason %s", finish);
        return;
    }
    const char *content = ev_llm_json_str(ev_llm_json_get(choice, "message"), "content");
    if (!content || all_blank(content)) {
        ev_llm_result_set_error(out, "empty answer text");
        return;
    }
    out->text = ev_strdup(content);
    out->outcome = EV_LLM_OK;
    out->error[0] = '\0';
}

/*
 * A per-minute 429's message states the limit: "... on requests per minute
 * (RPM): Limit 30, Used 30, ..." or "... on tokens per minute (TPM): Limit
 * 6000, ...". Sets the result's stated limit and what it counts.
 */
static void read_stated_limit(ev_llm_result_t *out, const char *message)
{
    if (!message)
        return;
    bool tokens = strstr(message, "(TPM)") != NULL;
    const char *p = strstr(message, tokens ? "(TPM)" : "(RPM)");
    if (!p || !(p = strstr(p, "Limit ")))
        return;
    char *end = NULL;
    double v = strtod(p + 6, &end);
    if (end == p + 6 || !(v > 0 && v < 1e12))
        return;
    out->tokens_limited = tokens;
    out->stated_per_min = v;
}

static void parse_error(ev_llm_result_t *out, json_object *root, const ev_http_response_t *resp)
{
    int st = resp->status;
    json_object *err = ev_llm_json_get(root, "error");
    const char *message = ev_llm_json_str(err, "message");
    const char *code = ev_llm_json_str(err, "code");

    /* The retry-after header wins; the message is the fallback hint. */
    int64_t hint = -1;
    const char *ra = ev_http_response_header(resp, "retry-after");
    if (ra)
        ev_retryhint_retry_after(&hint, ra);
    if (hint < 0 && message)
        ev_retryhint_from_message(&hint, message);
    out->retry_after_ms = hint;

    char msg[120];
    if (message)
        ev_llm_snippet(msg, sizeof(msg), message, strlen(message));
    else if (!resp->body || resp->body_len == 0)
        snprintf(msg, sizeof(msg), "(empty body)");
    else if (!root)
        snprintf(msg, sizeof(msg), "(body is not JSON)");
    else
        snprintf(msg, sizeof(msg), "(no error message)");
    ev_llm_result_set_error(out, "HTTP %d%s%s: %s", st, code ? " " : "", code ? code : "", msg);

    if (code && strcmp(code, "model_decommissioned") == 0) {
        out->outcome = EV_LLM_MODEL_UNAVAILABLE;
        out->model_status = EV_MODEL_RETIRED;
    } else if ((code && strcmp(code, "model_not_found") == 0) ||
               (st == 404 && ev_llm_contains_ci(message, "does not exist"))) {
        out->outcome = EV_LLM_MODEL_UNAVAILABLE;
        out->model_status = EV_MODEL_UNKNOWN;
    } else if (st == 429 && ev_llm_contains_ci(message, "request too large")) {
        /* The single request exceeds a per-minute token limit (TPM/OTPM):
         * no wait makes it fit, and the quota itself is not exhausted, so
         * neither a retry nor a provider-wide pause. */
        out->outcome = EV_LLM_FALLBACK;
        out->too_large = true;
    } else if (st == 400) {
        if (code && strcmp(code, "json_validate_failed") == 0)
            out->outcome = EV_LLM_BAD_ANSWER; /* the model's JSON was invalid: one retry */
        else if (code && strcmp(code, "invalid_api_key") == 0)
            out->outcome = EV_LLM_FATAL_CONFIG;
        else if ((code && strcmp(code, "context_length_exceeded") == 0) ||
                 ev_llm_contains_ci(message, "reduce the length"))
            out->outcome = EV_LLM_FALLBACK, out->too_large = true;
        else
            out->outcome = EV_LLM_BAD_REQUEST;
    } else if (st == 429) {
        out->rate_limited = true;
        /* Requests are counted per day: none left means the daily quota. */
        bool daily = ev_llm_contains_ci(message, "per day") ||
                     ev_llm_contains_ci(message, "(RPD)") || ev_llm_contains_ci(message, "(TPD)") ||
                     out->ratelimit.remaining_requests == 0;
        out->daily_quota = daily;
        out->outcome = daily ? EV_LLM_FALLBACK : EV_LLM_RETRY;
        if (!daily)
            read_stated_limit(out, message);
    } else {
        /* Groq's 413 (code rate_limit_exceeded, "Request too large") looks
         * like a rate limit but the request itself exceeds the model's limit:
         * it never succeeds on retry, and says nothing about the quota. */
        out->outcome = ev_llm_outcome_for_status(st, &out->too_large);
    }
}

void ev_groq_parse_response(ev_llm_result_t *out, const ev_http_response_t *resp,
                            int64_t max_wait_ms)
{
    out->http_status = resp->status;
    read_ratelimit(out, resp);
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

int ev_groq_call(ev_groq_t *g, ev_http_t *http, const ev_llm_request_t *req, ev_llm_result_t *out,
                 const atomic_bool *stop)
{
    if (!g || !req) {
        ev_llm_result_init(out);
        out->outcome = EV_LLM_BAD_REQUEST;
        out->err = EV_EINVAL;
        ev_llm_result_set_error(out, "invalid call arguments");
        return EV_EINVAL;
    }
    return ev_provider_call(&ev_provider_groq, &g->cfg, &g->opts, http, ev_groq_model_for(g, req),
                            req, out, stop);
}
