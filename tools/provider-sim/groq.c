/*
 * groq.c - the simulated Groq (OpenAI-compatible) chat completions endpoint.
 *
 * What: answers POST /groq/openai/v1/chat/completions like Groq does
 * (PROVIDERS.md): the same success and error bodies, 401/404/413/429 codes,
 * retry-after on 429 and the x-ratelimit-* headers on every answer. Requests
 * are validated strictly: unknown properties, images without the vision
 * model, more than max_images images, PDFs, JSON mode without the word
 * "json" are all 400s counted as malformed.
 *
 * How: one pass in a fixed order (route, key, early faults, size, rate limit,
 * body, token limit, latency, late fault, answer); the rate-limit headers are
 * added last so they reflect this request.
 *
 * Threads: called on server connection threads with no lock held; shared
 * state goes through provider.c.
 */
#include "sim.h"

#include "ev/clock.h"
#include "ev/error.h"
#include "ev/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PATH "/openai/v1/chat/completions"
#define IMAGE_TOKENS 800 /* rough prompt tokens one image costs */

/* Nominal header values when a limit is disabled (0). */
#define NOMINAL_RPD 14400
#define NOMINAL_TPM 300000

/* ---------------------------------------------------------------- errors */

static json_object *error_obj(const char *msg, const char *type, const char *code)
{
    json_object *e = json_object_new_object();
    json_object_object_add(e, "message", json_object_new_string(msg));
    json_object_object_add(e, "type", json_object_new_string(type));
    if (code)
        json_object_object_add(e, "code", json_object_new_string(code));
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", e);
    return o;
}

static void reply_error(sim_reply_t *out, int status, const char *msg, const char *type,
                        const char *code)
{
    sim_reply_json(out, status, error_obj(msg, type, code), false);
}

static void reply_invalid(sim_provider_t *p, sim_reply_t *out, int status, const char *msg,
                          const char *code)
{
    sim_provider_malformed(p, msg);
    reply_error(out, status, msg, "invalid_request_error", code);
}

static void reply_bad_key(sim_provider_t *p, sim_reply_t *out)
{
    atomic_fetch_add_explicit(&p->auth_failed, 1, memory_order_relaxed);
    reply_error(out, 401, "Invalid API Key", "invalid_request_error", "invalid_api_key");
}

/* The 429 body; `daily` picks the requests-per-day wording. */
static json_object *rate_error(const char *model, bool daily, int64_t limit, int64_t retry_us)
{
    char dur[32];
    sim_fmt_duration(dur, sizeof(dur), retry_us);
    char *msg = ev_asprintf(
        "Rate limit reached for model `%s` in organization `org_sim` service tier `on_demand` "
        "on requests per %s (%s): Limit %lld, Used %lld, Requested 1. Please try again in %s. "
        "Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing",
        model, daily ? "day" : "minute", daily ? "RPD" : "RPM", (long long)limit, (long long)limit,
        dur);
    json_object *o = error_obj(msg, "requests", "rate_limit_exceeded");
    free(msg);
    return o;
}

static void reply_rate_limited(sim_provider_t *p, sim_reply_t *out, const char *model, bool daily,
                               int64_t limit, int64_t retry_us, bool array)
{
    json_object *o = rate_error(model, daily, limit, retry_us);
    if (array) {
        json_object *arr = json_object_new_array();
        json_object_array_add(arr, o);
        o = arr;
    }
    atomic_fetch_add_explicit(&p->rate_limited, 1, memory_order_relaxed);
    sim_reply_json(out, 429, o, false);
    char secs[32];
    sim_fmt_seconds(secs, sizeof(secs), retry_us);
    sim_reply_header(out, "retry-after", "%s", secs);
}

/* Groq's 429 for tokens per minute: type "tokens", retry-after and the
 * "Please try again in" hint say when enough tokens leave the minute. */
static void reply_tokens_limited(sim_provider_t *p, sim_reply_t *out, const char *model,
                                 int64_t limit, int64_t used, int64_t requested, int64_t retry_us)
{
    char dur[32], secs[32];
    sim_fmt_duration(dur, sizeof(dur), retry_us);
    sim_fmt_seconds(secs, sizeof(secs), retry_us);
    char *msg = ev_asprintf(
        "Rate limit reached for model `%s` in organization `org_sim` service tier `on_demand` "
        "on tokens per minute (TPM): Limit %lld, Used %lld, Requested %lld. Please try again in "
        "%s. Need more tokens? Upgrade to Dev Tier today at "
        "https://console.groq.com/settings/billing",
        model, (long long)limit, (long long)used, (long long)requested, dur);
    atomic_fetch_add_explicit(&p->rate_limited, 1, memory_order_relaxed);
    sim_reply_json(out, 429, error_obj(msg, "tokens", "rate_limit_exceeded"), false);
    sim_reply_header(out, "retry-after", "%s", secs);
    free(msg);
}

