/*
 * gemini.c - the simulated Gemini generateContent endpoint.
 *
 * What: answers POST /gemini/v1beta/models/{model}:generateContent the way the
 * real API does (PROVIDERS.md): the same success, error and quota bodies, the
 * same status codes, plus the configured latency and faults. The request is
 * validated strictly, so a client bug shows up as a 400 and a "malformed"
 * count instead of passing silently.
 *
 * How: one pass over the request in a fixed order (route, key in URL, key
 * header, early faults, size, model, rate limit, body, latency, late fault,
 * answer). Field names are accepted in camelCase and snake_case, as the proto
 * JSON parser does; unknown names are rejected like the real API rejects them.
 *
 * Threads: called on server connection threads with no lock held; all shared
 * state goes through provider.c.
 */
#include "sim.h"

#include "ev/clock.h"
#include "ev/error.h"
#include "ev/util.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PATH_PREFIX "/v1beta/models/"
#define PATH_SUFFIX ":generateContent"

/* ---------------------------------------------------------------- errors */

/* The google.rpc error object {"error":{code,message,status[,details]}}. */
static json_object *error_obj(int code, const char *status, const char *msg, json_object *details)
{
    json_object *e = json_object_new_object();
    json_object_object_add(e, "code", json_object_new_int(code));
    json_object_object_add(e, "message", json_object_new_string(msg));
    json_object_object_add(e, "status", json_object_new_string(status));
    if (details)
        json_object_object_add(e, "details", details);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", e);
    return o;
}

static void reply_error(sim_reply_t *out, int code, const char *status, const char *msg,
                        json_object *details)
{
    sim_reply_json(out, code, error_obj(code, status, msg, details), true);
}

static void reply_invalid(sim_provider_t *p, sim_reply_t *out, const char *msg)
{
    sim_provider_malformed(p, msg);
    reply_error(out, 400, "INVALID_ARGUMENT", msg, NULL);
}

/* The API_KEY_INVALID answer, not counted (model lookups are not requests). */
static void bad_key_body(sim_reply_t *out)
{
    static const char msg[] = "API key not valid. Please pass a valid API key.";
    json_object *info = json_object_new_object();
    json_object_object_add(info, "@type",
                           json_object_new_string("type.googleapis.com/google.rpc.ErrorInfo"));
    json_object_object_add(info, "reason", json_object_new_string("API_KEY_INVALID"));
    json_object_object_add(info, "domain", json_object_new_string("googleapis.com"));
    json_object *meta = json_object_new_object();
    json_object_object_add(meta, "service",
                           json_object_new_string("generativelanguage.googleapis.com"));
    json_object_object_add(info, "metadata", meta);
    json_object *loc = json_object_new_object();
    json_object_object_add(
        loc, "@type", json_object_new_string("type.googleapis.com/google.rpc.LocalizedMessage"));
    json_object_object_add(loc, "locale", json_object_new_string("en-US"));
    json_object_object_add(loc, "message", json_object_new_string(msg));
    json_object *details = json_object_new_array();
    json_object_array_add(details, info);
    json_object_array_add(details, loc);
    reply_error(out, 400, "INVALID_ARGUMENT", msg, details);
}

static void reply_bad_key(sim_provider_t *p, sim_reply_t *out)
{
    atomic_fetch_add_explicit(&p->auth_failed, 1, memory_order_relaxed);
    bad_key_body(out);
}

static void reply_payload_too_large(sim_provider_t *p, sim_reply_t *out, int64_t limit)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "Request payload size exceeds the limit: %lld bytes.",
             (long long)limit);
    atomic_fetch_add_explicit(&p->too_large, 1, memory_order_relaxed);
    reply_invalid(p, out, msg);
}

/* The RESOURCE_EXHAUSTED body: QuotaFailure, Help and (usually) RetryInfo,
 * in a shuffled order when configured. */
static json_object *quota_error(const sim_settings_t *s, const char *model, bool daily,
                                int64_t limit, int64_t retry_us)
{
    const char *metric =
        daily ? "generativelanguage.googleapis.com/generate_requests_per_model_per_day"
              : "generativelanguage.googleapis.com/generate_content_free_tier_requests";
    const char *quota_id = daily ? "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
                                 : "GenerateRequestsPerMinutePerProjectPerModel-FreeTier";
    bool with_retry = ev_rand01() < s->retry_info_rate;
    int64_t delay_s = (retry_us + 999999) / 1000000;
    if (delay_s < 1)
        delay_s = 1;

    json_object *parts[3];
    int n = 0;
    json_object *qf = json_object_new_object();
    json_object_object_add(qf, "@type",
                           json_object_new_string("type.googleapis.com/google.rpc.QuotaFailure"));
    json_object *viol = json_object_new_object();
    json_object_object_add(viol, "quotaMetric", json_object_new_string(metric));
    json_object_object_add(viol, "quotaId", json_object_new_string(quota_id));
    json_object *dims = json_object_new_object();
    json_object_object_add(dims, "location", json_object_new_string("global"));
    json_object_object_add(dims, "model", json_object_new_string(model));
    json_object_object_add(viol, "quotaDimensions", dims);
    char qv[32];
    snprintf(qv, sizeof(qv), "%lld", (long long)limit);
    json_object_object_add(viol, "quotaValue", json_object_new_string(qv));
    json_object *viols = json_object_new_array();
    json_object_array_add(viols, viol);
    json_object_object_add(qf, "violations", viols);
    parts[n++] = qf;

    json_object *help = json_object_new_object();
    json_object_object_add(help, "@type",
                           json_object_new_string("type.googleapis.com/google.rpc.Help"));
    json_object *link = json_object_new_object();
    json_object_object_add(link, "description",
                           json_object_new_string("Learn more about Gemini API quotas"));
    json_object_object_add(
        link, "url", json_object_new_string("https://ai.google.dev/gemini-api/docs/rate-limits"));
    json_object *links = json_object_new_array();
    json_object_array_add(links, link);
    json_object_object_add(help, "links", links);
    parts[n++] = help;

    if (with_retry) {
        json_object *ri = json_object_new_object();
        json_object_object_add(ri, "@type",
                               json_object_new_string("type.googleapis.com/google.rpc.RetryInfo"));
        char d[32];
        snprintf(d, sizeof(d), "%llds", (long long)delay_s);
        json_object_object_add(ri, "retryDelay", json_object_new_string(d));
        parts[n++] = ri;
    }
    if (s->shuffle_details) {
        for (int i = n - 1; i > 0; i--) {
            int j = (int)ev_rand_range(0, i);
            json_object *t = parts[i];
            parts[i] = parts[j];
            parts[j] = t;
        }
    }
    json_object *details = json_object_new_array();
    for (int i = 0; i < n; i++)
        json_object_array_add(details, parts[i]);

    char secs[32];
    sim_fmt_seconds(secs, sizeof(secs), retry_us);
    char *msg = ev_asprintf(
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n"
        "* Quota exceeded for metric: %s, limit: %lld, model: %s%s%s%s",
        metric, (long long)limit, model, with_retry ? "\nPlease retry in " : "",
        with_retry ? secs : "", with_retry ? "s." : "");
    json_object *o = error_obj(429, "RESOURCE_EXHAUSTED", msg, details);
    free(msg);
    return o;
}