static void reply_tokens_too_large(sim_provider_t *p, sim_reply_t *out, const char *model,
                                   int64_t limit, int64_t requested)
{
    char *msg = ev_asprintf(
        "Request too large for model `%s` in organization `org_sim` service tier `on_demand` on "
        "tokens per minute (TPM): Limit %lld, Requested %lld, please reduce your message size and "
        "try again. Need more tokens? Upgrade to Dev Tier today at "
        "https://console.groq.com/settings/billing",
        model, (long long)limit, (long long)requested);
    atomic_fetch_add_explicit(&p->too_large, 1, memory_order_relaxed);
    sim_reply_json(out, 413, error_obj(msg, "tokens", "rate_limit_exceeded"), false);
    free(msg);
}

/* Every Groq answer carries these (lower-case), reflecting the quota state. */
static void add_ratelimit_headers(sim_provider_t *p, const sim_settings_t *s, sim_reply_t *out)
{
    sim_usage_t u;
    int64_t now = sim_now_us();
    sim_provider_usage(p, now, &u);
    int64_t rpd = s->rpd > 0 ? s->rpd : NOMINAL_RPD;
    int64_t tpm = s->tpm > 0 ? s->tpm : NOMINAL_TPM;
    int64_t rem_req = rpd - u.day_used, rem_tok = tpm - u.tokens_minute;
    char reset_req[32], reset_tok[32];
    /* The day's requests come back gradually: used/limit of a day. */
    sim_fmt_duration(reset_req, sizeof(reset_req),
                     (int64_t)((double)EV_MIN(u.day_used, rpd) / (double)rpd * 86400e6));
    sim_fmt_duration(reset_tok, sizeof(reset_tok),
                     (int64_t)((double)EV_MIN(u.tokens_minute, tpm) / (double)tpm * 60e6));
    sim_reply_header(out, "x-ratelimit-limit-requests", "%lld", (long long)rpd);
    sim_reply_header(out, "x-ratelimit-limit-tokens", "%lld", (long long)tpm);
    sim_reply_header(out, "x-ratelimit-remaining-requests", "%lld", (long long)EV_MAX(rem_req, 0));
    sim_reply_header(out, "x-ratelimit-remaining-tokens", "%lld", (long long)EV_MAX(rem_tok, 0));
    sim_reply_header(out, "x-ratelimit-reset-requests", "%s", reset_req);
    sim_reply_header(out, "x-ratelimit-reset-tokens", "%s", reset_tok);
    char id[27];
    sim_random_id(id, 26);
    sim_reply_header(out, "x-request-id", "req_%s", id);
}

/* ------------------------------------------------------------ validation */

typedef struct vctx {
    char msg[SIM_REASON_MAX];
    int status;       /* 400 unless said otherwise */
    const char *code; /* error code, NULL for none */
    unsigned markers;
    int64_t text_chars;
    int64_t images;
    bool mentions_json;
    int64_t max_tokens; /* -1 when unset */
    const char *model;
    const sim_settings_t *s;
} vctx_t;

static int fail(vctx_t *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(vctx_t *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->msg, sizeof(v->msg), fmt, ap);
    va_end(ap);
    return EV_EINVAL;
}

static bool in_list(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(name, *list) == 0)
            return true;
    return false;
}

static int check_fields(vctx_t *v, json_object *obj, const char *where, const char *const *allowed)
{
    json_object_object_foreach(obj, key, val)
    {
        (void)val;
        if (!in_list(key, allowed))
            return fail(v, "property '%s%s%s' is unsupported", where, where[0] ? "." : "", key);
    }
    return 0;
}

static bool is_number(json_object *o)
{
    return json_object_is_type(o, json_type_int) || json_object_is_type(o, json_type_double);
}

static void scan_text(vctx_t *v, const char *text, size_t n)
{
    v->text_chars += (int64_t)n;
    v->markers |= sim_markers_scan(text, n);
    if (sim_contains_ci(text, n, "json"))
        v->mentions_json = true;
}