/* ------------------------------------------------------------ validation */

typedef struct vctx {
    char msg[SIM_REASON_MAX];
    unsigned markers;
    int64_t text_chars;
    int64_t media_tokens;
    int64_t max_output;      /* -1 when unset */
    int64_t thinking_budget; /* INT64_MIN when unset */
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

/* snake_case -> camelCase, as the proto JSON parser maps field names. */
static void camel(const char *in, char *out, size_t n)
{
    size_t o = 0;
    bool up = false;
    for (const char *p = in; *p && o + 1 < n; p++) {
        if (*p == '_' && p != in) {
            up = true;
            continue;
        }
        out[o++] = up ? (char)toupper((unsigned char)*p) : *p;
        up = false;
    }
    out[o] = '\0';
}

static bool in_list(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(name, *list) == 0)
            return true;
    return false;
}

/* Reject any field not in `allowed` (camelCase names). */
static int check_fields(vctx_t *v, json_object *obj, const char *where, const char *const *allowed)
{
    json_object_object_foreach(obj, key, val)
    {
        (void)val;
        char c[128];
        camel(key, c, sizeof(c));
        if (!in_list(c, allowed))
            return fail(
                v, "Invalid JSON payload received. Unknown name \"%s\" at '%s': Cannot find field.",
                key, where);
    }
    return 0;
}

/* The value of a field given in either spelling, or NULL. */
static json_object *field(json_object *obj, const char *camel_name)
{
    json_object_object_foreach(obj, key, val)
    {
        char c[128];
        camel(key, c, sizeof(c));
        if (strcmp(c, camel_name) == 0)
            return val;
    }
    return NULL;
}

static bool is_number(json_object *o)
{
    return json_object_is_type(o, json_type_int) || json_object_is_type(o, json_type_double);
}

/* An int64 field: JSON integer or a decimal string (proto int64 JSON form). */
static bool get_int(json_object *o, int64_t *out)
{
    if (json_object_is_type(o, json_type_int)) {
        *out = json_object_get_int64(o);
        return true;
    }
    if (json_object_is_type(o, json_type_string)) {
        const char *s = json_object_get_string(o);
        char *end = NULL;
        long long x = strtoll(s, &end, 10);
        if (*s && end && *end == '\0') {
            *out = x;
            return true;
        }
    }
    return false;
}

static const char *const schema_types[] = {"STRING",  "NUMBER", "INTEGER",
                                           "BOOLEAN", "ARRAY",  "OBJECT"};

static int check_schema(vctx_t *v, json_object *sc, const char *where, int depth)
{
    static const char *const allowed[] = {"type",
                                          "format",
                                          "description",
                                          "nullable",
                                          "enum",
                                          "maxItems",
                                          "minItems",
                                          "properties",
                                          "required",
                                          "minProperties",
                                          "maxProperties",
                                          "minLength",
                                          "maxLength",
                                          "pattern",
                                          "example",
                                          "anyOf",
                                          "propertyOrdering",
                                          "default",
                                          "items",
                                          "minimum",
                                          "maximum",
                                          NULL};
    if (depth > 24)
        return fail(v, "Invalid JSON payload received. Schema nested too deeply at '%s'.", where);
    if (!json_object_is_type(sc, json_type_object))
        return fail(v, "Invalid value at '%s': a schema must be an object.", where);
    /* The keywords people copy from JSON Schema are the usual mistake. */
    json_object_object_foreach(sc, key, val)
    {
        (void)val;
        char c[128];
        camel(key, c, sizeof(c));
        if (key[0] == '$' || !in_list(c, allowed))
            return fail(
                v, "Invalid JSON payload received. Unknown name \"%s\" at '%s': Cannot find field.",
                key, where);
    }
    char path[256];
    json_object *type = field(sc, "type");
    json_object *any = field(sc, "anyOf");
    const char *tname = NULL;
    if (type) {
        if (!json_object_is_type(type, json_type_string))
            return fail(v, "Invalid value at '%s.type': must be a string.", where);
        tname = json_object_get_string(type);
        bool known = false;
        for (size_t i = 0; i < EV_ARRAY_LEN(schema_types); i++)
            if (strcasecmp(tname, schema_types[i]) == 0)
                known = true;
        if (!known)
            return fail(v,
                        "Invalid value at '%s.type' "
                        "(type.googleapis.com/google.ai.generativelanguage.v1beta.Type), \"%s\"",
                        where, tname);
    } else if (!any) {
        return fail(v,
                    "* GenerateContentRequest.generation_config.response_schema: %s.type: must be "
                    "specified",
                    where);
    }
    if (any) {
        if (!json_object_is_type(any, json_type_array) || json_object_array_length(any) == 0)
            return fail(v, "Invalid value at '%s.any_of': must be a non-empty array.", where);
        for (size_t i = 0; i < json_object_array_length(any); i++) {
            snprintf(path, sizeof(path), "%s.any_of[%zu]", where, i);
            int rc = check_schema(v, json_object_array_get_idx(any, i), path, depth + 1);
            if (rc < 0)
                return rc;
        }
    }
    json_object *props = field(sc, "properties");
    if (props) {
        if (!json_object_is_type(props, json_type_object))
            return fail(v, "Invalid value at '%s.properties': must be an object.", where);
        /* Keys here are property names (a property may well be called
         * "title"); only their values are schemas. */
        json_object_object_foreach(props, pname, pval)
        {
            snprintf(path, sizeof(path), "%s.properties[%s]", where, pname);
            int rc = check_schema(v, pval, path, depth + 1);
            if (rc < 0)
                return rc;
        }
    }
    if (tname && strcasecmp(tname, "OBJECT") == 0 &&
        (!props || json_object_object_length(props) == 0))
        return fail(v,
                    "* GenerateContentRequest.generation_config.response_schema: %s.properties: "
                    "should be non-empty for OBJECT type",
                    where);
    json_object *items = field(sc, "items");
    if (tname && strcasecmp(tname, "ARRAY") == 0 && !items)
        return fail(
            v,
            "* GenerateContentRequest.generation_config.response_schema: %s.items: missing field.",
            where);
    if (items) {
        snprintf(path, sizeof(path), "%s.items", where);
        int rc = check_schema(v, items, path, depth + 1);
        if (rc < 0)
            return rc;
    }
    json_object *req = field(sc, "required");
    if (req) {
        if (!json_object_is_type(req, json_type_array))
            return fail(v, "Invalid value at '%s.required': must be an array of strings.", where);
        for (size_t i = 0; i < json_object_array_length(req); i++) {
            json_object *r = json_object_array_get_idx(req, i);
            if (!json_object_is_type(r, json_type_string))
                return fail(v, "Invalid value at '%s.required[%zu]': must be a string.", where, i);
            if (!props || !json_object_object_get_ex(props, json_object_get_string(r), NULL))
                return fail(v,
                            "* GenerateContentRequest.generation_config.response_schema: "
                            "%s.required[%zu]: property \"%s\" is not defined",
                            where, i, json_object_get_string(r));
        }
    }
    static const char *const string_fields[] = {"format", "description", "pattern", NULL};
    for (const char *const *f = string_fields; *f; f++) {
        json_object *x = field(sc, *f);
        if (x && !json_object_is_type(x, json_type_string))
            return fail(v, "Invalid value at '%s.%s': must be a string.", where, *f);
    }
    static const char *const int_fields[] = {
        "maxItems", "minItems", "minProperties", "maxProperties", "minLength", "maxLength", NULL};
    for (const char *const *f = int_fields; *f; f++) {
        json_object *x = field(sc, *f);
        int64_t dummy;
        if (x && !get_int(x, &dummy))
            return fail(v, "Invalid value at '%s.%s' (TYPE_INT64): must be an integer.", where, *f);
    }
    static const char *const num_fields[] = {"minimum", "maximum", NULL};
    for (const char *const *f = num_fields; *f; f++) {
        json_object *x = field(sc, *f);
        if (x && !is_number(x))
            return fail(v, "Invalid value at '%s.%s' (TYPE_DOUBLE): must be a number.", where, *f);
    }
    json_object *nullable = field(sc, "nullable");
    if (nullable && !json_object_is_type(nullable, json_type_boolean))
        return fail(v, "Invalid value at '%s.nullable' (TYPE_BOOL): must be true or false.", where);
    json_object *en = field(sc, "enum");
    if (en) {
        if (!json_object_is_type(en, json_type_array))
            return fail(v, "Invalid value at '%s.enum': must be an array of strings.", where);
        for (size_t i = 0; i < json_object_array_length(en); i++)
            if (!json_object_is_type(json_object_array_get_idx(en, i), json_type_string))
                return fail(v, "Invalid value at '%s.enum[%zu]' (TYPE_STRING): must be a string.",
                            where, i);
    }
    return 0;
}

static const char *const mime_types[] = {
    "application/pdf", "image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", NULL};