static const char *const image_types[] = {"image/png", "image/jpeg", "image/webp", "image/gif",
                                          NULL};

static int check_image(vctx_t *v, json_object *img, const char *where)
{
    static const char *const allowed[] = {"url", "detail", NULL};
    if (!json_object_is_type(img, json_type_object))
        return fail(v, "'%s' : value must be an object", where);
    int rc = check_fields(v, img, where, allowed);
    if (rc < 0)
        return rc;
    json_object *url = NULL;
    if (!json_object_object_get_ex(img, "url", &url) || !json_object_is_type(url, json_type_string))
        return fail(v, "'%s.url' : property 'url' is missing or not a string", where);
    const char *u = json_object_get_string(url);
    size_t ulen = (size_t)json_object_get_string_len(url);
    if (strncmp(u, "data:", 5) != 0)
        return fail(v,
                    "'%s.url' : the simulator accepts only data: URLs (data:image/png;base64,...)",
                    where);
    const char *comma = memchr(u, ',', ulen);
    const char *semi = memchr(u, ';', ulen);
    if (!comma || !semi || semi > comma || comma - semi != 7 || strncmp(semi, ";base64", 7) != 0)
        return fail(v, "'%s.url' : invalid data URL: expected data:<mime>;base64,<data>", where);
    char mime[64];
    size_t mlen = (size_t)(semi - (u + 5));
    if (mlen == 0 || mlen >= sizeof(mime))
        return fail(v, "'%s.url' : invalid data URL: missing MIME type", where);
    memcpy(mime, u + 5, mlen);
    mime[mlen] = '\0';
    if (strcmp(mime, "application/pdf") == 0)
        return fail(v,
                    "'%s.url' : PDF input is not supported: Groq takes images only; send the "
                    "PDF's extracted text instead",
                    where);
    if (!in_list(mime, image_types))
        return fail(v, "'%s.url' : unsupported image type %s (png, jpeg, webp, gif)", where, mime);
    unsigned char *raw = NULL;
    size_t rawlen = 0;
    const char *b64 = comma + 1;
    if (sim_b64_decode(b64, ulen - (size_t)(b64 - u), &raw, &rawlen) < 0)
        return fail(v, "'%s.url' : invalid base64 image data", where);
    bool ok = sim_sniff_matches(mime, raw, rawlen);
    if (ok)
        v->markers |= sim_markers_scan(raw, rawlen);
    free(raw);
    if (!ok)
        return fail(v, "'%s.url' : invalid image data: the bytes are not %s", where, mime);
    v->images++;
    return 0;
}

static int check_content(vctx_t *v, json_object *content, const char *where, const char *role)
{
    char path[160];
    if (json_object_is_type(content, json_type_string)) {
        scan_text(v, json_object_get_string(content), (size_t)json_object_get_string_len(content));
        return 0;
    }
    if (!json_object_is_type(content, json_type_array))
        return fail(v, "'%s' : value must be a string or an array of content parts", where);
    if (strcmp(role, "assistant") == 0 || strcmp(role, "tool") == 0)
        return fail(v, "'%s' : for 'role:%s' the content must be a string", where, role);
    size_t n = json_object_array_length(content);
    if (n == 0)
        return fail(v, "'%s' : content must not be empty", where);
    for (size_t i = 0; i < n; i++) {
        json_object *part = json_object_array_get_idx(content, i);
        snprintf(path, sizeof(path), "%s.%zu", where, i);
        if (!json_object_is_type(part, json_type_object))
            return fail(v, "'%s' : value must be an object", path);
        json_object *type = NULL;
        if (!json_object_object_get_ex(part, "type", &type) ||
            !json_object_is_type(type, json_type_string))
            return fail(v, "'%s' : property 'type' is missing", path);
        const char *t = json_object_get_string(type);
        if (strcmp(t, "text") == 0) {
            static const char *const allowed[] = {"type", "text", NULL};
            int rc = check_fields(v, part, path, allowed);
            if (rc < 0)
                return rc;
            json_object *text = NULL;
            if (!json_object_object_get_ex(part, "text", &text) ||
                !json_object_is_type(text, json_type_string))
                return fail(v, "'%s.text' : property 'text' is missing or not a string", path);
            scan_text(v, json_object_get_string(text), (size_t)json_object_get_string_len(text));
        } else if (strcmp(t, "image_url") == 0) {
            static const char *const allowed[] = {"type", "image_url", NULL};
            int rc = check_fields(v, part, path, allowed);
            if (rc < 0)
                return rc;
            if (strcmp(role, "user") != 0)
                return fail(v, "'%s' : images are only allowed in user messages", path);
            if (!sim_list_has(v->s->vision_models, v->model))
                return fail(v,
                            "'%s' : model `%s` does not support image input; use a vision model "
                            "(%s)",
                            path, v->model, v->s->vision_models);
            json_object *img = NULL;
            json_object_object_get_ex(part, "image_url", &img);
            snprintf(path, sizeof(path), "%s.%zu.image_url", where, i);
            rc = check_image(v, img, path);
            if (rc < 0)
                return rc;
        } else {
            return fail(v, "'%s.type' : value must be one of 'text', 'image_url'", path);
        }
    }
    return 0;
}