static int check_inline(vctx_t *v, json_object *inl, const char *where)
{
    static const char *const allowed[] = {"mimeType", "data", NULL};
    if (!json_object_is_type(inl, json_type_object))
        return fail(v, "Invalid value at '%s': must be an object.", where);
    int rc = check_fields(v, inl, where, allowed);
    if (rc < 0)
        return rc;
    json_object *mime = field(inl, "mimeType");
    json_object *data = field(inl, "data");
    if (!mime || !json_object_is_type(mime, json_type_string) ||
        json_object_get_string_len(mime) == 0)
        return fail(v, "%s.mime_type: a MIME type is required (for example \"application/pdf\").",
                    where);
    const char *m = json_object_get_string(mime);
    if (!in_list(m, mime_types))
        return fail(v, "Unsupported MIME type: %s (at %s.mime_type)", m, where);
    if (!data || !json_object_is_type(data, json_type_string) ||
        json_object_get_string_len(data) == 0)
        return fail(v, "%s.data: inline data is required and must be non-empty base64.", where);
    const char *d = json_object_get_string(data);
    size_t dlen = (size_t)json_object_get_string_len(data);
    if (strncmp(d, "data:", 5) == 0)
        return fail(v,
                    "Invalid value at '%s.data' (TYPE_BYTES), Base64 decoding failed: the data "
                    "carries a \"data:\" URL prefix; send plain base64.",
                    where);
    unsigned char *raw = NULL;
    size_t rawlen = 0;
    if (sim_b64_decode(d, dlen, &raw, &rawlen) < 0)
        return fail(
            v, "Invalid value at '%s.data' (TYPE_BYTES), Base64 decoding failed for \"%.24s...\"",
            where, d);
    if (!sim_sniff_matches(m, raw, rawlen)) {
        free(raw);
        if (strcmp(m, "application/pdf") == 0)
            return fail(v, "The document has no pages. (%s.data is not a PDF)", where);
        return fail(v,
                    "Unable to process input image. Please retry or report in "
                    "https://developers.generativeai.google/guide/troubleshooting "
                    "(%s.data is not %s)",
                    where, m);
    }
    v->markers |= sim_markers_scan(raw, rawlen);
    v->media_tokens += strcmp(m, "application/pdf") == 0 ? 258 * sim_pdf_pages(raw, rawlen) : 258;
    free(raw);
    return 0;
}

static int check_text(vctx_t *v, json_object *text, const char *where)
{
    if (!json_object_is_type(text, json_type_string))
        return fail(v, "Invalid value at '%s' (TYPE_STRING): must be a string.", where);
    if (json_object_get_string_len(text) == 0)
        return fail(v,
                    "Unable to submit request because it has an empty text parameter. Add a "
                    "value to the parameter and try again. (%s)",
                    where);
    size_t n = (size_t)json_object_get_string_len(text);
    v->text_chars += (int64_t)n;
    v->markers |= sim_markers_scan(json_object_get_string(text), n);
    return 0;
}

static const char *const part_fields[] = {"text",
                                          "inlineData",
                                          "fileData",
                                          "functionCall",
                                          "functionResponse",
                                          "executableCode",
                                          "codeExecutionResult",
                                          "thought",
                                          "thoughtSignature",
                                          "videoMetadata",
                                          NULL};

static int check_content(vctx_t *v, json_object *c, const char *where, bool is_system)
{
    static const char *const allowed[] = {"role", "parts", NULL};
    char path[160];
    if (!json_object_is_type(c, json_type_object))
        return fail(v, "Invalid value at '%s': must be an object.", where);
    int rc = check_fields(v, c, where, allowed);
    if (rc < 0)
        return rc;
    json_object *role = field(c, "role");
    if (role) {
        const char *r =
            json_object_is_type(role, json_type_string) ? json_object_get_string(role) : "";
        if (is_system ? strcmp(r, "user") != 0 && strcmp(r, "system") != 0
                      : strcmp(r, "user") != 0 && strcmp(r, "model") != 0)
            return fail(v, "Please use a valid role: user, model. (%s.role)", where);
    }
    json_object *parts = field(c, "parts");
    if (!parts || !json_object_is_type(parts, json_type_array) ||
        json_object_array_length(parts) == 0)
        return fail(v, "* GenerateContentRequest.%s.parts: contents.parts must not be empty.",
                    where);
    bool seen_text = false;
    for (size_t i = 0; i < json_object_array_length(parts); i++) {
        json_object *part = json_object_array_get_idx(parts, i);
        snprintf(path, sizeof(path), "%s.parts[%zu]", where, i);
        if (!json_object_is_type(part, json_type_object))
            return fail(v, "Invalid value at '%s': must be an object.", path);
        rc = check_fields(v, part, path, part_fields);
        if (rc < 0)
            return rc;
        json_object *text = field(part, "text");
        json_object *inl = field(part, "inlineData");
        int data_fields = 0;
        for (const char *const *f = part_fields; *f; f++)
            if (strcmp(*f, "thought") != 0 && strcmp(*f, "thoughtSignature") != 0 &&
                strcmp(*f, "videoMetadata") != 0 && field(part, *f))
                data_fields++;
        if (data_fields != 1)
            return fail(v, "* GenerateContentRequest.%s.data: %s", path,
                        data_fields
                            ? "only one of text, inline_data, file_data... may be set"
                            : "required oneof field 'data' must have one initialized field");
        if (text) {
            char tp[192];
            snprintf(tp, sizeof(tp), "%s.text", path);
            rc = check_text(v, text, tp);
            if (rc < 0)
                return rc;
            seen_text = true;
        } else if (inl && !is_system) {
            if (seen_text)
                return fail(v,
                            "%s: media parts must come before the text part (an inline_data "
                            "part follows a text part)",
                            path);
            char ip[192];
            snprintf(ip, sizeof(ip), "%s.inline_data", path);
            rc = check_inline(v, inl, ip);
            if (rc < 0)
                return rc;
        } else {
            return fail(v, "%s: the simulator accepts only text%s parts here", path,
                        is_system ? "" : " and inline_data");
        }
    }
    if (!seen_text)
        return fail(v, "%s: a text part (the prompt) is required after the media parts", where);
    return 0;
}