static int check_request(vctx_t *v, json_object *req)
{
    static const char *const allowed[] = {"model",
                                          "messages",
                                          "response_format",
                                          "temperature",
                                          "max_completion_tokens",
                                          "max_tokens",
                                          "top_p",
                                          "stream",
                                          "stop",
                                          "seed",
                                          "n",
                                          "user",
                                          "frequency_penalty",
                                          "presence_penalty",
                                          "tools",
                                          "tool_choice",
                                          "parallel_tool_calls",
                                          "reasoning_effort",
                                          "reasoning_format",
                                          "include_reasoning",
                                          "service_tier",
                                          "logprobs",
                                          "top_logprobs",
                                          "metadata",
                                          NULL};
    if (!json_object_is_type(req, json_type_object))
        return fail(v, "the request body must be a JSON object");
    int rc = check_fields(v, req, "", allowed);
    if (rc < 0)
        return rc;
    json_object *model = NULL;
    if (!json_object_object_get_ex(req, "model", &model) ||
        !json_object_is_type(model, json_type_string))
        return fail(v, "'model' : property 'model' is missing");
    v->model = json_object_get_string(model);
    if (sim_list_has(v->s->retired, v->model)) {
        v->code = "model_decommissioned";
        return fail(v, "The model `%s` has been decommissioned and is no longer supported.",
                    v->model);
    }
    if (!sim_list_has(v->s->models, v->model) && !sim_list_has(v->s->vision_models, v->model)) {
        v->status = 404;
        v->code = "model_not_found";
        return fail(v, "The model `%s` does not exist or you do not have access to it.", v->model);
    }
    json_object *messages = NULL;
    if (!json_object_object_get_ex(req, "messages", &messages) ||
        !json_object_is_type(messages, json_type_array) || json_object_array_length(messages) == 0)
        return fail(v, "'messages' : property 'messages' is missing or empty");
    char path[64];
    for (size_t i = 0; i < json_object_array_length(messages); i++) {
        static const char *const m_allowed[] = {"role",         "content",   "name", "tool_calls",
                                                "tool_call_id", "reasoning", NULL};
        json_object *m = json_object_array_get_idx(messages, i);
        snprintf(path, sizeof(path), "messages.%zu", i);
        if (!json_object_is_type(m, json_type_object))
            return fail(v, "'%s' : value must be an object", path);
        rc = check_fields(v, m, path, m_allowed);
        if (rc < 0)
            return rc;
        json_object *role = NULL, *content = NULL;
        if (!json_object_object_get_ex(m, "role", &role) ||
            !json_object_is_type(role, json_type_string))
            return fail(v, "'%s' : property 'role' is missing", path);
        const char *r = json_object_get_string(role);
        if (strcmp(r, "system") != 0 && strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0 &&
            strcmp(r, "tool") != 0)
            return fail(v, "'%s.role' : value must be one of 'system', 'user', 'assistant', 'tool'",
                        path);
        if (!json_object_object_get_ex(m, "content", &content) || !content)
            return fail(v, "'%s' : property 'content' is missing", path);
        char cp[96];
        snprintf(cp, sizeof(cp), "%s.content", path);
        rc = check_content(v, content, cp, r);
        if (rc < 0)
            return rc;
    }
    if (v->images > v->s->max_images)
        return fail(v, "Too many images provided. This model supports up to %lld images",
                    (long long)v->s->max_images);

    json_object *rf = NULL;
    const char *rf_type = NULL;
    if (json_object_object_get_ex(req, "response_format", &rf)) {
        static const char *const rf_allowed[] = {"type", "json_schema", NULL};
        json_object *t = NULL;
        if (!json_object_is_type(rf, json_type_object))
            return fail(v, "'response_format' : value must be an object");
        rc = check_fields(v, rf, "response_format", rf_allowed);
        if (rc < 0)
            return rc;
        if (!json_object_object_get_ex(rf, "type", &t) || !json_object_is_type(t, json_type_string))
            return fail(v, "'response_format.type' : property 'type' is missing");
        rf_type = json_object_get_string(t);
        if (strcmp(rf_type, "text") != 0 && strcmp(rf_type, "json_object") != 0 &&
            strcmp(rf_type, "json_schema") != 0)
            return fail(v, "'response_format.type' : value must be one of 'text', 'json_object', "
                           "'json_schema'");
        if (strcmp(rf_type, "json_object") == 0 && !v->mentions_json)
            return fail(v, "'messages' must contain the word 'json' in some form, to use "
                           "'response_format' of type 'json_object'.");
        if (strcmp(rf_type, "json_schema") == 0 &&
            (!json_object_object_get_ex(rf, "json_schema", &t) ||
             !json_object_is_type(t, json_type_object)))
            return fail(v, "'response_format.json_schema' : property 'json_schema' is missing");
    }
    if (v->s->require_json_mode && (!rf_type || strcmp(rf_type, "text") == 0))
        return fail(v, "response_format must be {\"type\":\"json_object\"} (the simulator requires "
                       "JSON mode, see PROVIDERS.md)");

    json_object *x = NULL;
    if (json_object_object_get_ex(req, "temperature", &x) &&
        (!is_number(x) || json_object_get_double(x) < 0 || json_object_get_double(x) > 2))
        return fail(v, "'temperature' : number must be at most 2 and at least 0");
    if (json_object_object_get_ex(req, "top_p", &x) &&
        (!is_number(x) || json_object_get_double(x) < 0 || json_object_get_double(x) > 1))
        return fail(v, "'top_p' : number must be at most 1 and at least 0");
    json_object *mct = NULL, *mt = NULL;
    json_object_object_get_ex(req, "max_completion_tokens", &mct);
    json_object_object_get_ex(req, "max_tokens", &mt);
    if (mct && mt)
        return fail(v, "'max_tokens' and 'max_completion_tokens' cannot both be set");
    json_object *lim = mct ? mct : mt;
    if (lim) {
        if (!json_object_is_type(lim, json_type_int) || json_object_get_int64(lim) < 1)
            return fail(v, "'%s' : value must be a positive integer",
                        mct ? "max_completion_tokens" : "max_tokens");
        v->max_tokens = json_object_get_int64(lim);
    }
    if (json_object_object_get_ex(req, "n", &x) &&
        (!json_object_is_type(x, json_type_int) || json_object_get_int64(x) != 1))
        return fail(v, "'n' : value must be at most 1");
    if (json_object_object_get_ex(req, "stream", &x) &&
        (!json_object_is_type(x, json_type_boolean) || json_object_get_boolean(x)))
        return fail(v, "'stream' : the simulator does not stream; omit it or send false");
    return 0;
}