static int check_generation_config(vctx_t *v, json_object *gc)
{
    static const char *const allowed[] = {"stopSequences",
                                          "responseMimeType",
                                          "responseSchema",
                                          "responseJsonSchema",
                                          "candidateCount",
                                          "maxOutputTokens",
                                          "temperature",
                                          "topP",
                                          "topK",
                                          "seed",
                                          "presencePenalty",
                                          "frequencyPenalty",
                                          "responseLogprobs",
                                          "logprobs",
                                          "thinkingConfig",
                                          "responseModalities",
                                          "mediaResolution",
                                          NULL};
    const char *where = "generation_config";
    if (!json_object_is_type(gc, json_type_object))
        return fail(v, "Invalid value at 'generation_config': must be an object.");
    int rc = check_fields(v, gc, where, allowed);
    if (rc < 0)
        return rc;
    json_object *mime = field(gc, "responseMimeType");
    const char *m =
        mime && json_object_is_type(mime, json_type_string) ? json_object_get_string(mime) : NULL;
    if (mime && (!m || (strcmp(m, "application/json") != 0 && strcmp(m, "text/plain") != 0 &&
                        strcmp(m, "text/x.enum") != 0)))
        return fail(v, "* GenerateContentRequest.generation_config.response_mime_type: allowed "
                       "mimetypes are `text/plain`, `application/json`, `text/x.enum`.");
    if (v->s->require_json_mode && (!m || strcmp(m, "application/json") != 0))
        return fail(v, "generation_config.response_mime_type must be \"application/json\" (the "
                       "simulator requires JSON mode, see PROVIDERS.md)");
    if (field(gc, "responseJsonSchema"))
        return fail(v, "generation_config.response_json_schema is not supported by the simulator; "
                       "use response_schema (PROVIDERS.md)");
    json_object *schema = field(gc, "responseSchema");
    if (schema) {
        if (!m || strcmp(m, "text/plain") == 0)
            return fail(v, "* GenerateContentRequest.generation_config.response_schema: "
                           "response_mime_type must be application/json or text/x.enum when "
                           "response_schema is set.");
        rc = check_schema(v, schema, "generation_config.response_schema", 0);
        if (rc < 0)
            return rc;
    }
    json_object *t = field(gc, "temperature");
    if (t && (!is_number(t) || json_object_get_double(t) < 0 || json_object_get_double(t) > 2))
        return fail(v, "* GenerateContentRequest.generation_config.temperature: must be a number "
                       "in [0.0, 2.0]");
    json_object *tp = field(gc, "topP");
    if (tp && (!is_number(tp) || json_object_get_double(tp) < 0 || json_object_get_double(tp) > 1))
        return fail(
            v, "* GenerateContentRequest.generation_config.top_p: must be a number in [0.0, 1.0]");
    json_object *mo = field(gc, "maxOutputTokens");
    if (mo) {
        if (!get_int(mo, &v->max_output) || v->max_output < 1)
            return fail(v, "* GenerateContentRequest.generation_config.max_output_tokens: must be "
                           "a positive integer");
    }
    json_object *cc = field(gc, "candidateCount");
    int64_t ccount = 1;
    if (cc && (!get_int(cc, &ccount) || ccount != 1))
        return fail(v, "generation_config.candidate_count: the simulator answers exactly one "
                       "candidate; send 1 or omit it");
    json_object *tc = field(gc, "thinkingConfig");
    if (tc) {
        static const char *const tc_allowed[] = {"thinkingBudget", "includeThoughts",
                                                 "thinkingLevel", NULL};
        if (!json_object_is_type(tc, json_type_object))
            return fail(v,
                        "Invalid value at 'generation_config.thinking_config': must be an object.");
        rc = check_fields(v, tc, "generation_config.thinking_config", tc_allowed);
        if (rc < 0)
            return rc;
        json_object *tb = field(tc, "thinkingBudget");
        if (tb) {
            if (!get_int(tb, &v->thinking_budget) || v->thinking_budget < -1)
                return fail(v,
                            "Invalid value at 'generation_config.thinking_config.thinking_budget' "
                            "(TYPE_INT32): must be -1, 0 or a positive integer");
            if (v->thinking_budget == 0 && sim_list_has(v->s->thinking_only, v->model))
                return fail(v, "Budget 0 is invalid. This model only works in thinking mode.");
        }
        json_object *it = field(tc, "includeThoughts");
        if (it && !json_object_is_type(it, json_type_boolean))
            return fail(v, "Invalid value at 'generation_config.thinking_config.include_thoughts' "
                           "(TYPE_BOOL)");
    }
    return 0;
}

static int check_request(vctx_t *v, json_object *req)
{
    static const char *const allowed[] = {
        "contents", "systemInstruction", "generationConfig", "safetySettings",
        "tools",    "toolConfig",        "cachedContent",    NULL};
    if (!json_object_is_type(req, json_type_object))
        return fail(v, "Invalid JSON payload received. Expected an object at the top level.");
    int rc = check_fields(v, req, "(root)", allowed);
    if (rc < 0)
        return rc;
    json_object *contents = field(req, "contents");
    if (!contents || !json_object_is_type(contents, json_type_array) ||
        json_object_array_length(contents) == 0)
        return fail(v, "* GenerateContentRequest.contents: contents is not specified");
    char path[64];
    size_t n = json_object_array_length(contents);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "contents[%zu]", i);
        rc = check_content(v, json_object_array_get_idx(contents, i), path, false);
        if (rc < 0)
            return rc;
    }
    json_object *last_role = field(json_object_array_get_idx(contents, n - 1), "role");
    if (last_role && strcmp(json_object_get_string(last_role), "user") != 0)
        return fail(v, "contents[%zu]: the last content must have role \"user\"", n - 1);
    json_object *sys = field(req, "systemInstruction");
    if (sys) {
        rc = check_content(v, sys, "system_instruction", true);
        if (rc < 0)
            return rc;
    }
    json_object *gc = field(req, "generationConfig");
    if (gc) {
        rc = check_generation_config(v, gc);
        if (rc < 0)
            return rc;
    } else if (v->s->require_json_mode) {
        return fail(v, "generation_config is missing: the simulator requires response_mime_type "
                       "\"application/json\" (JSON mode, see PROVIDERS.md)");
    }
    json_object *ss = field(req, "safetySettings");
    if (ss && !json_object_is_type(ss, json_type_array))
        return fail(v, "Invalid value at 'safety_settings': must be an array.");
    return 0;
}

/* ------------------------------------------------------------- answering */

static bool thinking_model(const char *model)
{
    return strncmp(model, "gemini-2.5", 10) == 0 || strstr(model, "latest") != NULL ||
           strncmp(model, "gemini-3", 8) == 0;
}

static json_object *text_part(const char *text, size_t len, bool thought)
{
    json_object *p = json_object_new_object();
    json_object_object_add(p, "text", json_object_new_string_len(text, (int)len));
    if (thought)
        json_object_object_add(p, "thought", json_object_new_boolean(1));
    return p;
}

static json_object *usage_obj(int64_t prompt, int64_t cand, int64_t thoughts)
{
    json_object *u = json_object_new_object();
    json_object_object_add(u, "promptTokenCount", json_object_new_int64(prompt));
    if (cand >= 0)
        json_object_object_add(u, "candidatesTokenCount", json_object_new_int64(cand));
    json_object_object_add(u, "totalTokenCount",
                           json_object_new_int64(prompt + (cand > 0 ? cand : 0) + thoughts));
    if (thoughts > 0)
        json_object_object_add(u, "thoughtsTokenCount", json_object_new_int64(thoughts));
    json_object *det = json_object_new_array();
    json_object *d = json_object_new_object();
    json_object_object_add(d, "modality", json_object_new_string("TEXT"));
    json_object_object_add(d, "tokenCount", json_object_new_int64(prompt));
    json_object_array_add(det, d);
    json_object_object_add(u, "promptTokensDetails", det);
    return u;
}

static void add_trailer(json_object *o, const char *model)
{
    char id[24];
    sim_random_id(id, 22);
    json_object_object_add(o, "modelVersion", json_object_new_string(model));
    json_object_object_add(o, "responseId", json_object_new_string(id));
}

/* A 200 answer with one candidate. `text` may be NULL (no content). */
static void reply_candidate(sim_reply_t *out, const sim_settings_t *s, const char *model,
                            const char *text, const char *finish, int64_t prompt, int64_t thoughts)
{
    json_object *cand = json_object_new_object();
    size_t len = text ? strlen(text) : 0;
    if (text) {
        json_object *content = json_object_new_object();
        json_object *parts = json_object_new_array();
        if (s->thoughts && thoughts > 0) {
            static const char thought[] = "**Assessing the submission**\n\nI compare the "
                                          "submission with the event's theme and rules.";
            json_object_array_add(parts, text_part(thought, sizeof(thought) - 1, true));
        }
        if (s->split_text && len >= 2) {
            json_object_array_add(parts, text_part(text, len / 2, false));
            json_object_array_add(parts, text_part(text + len / 2, len - len / 2, false));
        } else if (len > 0) {
            json_object_array_add(parts, text_part(text, len, false));
        }
        if (json_object_array_length(parts) > 0)
            json_object_object_add(content, "parts", parts);
        else
            json_object_put(parts);
        json_object_object_add(content, "role", json_object_new_string("model"));
        json_object_object_add(cand, "content", content);
    }
    json_object_object_add(cand, "finishReason", json_object_new_string(finish));
    if (strcmp(finish, "SAFETY") == 0) {
        json_object *ratings = json_object_new_array();
        json_object *r = json_object_new_object();
        json_object_object_add(r, "category",
                               json_object_new_string("HARM_CATEGORY_DANGEROUS_CONTENT"));
        json_object_object_add(r, "probability", json_object_new_string("HIGH"));
        json_object_object_add(r, "blocked", json_object_new_boolean(1));
        json_object_array_add(ratings, r);
        json_object_object_add(cand, "safetyRatings", ratings);
    }
    json_object_object_add(cand, "index", json_object_new_int(0));
    json_object *cands = json_object_new_array();
    json_object_array_add(cands, cand);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "candidates", cands);
    int64_t completion = text ? ((int64_t)len + 3) / 4 : 0;
    json_object_object_add(o, "usageMetadata", usage_obj(prompt, text ? completion : -1, thoughts));
    add_trailer(o, model);
    sim_reply_json(out, 200, o, true);
}

static const char google_html[] =
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <meta name=viewport "
    "content=\"initial-scale=1, minimum-scale=1, width=device-width\">\n  <title>Error %d (Server "
    "Error)!!1</title>\n  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>\n"
    "  <p><b>%d.</b> <ins>That's an error.</ins>\n  <p>The server encountered an error and could "
    "not complete your request.<p>Please try again in 30 seconds.  <ins>That's all we "
    "know.</ins>\n";