/* ------------------------------------------------------------- answering */

static void reply_completion(sim_reply_t *out, const char *model, const char *content,
                             const char *finish, int64_t prompt, int64_t completion)
{
    char id[32], xid[32];
    sim_random_id(id, 26);
    sim_random_id(xid, 26);
    json_object *msg = json_object_new_object();
    json_object_object_add(msg, "role", json_object_new_string("assistant"));
    json_object_object_add(msg, "content", json_object_new_string(content));
    json_object *choice = json_object_new_object();
    json_object_object_add(choice, "index", json_object_new_int(0));
    json_object_object_add(choice, "message", msg);
    json_object_object_add(choice, "logprobs", NULL);
    json_object_object_add(choice, "finish_reason", json_object_new_string(finish));
    json_object *choices = json_object_new_array();
    json_object_array_add(choices, choice);
    json_object *usage = json_object_new_object();
    json_object_object_add(usage, "queue_time", json_object_new_double_s(0.0123, "0.0123"));
    json_object_object_add(usage, "prompt_tokens", json_object_new_int64(prompt));
    json_object_object_add(usage, "prompt_time", json_object_new_double_s(0.01, "0.01"));
    json_object_object_add(usage, "completion_tokens", json_object_new_int64(completion));
    json_object_object_add(usage, "completion_time", json_object_new_double_s(0.05, "0.05"));
    json_object_object_add(usage, "total_tokens", json_object_new_int64(prompt + completion));
    json_object_object_add(usage, "total_time", json_object_new_double_s(0.06, "0.06"));
    json_object *o = json_object_new_object();
    char *cid = ev_asprintf("chatcmpl-%s", id);
    json_object_object_add(o, "id", json_object_new_string(cid));
    free(cid);
    json_object_object_add(o, "object", json_object_new_string("chat.completion"));
    json_object_object_add(o, "created",
                           json_object_new_int64(ev_clock_wall_us(ev_clock_system()) / 1000000));
    json_object_object_add(o, "model", json_object_new_string(model));
    json_object_object_add(o, "choices", choices);
    json_object_object_add(o, "usage", usage);
    json_object_object_add(o, "system_fingerprint", json_object_new_string("fp_sim0000"));
    json_object *xg = json_object_new_object();
    char *rid = ev_asprintf("req_%s", xid);
    json_object_object_add(xg, "id", json_object_new_string(rid));
    free(rid);
    json_object_object_add(o, "x_groq", xg);
    sim_reply_json(out, 200, o, false);
}

static const char cloudflare_html[] =
    "<html>\r\n<head><title>%d Bad Gateway</title></head>\r\n<body>\r\n<center><h1>%d Bad "
    "Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";

static void serve_late_fault(sim_provider_t *p, const sim_settings_t *s, sim_fault_t f,
                             const char *model, const char *answer, int64_t prompt,
                             sim_reply_t *out)
{
    sim_provider_fault_served(p, f);
    switch (f) {
    case SIM_FAULT_OVERLOADED: {
        char *msg = ev_asprintf("%s is currently over capacity. Please try again and back off "
                                "exponentially. Visit https://groqstatus.com to see if there is an "
                                "active incident.",
                                model);
        reply_error(out, 503, msg, "internal_server_error", "service_unavailable");
        free(msg);
        break;
    }
    case SIM_FAULT_INTERNAL:
        reply_error(out, 500, "Internal Server Error", "internal_server_error", NULL);
        break;
    case SIM_FAULT_DEADLINE:
        reply_error(out, 504, "Gateway Timeout", "internal_server_error", NULL);
        break;
    case SIM_FAULT_HTML: {
        char *html = ev_asprintf(cloudflare_html, (int)s->html_status, (int)s->html_status);
        sim_reply_text(out, (int)s->html_status, "text/html", html);
        free(html);
        break;
    }
    case SIM_FAULT_EMPTY:
        sim_reply_text(out, (int)s->html_status, "application/json", "");
        break;
    case SIM_FAULT_GARBAGE:
        sim_reply_text(out, 200, "application/json",
                       "upstream connect error or disconnect/reset before headers. reset reason: "
                       "connection termination");
        break;
    case SIM_FAULT_BLOCKED:
        /* A content refusal: a normal completion whose text is not the JSON asked for. */
        reply_completion(out, model, "I'm sorry, but I can't help with that request.", "stop",
                         prompt, 12);
        break;
    case SIM_FAULT_TRUNCATED: {
        char *cut = ev_strndup(answer, strlen(answer) / 2);
        reply_completion(out, model, cut, "length", prompt, ((int64_t)strlen(cut) + 3) / 4);
        free(cut);
        break;
    }
    case SIM_FAULT_ARRAY_ERROR:
        reply_rate_limited(p, out, model, false, s->rpm > 0 ? s->rpm : 30,
                           ev_rand_range(1000000, 30000000), true);
        break;
    case SIM_FAULT_FENCED: {
        char *text = ev_asprintf("Sure! Here is the evaluation you asked for:\n```json\n%s\n```\n"
                                 "I hope this helps.",
                                 answer);
        reply_completion(out, model, text, "stop", prompt, ((int64_t)strlen(text) + 3) / 4);
        free(text);
        break;
    }
    case SIM_FAULT_JSON_FAILED: {
        json_object *o = error_obj("Failed to generate JSON. Please adjust your prompt. See "
                                   "'failed_generation' for more details.",
                                   "invalid_request_error", "json_validate_failed");
        json_object *e = NULL;
        json_object_object_get_ex(o, "error", &e);
        char *cut = ev_strndup(answer, strlen(answer) * 2 / 3);
        json_object_object_add(e, "failed_generation", json_object_new_string(cut));
        free(cut);
        sim_reply_json(out, 400, o, false);
        break;
    }
    case SIM_FAULT_HANG:
        reply_error(out, 504, "Gateway Timeout", "internal_server_error", NULL);
        out->action = SIM_REPLY_HANG;
        out->hang_ms = s->hang_ms;
        atomic_fetch_add_explicit(&p->hung, 1, memory_order_relaxed);
        break;
    default:
        EV_ASSERT(!"unexpected late fault");
    }
}