static const char google_html_413[] =
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 413 (Request Entity "
    "Too Large)!!1</title>\n  <p><b>413.</b> <ins>That's an error.</ins>\n  <p>Your client issued "
    "a request that was too large.  <ins>That's all we know.</ins>\n";

/* Serve a fault that concerns a valid request (after latency). */
static void serve_late_fault(sim_provider_t *p, const sim_settings_t *s, sim_fault_t f,
                             const char *model, const char *answer, int64_t prompt,
                             int64_t thoughts, sim_reply_t *out)
{
    sim_provider_fault_served(p, f);
    switch (f) {
    case SIM_FAULT_OVERLOADED:
        reply_error(out, 503, "UNAVAILABLE", "The model is overloaded. Please try again later.",
                    NULL);
        break;
    case SIM_FAULT_INTERNAL:
        reply_error(out, 500, "INTERNAL",
                    "An internal error has occurred. Please retry or report in "
                    "https://developers.generativeai.google/guide/troubleshooting",
                    NULL);
        break;
    case SIM_FAULT_DEADLINE:
        reply_error(out, 504, "DEADLINE_EXCEEDED",
                    "Deadline expired before operation could complete.", NULL);
        break;
    case SIM_FAULT_HTML: {
        char *html = ev_asprintf(google_html, (int)s->html_status, (int)s->html_status);
        sim_reply_text(out, (int)s->html_status, "text/html; charset=UTF-8", html);
        free(html);
        break;
    }
    case SIM_FAULT_EMPTY:
        sim_reply_text(out, (int)s->html_status, "application/json; charset=UTF-8", "");
        break;
    case SIM_FAULT_GARBAGE:
        sim_reply_text(out, 200, "application/json; charset=UTF-8",
                       "upstream connect error or disconnect/reset before headers. reset reason: "
                       "connection termination");
        break;
    case SIM_FAULT_BLOCKED: {
        json_object *o = json_object_new_object();
        json_object *fb = json_object_new_object();
        json_object_object_add(fb, "blockReason", json_object_new_string("PROHIBITED_CONTENT"));
        json_object_object_add(o, "promptFeedback", fb);
        json_object_object_add(o, "usageMetadata", usage_obj(prompt, -1, 0));
        add_trailer(o, model);
        sim_reply_json(out, 200, o, true);
        break;
    }
    case SIM_FAULT_SAFETY:
        reply_candidate(out, s, model, NULL, "SAFETY", prompt, 0);
        break;
    case SIM_FAULT_TRUNCATED: {
        char *cut = ev_strndup(answer, strlen(answer) / 2);
        reply_candidate(out, s, model, cut, "MAX_TOKENS", prompt, thoughts);
        free(cut);
        break;
    }
    case SIM_FAULT_ARRAY_ERROR: {
        json_object *arr = json_object_new_array();
        json_object_array_add(arr, quota_error(s, model, false, s->rpm > 0 ? s->rpm : 10,
                                               ev_rand_range(1000000, 30000000)));
        atomic_fetch_add_explicit(&p->rate_limited, 1, memory_order_relaxed);
        sim_reply_json(out, 429, arr, true);
        break;
    }
    case SIM_FAULT_FENCED: {
        char *text = ev_asprintf("Here is my assessment of the submission:\n\n```json\n%s\n```\n\n"
                                 "Let me know if you need anything else.",
                                 answer);
        reply_candidate(out, s, model, text, "STOP", prompt, thoughts);
        free(text);
        break;
    }
    case SIM_FAULT_HANG:
        reply_error(out, 504, "DEADLINE_EXCEEDED",
                    "Deadline expired before operation could complete.", NULL);
        out->action = SIM_REPLY_HANG;
        out->hang_ms = s->hang_ms;
        atomic_fetch_add_explicit(&p->hung, 1, memory_order_relaxed);
        break;
    default:
        EV_ASSERT(!"unexpected late fault");
    }
}

/* ------------------------------------------------------------------ entry */

void sim_gemini_handle(sim_provider_t *p, const sim_request_t *rq, sim_reply_t *out)
{
    sim_settings_t s;
    sim_provider_snapshot(p, &s);
    json_object *req = NULL;
    char model[160] = "";
    char msg[SIM_REASON_MAX];

    /* Route: only generateContent on v1beta exists here. */
    const char *path = rq->path;
    size_t plen = strlen(path), pre = strlen(PATH_PREFIX), suf = strlen(PATH_SUFFIX);
    if (strcmp(rq->method, "POST") != 0 || plen <= pre + suf ||
        strncmp(path, PATH_PREFIX, pre) != 0 || strcmp(path + plen - suf, PATH_SUFFIX) != 0 ||
        plen - pre - suf >= sizeof(model)) {
        snprintf(msg, sizeof(msg),
                 "Method or path not found: %s /gemini%s (the simulator serves "
                 "POST /gemini/v1beta/models/{model}:generateContent)",
                 rq->method, path);
        sim_provider_malformed(p, msg);
        reply_error(out, 404, "NOT_FOUND", msg, NULL);
        goto out;
    }
    memcpy(model, path + pre, plen - pre - suf);
    model[plen - pre - suf] = '\0';

    if (rq->key_in_query) {
        reply_invalid(p, out,
                      "API key passed in the URL (?key=): the simulator rejects it; send "
                      "it in the x-goog-api-key header so it stays out of logs");
        goto out;
    }
    if (!rq->goog_api_key || !rq->goog_api_key[0] ||
        (s.key[0] && strcmp(rq->goog_api_key, s.key) != 0)) {
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
        atomic_fetch_add_explicit(&p->rate_limited, 1, memory_order_relaxed);
        sim_reply_json(
            out, 429,
            quota_error(&s, model, true, s.rpd > 0 ? s.rpd : 250, ev_rand_range(5000000, 60000000)),
            true);
        goto out;
    }
    if (f == SIM_FAULT_TOO_LARGE) {
        sim_provider_fault_served(p, f);
        reply_payload_too_large(p, out, s.max_body_bytes);
        goto out;
    }
    if (rq->early) {
        /* The front end refuses a huge Content-Length before the API sees it. */
        atomic_fetch_add_explicit(&p->too_large, 1, memory_order_relaxed);
        sim_provider_malformed(p,
                               "Request payload size exceeds the limit (413 from the front end)");
        sim_reply_text(out, 413, "text/html; charset=UTF-8", google_html_413);
        goto out;
    }
    if (rq->too_big || (int64_t)rq->total_len > s.max_body_bytes) {
        reply_payload_too_large(p, out, s.max_body_bytes);
        goto out;
    }
    if (!sim_list_has(s.models, model) || sim_list_has(s.retired, model)) {
        /* Gemini answers a shut-down model exactly like an unknown one. */
        snprintf(msg, sizeof(msg),
                 "models/%s is not found for API version v1beta, or is not "
                 "supported for generateContent. Call ListModels to see the list "
                 "of available models and their supported methods.",
                 model);
        sim_provider_malformed(p, msg);
        reply_error(out, 404, "NOT_FOUND", msg, NULL);
        goto out;
    }

    sim_admit_t adm;
    sim_provider_admit(p, sim_now_us(), &adm);
    if (adm.limited) {
        atomic_fetch_add_explicit(&p->rate_limited, 1, memory_order_relaxed);
        sim_reply_json(out, 429,
                       quota_error(&s, model, adm.daily, adm.limit,
                                   adm.daily ? ev_rand_range(5000000, 60000000) : adm.retry_us),
                       true);
        goto out;
    }

    if (!rq->content_type || strncasecmp(rq->content_type, "application/json", 16) != 0) {
        snprintf(msg, sizeof(msg),
                 "Invalid JSON payload received: Content-Type must be "
                 "application/json (got %s)",
                 rq->content_type ? rq->content_type : "none");
        reply_invalid(p, out, msg);
        goto out;
    }
    char perr[200];
    req = sim_json_parse(rq->body, rq->body_len, perr, sizeof(perr));
    if (!req) {
        snprintf(msg, sizeof(msg), "Invalid JSON payload received. %s", perr);
        reply_invalid(p, out, msg);
        goto out;
    }
    vctx_t v = {.max_output = -1, .thinking_budget = INT64_MIN, .model = model, .s = &s};
    if (check_request(&v, req) < 0) {
        reply_invalid(p, out, v.msg);
        goto out;
    }

    /* The request is valid: it is now "with the model". */
    if (!sim_server_sleep_ms(sim_latency_ms(&s))) {
        out->action = SIM_REPLY_CLOSE;
        goto out;
    }
    int64_t prompt = (v.text_chars + 3) / 4 + v.media_tokens;
    int64_t thoughts = 0;
    if (thinking_model(model) && v.thinking_budget != 0) {
        thoughts = s.thought_tokens;
        if (v.thinking_budget > 0 && v.thinking_budget < thoughts)
            thoughts = v.thinking_budget;
    }
    char *answer = sim_verdict_text(v.markers, s.drop_part);
    f = sim_provider_take_fault(p, false);
    if (f != SIM_FAULT_NONE) {
        serve_late_fault(p, &s, f, model, answer, prompt, thoughts, out);
        free(answer);
        goto out;
    }
    int64_t completion = ((int64_t)strlen(answer) + 3) / 4;
    if (v.max_output > 0 && thoughts + completion > v.max_output) {
        /* Thinking spends the output budget first: the answer is cut, or
         * absent when nothing is left (a real 2.5-model trap). */
        int64_t left = v.max_output - thoughts;
        if (left <= 0) {
            reply_candidate(out, &s, model, "", "MAX_TOKENS", prompt, v.max_output);
        } else {
            char *cut = ev_strndup(answer, (size_t)left * 4);
            reply_candidate(out, &s, model, cut, "MAX_TOKENS", prompt, thoughts);
            free(cut);
        }
    } else {
        reply_candidate(out, &s, model, answer, "STOP", prompt, thoughts);
        atomic_fetch_add_explicit(&p->ok, 1, memory_order_relaxed);
        atomic_fetch_add_explicit((v.markers & SIM_MARKERS) ? &p->verdict_invalid
                                                            : &p->verdict_valid,
                                  1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&p->tokens_in, prompt, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->tokens_out, completion + thoughts, memory_order_relaxed);
    free(answer);
out:
    json_object_put(req);
}

void sim_gemini_models(sim_provider_t *p, const sim_request_t *rq, sim_reply_t *out)
{
    sim_settings_t s;
    sim_provider_snapshot(p, &s);
    char msg[SIM_REASON_MAX];
    size_t pre = strlen(PATH_PREFIX);
    const char *model = rq->path + pre;
    if (strncmp(rq->path, PATH_PREFIX, pre) != 0 || !*model || strchr(model, ':')) {
        snprintf(msg, sizeof(msg), "Method or path not found: GET /gemini%s", rq->path);
        reply_error(out, 404, "NOT_FOUND", msg, NULL);
        return;
    }
    if (!rq->goog_api_key || !rq->goog_api_key[0] ||
        (s.key[0] && strcmp(rq->goog_api_key, s.key) != 0)) {
        bad_key_body(out);
        return;
    }
    if (!sim_list_has(s.models, model) || sim_list_has(s.retired, model)) {
        snprintf(msg, sizeof(msg), "models/%s is not found for API version v1beta.", model);
        reply_error(out, 404, "NOT_FOUND", msg, NULL);
        return;
    }
    json_object *o = json_object_new_object();
    char name[200];
    snprintf(name, sizeof(name), "models/%s", model);
    json_object_object_add(o, "name", json_object_new_string(name));
    json_object_object_add(o, "displayName", json_object_new_string(model));
    json_object_object_add(o, "inputTokenLimit", json_object_new_int(1048576));
    json_object_object_add(o, "outputTokenLimit", json_object_new_int(65536));
    json_object *methods = json_object_new_array();
    json_object_array_add(methods, json_object_new_string("generateContent"));
    json_object_array_add(methods, json_object_new_string("countTokens"));
    json_object_object_add(o, "supportedGenerationMethods", methods);
    sim_reply_json(out, 200, o, true);
}