/* ------------------------------------------------------------------ entry */

void sim_groq_handle(sim_provider_t *p, const sim_request_t *rq, sim_reply_t *out)
{
    sim_settings_t s;
    sim_provider_snapshot(p, &s);
    json_object *req = NULL;
    char msg[SIM_REASON_MAX];
    /* Before the body is parsed, errors name the text model. */
    const char *model = "llama-3.3-70b-versatile";
    static const char bearer[] = "Bearer ";

    if (strcmp(rq->method, "POST") != 0 || strcmp(rq->path, PATH) != 0) {
        snprintf(msg, sizeof(msg),
                 "Unknown request URL: %s /groq%s. Please check the URL for "
                 "typos, or see the docs at https://console.groq.com/docs/",
                 rq->method, rq->path);
        reply_invalid(p, out, 404, msg, "unknown_url");
        goto out;
    }
    const char *auth = rq->authorization;
    if (!auth || strncmp(auth, bearer, sizeof(bearer) - 1) != 0 || !auth[sizeof(bearer) - 1] ||
        (s.key[0] && strcmp(auth + sizeof(bearer) - 1, s.key) != 0)) {
        reply_bad_key(p, out);
        goto out;
    }
    sim_fault_t f = sim_provider_take_fault(p, true);
    if (f == SIM_FAULT_BAD_KEY) {
        sim_provider_fault_served(p, f);
        reply_bad_key(p, out);
        goto out;
    }
    if (f == SIM_FAULT_DAILY_QUOTA) {
        sim_provider_fault_served(p, f);
        int64_t rpd = s.rpd > 0 ? s.rpd : 1000;
        reply_rate_limited(p, out, model, true, rpd, (int64_t)(86400e6 / (double)rpd), false);
        goto out;
    }
    if (f == SIM_FAULT_TOO_LARGE) {
        sim_provider_fault_served(p, f);
        reply_tokens_too_large(p, out, model, s.tpm > 0 ? s.tpm : NOMINAL_TPM,
                               (s.tpm > 0 ? s.tpm : NOMINAL_TPM) + 1234);
        goto out;
    }
    if (rq->early || rq->too_big || (int64_t)rq->total_len > s.max_body_bytes) {
        atomic_fetch_add_explicit(&p->too_large, 1, memory_order_relaxed);
        sim_provider_malformed(p, "Request Entity Too Large (body above max_body_bytes)");
        reply_error(out, 413, "Request Entity Too Large", "invalid_request_error",
                    "request_too_large");
        goto out;
    }
    if (!rq->content_type || strncasecmp(rq->content_type, "application/json", 16) != 0) {
        snprintf(msg, sizeof(msg), "Content-Type must be application/json (got %s)",
                 rq->content_type ? rq->content_type : "none");
        reply_invalid(p, out, 400, msg, NULL);
        goto out;
    }
    char perr[200];
    req = sim_json_parse(rq->body, rq->body_len, perr, sizeof(perr));
    if (!req) {
        snprintf(msg, sizeof(msg), "We could not parse the JSON body of your request. (%s)", perr);
        reply_invalid(p, out, 400, msg, NULL);
        goto out;
    }
    vctx_t v = {.status = 400, .max_tokens = -1, .model = "", .s = &s};
    if (check_request(&v, req) < 0) {
        reply_invalid(p, out, v.status, v.msg, v.code);
        goto out;
    }
    model = v.model;
    if (v.images > 0 && (int64_t)rq->total_len > s.vision_max_bytes) {
        atomic_fetch_add_explicit(&p->too_large, 1, memory_order_relaxed);
        sim_provider_malformed(
            p, "Request Entity Too Large (request with images above vision_max_bytes)");
        reply_error(out, 413, "Request Entity Too Large", "invalid_request_error",
                    "request_too_large");
        goto out;
    }
    /* Groq limits per model; knowing the model first makes the 429 name it. */
    sim_admit_t adm;
    sim_provider_admit(p, sim_now_us(), &adm);
    if (adm.limited) {
        int64_t retry = adm.daily ? (int64_t)(86400e6 / (double)adm.limit) : adm.retry_us;
        reply_rate_limited(p, out, model, adm.daily, adm.limit, retry, false);
        goto out;
    }
    int64_t prompt = (v.text_chars + 3) / 4 + v.images * IMAGE_TOKENS;
    if (s.tpm > 0 && prompt > s.tpm) {
        reply_tokens_too_large(p, out, model, s.tpm, prompt);
        goto out;
    }
    /* Tokens per minute: the call's prompt and answer count when it is
     * admitted (the answer is known here: it depends only on the markers). */
    char *answer = sim_verdict_text(v.markers, s.drop_part);
    int64_t completion = ((int64_t)strlen(answer) + 3) / 4;
    int64_t tok_used = 0, tok_retry = 0;
    if (!sim_provider_take_tokens(p, sim_now_us(), prompt + completion, s.tpm, &tok_used,
                                  &tok_retry)) {
        reply_tokens_limited(p, out, model, s.tpm, tok_used, prompt + completion, tok_retry);
        free(answer);
        goto out;
    }

    if (!sim_server_sleep_ms(sim_latency_ms(&s))) {
        out->action = SIM_REPLY_CLOSE;
        free(answer);
        goto out;
    }
    f = sim_provider_take_fault(p, false);
    if (f != SIM_FAULT_NONE) {
        serve_late_fault(p, &s, f, model, answer, prompt, out);
    } else if (v.max_tokens > 0 && completion > v.max_tokens) {
        char *cut = ev_strndup(answer, (size_t)v.max_tokens * 4);
        reply_completion(out, model, cut, "length", prompt, v.max_tokens);
        free(cut);
    } else {
        reply_completion(out, model, answer, "stop", prompt, completion);
        atomic_fetch_add_explicit(&p->ok, 1, memory_order_relaxed);
        atomic_fetch_add_explicit((v.markers & SIM_MARKERS) ? &p->verdict_invalid
                                                            : &p->verdict_valid,
                                  1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&p->tokens_in, prompt, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->tokens_out, completion, memory_order_relaxed);
    free(answer);
out:
    if (out->action != SIM_REPLY_CLOSE)
        add_ratelimit_headers(p, &s, out);
    json_object_put(req);
}

/* Adds every model of a comma-separated list but the retired ones. */
static void add_models(json_object *data, const char *list, const char *retired)
{
    char buf[SIM_LIST_MAX];
    snprintf(buf, sizeof(buf), "%s", list);
    for (char *save = NULL, *m = strtok_r(buf, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
        if (sim_list_has(retired, m))
            continue;
        json_object *e = json_object_new_object();
        json_object_object_add(e, "id", json_object_new_string(m));
        json_object_object_add(e, "object", json_object_new_string("model"));
        json_object_object_add(e, "owned_by", json_object_new_string("sim"));
        json_object_object_add(e, "active", json_object_new_boolean(true));
        json_object_object_add(e, "context_window", json_object_new_int(131072));
        json_object_array_add(data, e);
    }
}

void sim_groq_models(sim_provider_t *p, const sim_request_t *rq, sim_reply_t *out)
{
    sim_settings_t s;
    sim_provider_snapshot(p, &s);
    static const char bearer[] = "Bearer ";
    if (strcmp(rq->path, "/openai/v1/models") != 0) {
        reply_invalid(p, out, 404, "Unknown request URL: GET /groq. Please check the URL.",
                      "unknown_url");
        return;
    }
    const char *auth = rq->authorization;
    if (!auth || strncmp(auth, bearer, sizeof(bearer) - 1) != 0 || !auth[sizeof(bearer) - 1] ||
        (s.key[0] && strcmp(auth + sizeof(bearer) - 1, s.key) != 0)) {
        /* Not counted in auth_failed: a model lookup is not a request. */
        reply_error(out, 401, "Invalid API Key", "invalid_request_error", "invalid_api_key");
        return;
    }
    json_object *o = json_object_new_object();
    json_object *data = json_object_new_array();
    add_models(data, s.models, s.retired);
    add_models(data, s.vision_models, s.retired);
    json_object_object_add(o, "object", json_object_new_string("list"));
    json_object_object_add(o, "data", data);
    sim_reply_json(out, 200, o, true);
}
