/*
 * test_sim.c - the provider simulator (tools/provider-sim) over real HTTP.
 *
 * One sim process (tests/support/simctl.h) serves the whole suite; every test
 * starts from POST /control/reset. Requests are made with libcurl exactly as
 * a client of the real APIs would, and each test checks what such a client
 * would see: the answer's shape, the verdict, the error bodies and headers,
 * and the sim's counters (malformed, rate_limited, faults, max_in_flight).
 *
 * Nothing here sleeps and then asserts: waits are on a condition (a counter
 * reaching a value, a transfer finishing) with a generous bound, except the
 * window test, which waits the retry delay the sim itself advised (waiting
 * longer can only make the assertion truer).
 */
#include "ev/error.h"
#include "simctl.h"

#include <CUnit/Basic.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "runner.h"

#define GEMINI_MODEL "gemini-2.5-flash"
#define GROQ_TEXT "llama-3.3-70b-versatile"
#define GROQ_VISION "meta-llama/llama-4-scout-17b-16e-instruct"

static simctl_t *sim;

/* ------------------------------------------------------------ HTTP client */

typedef struct resp {
    long status;
    CURLcode cc;
    char *body;
    size_t len;
    char *headers;
    size_t hlen;
} resp_t;

typedef struct {
    char *data;
    size_t len;
} acc_t;

static size_t on_acc(char *d, size_t size, size_t n, void *ud)
{
    acc_t *a = ud;
    size_t add = size * n;
    char *g = realloc(a->data, a->len + add + 1);
    if (!g)
        return 0;
    a->data = g;
    memcpy(g + a->len, d, add);
    a->len += add;
    g[a->len] = '\0';
    return add;
}

static void resp_free(resp_t *r)
{
    free(r->body);
    free(r->headers);
    memset(r, 0, sizeof(*r));
}

/* Header value (trimmed copy into buf), or NULL when absent. */
static const char *header(const resp_t *r, const char *name, char *buf, size_t n)
{
    size_t nl = strlen(name);
    const char *p = r->headers;
    while (p && *p) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(buf, n, "%.*s", (int)(len - (size_t)(v - p)), v);
            return buf;
        }
        p = eol ? eol + 2 : NULL;
    }
    return NULL;
}

static CURL *make_handle(const char *url, const char *const *hdrs, const char *body,
                         struct curl_slist **list, acc_t *b, acc_t *h, long timeout_ms)
{
    CURL *c = curl_easy_init();
    for (size_t i = 0; hdrs && hdrs[i]; i++)
        *list = curl_slist_append(*list, hdrs[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *list);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_acc);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_acc);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    return c;
}

static void post_t(const char *url, const char *const *hdrs, const char *body, resp_t *r,
                   long timeout_ms)
{
    memset(r, 0, sizeof(*r));
    struct curl_slist *list = NULL;
    acc_t b = {0}, h = {0};
    CURL *c = make_handle(url, hdrs, body, &list, &b, &h, timeout_ms);
    r->cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    r->body = b.data ? b.data : strdup("");
    r->len = b.len;
    r->headers = h.data ? h.data : strdup("");
    r->hlen = h.len;
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
}

static void post(const char *url, const char *const *hdrs, const char *body, resp_t *r)
{
    post_t(url, hdrs, body, r, 10000);
}

static char *gemini_url(const char *model)
{
    char *u = NULL;
    if (asprintf(&u, "%s/models/%s:generateContent", simctl_gemini_url(sim), model) < 0)
        abort();
    return u;
}

static char *groq_url(void)
{
    char *u = NULL;
    if (asprintf(&u, "%s/chat/completions", simctl_groq_url(sim)) < 0)
        abort();
    return u;
}

static const char *const gemini_hdrs[] = {"Content-Type: application/json",
                                          "x-goog-api-key: " SIMCTL_GEMINI_KEY, NULL};
static const char *const groq_hdrs[] = {"Content-Type: application/json",
                                        "Authorization: Bearer " SIMCTL_GROQ_KEY, NULL};

static void gemini_post(json_object *req, resp_t *r)
{
    char *url = gemini_url(GEMINI_MODEL);
    post(url, gemini_hdrs, json_object_to_json_string(req), r);
    free(url);
}

static void groq_post(json_object *req, resp_t *r)
{
    char *url = groq_url();
    post(url, groq_hdrs, json_object_to_json_string(req), r);
    free(url);
}

/* ----------------------------------------------------------- request data */

static char *b64(const void *data, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *d = data;
    char *out = malloc((n + 2) / 3 * 4 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t w = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) |
                     (i + 2 < n ? d[i + 2] : 0);
        out[o++] = tbl[w >> 18 & 63];
        out[o++] = tbl[w >> 12 & 63];
        out[o++] = i + 1 < n ? tbl[w >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tbl[w & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

/* A tiny PDF-looking document and PNG-looking image, optionally carrying a
 * marker in their (decoded) bytes. */
static char *pdf_b64(const char *marker)
{
    char doc[256];
    snprintf(doc, sizeof(doc),
             "%%PDF-1.4\n1 0 obj << /Type /Pages >> endobj\n2 0 obj << /Type /Page >> "
             "endobj\n(%s)\n%%%%EOF\n",
             marker ? marker : "hello");
    return b64(doc, strlen(doc));
}

static char *png_b64(const char *marker)
{
    char img[64];
    memcpy(img, "\x89PNG\r\n\x1a\n", 8);
    snprintf(img + 8, sizeof(img) - 8, "IHDR....%s", marker ? marker : "pixels");
    return b64(img, 8 + strlen(img + 8));
}

static json_object *jstr(const char *s)
{
    return json_object_new_string(s);
}

static json_object *inline_part(const char *mime, const char *data)
{
    json_object *in = json_object_new_object();
    json_object_object_add(in, "mime_type", jstr(mime));
    json_object_object_add(in, "data", jstr(data));
    json_object *p = json_object_new_object();
    json_object_object_add(p, "inline_data", in);
    return p;
}

static json_object *text_part(const char *text)
{
    json_object *p = json_object_new_object();
    json_object_object_add(p, "text", jstr(text));
    return p;
}

/* The request shape of PROVIDERS.md (snake_case and camelCase mixed, as
 * clients write it). A property named "title" is legal. */
static json_object *gemini_req(const char *text, const char *pdf)
{
    json_object *parts = json_object_new_array();
    if (pdf)
        json_object_array_add(parts, inline_part("application/pdf", pdf));
    json_object_array_add(parts, text_part(text));
    json_object *content = json_object_new_object();
    json_object_object_add(content, "role", jstr("user"));
    json_object_object_add(content, "parts", parts);
    json_object *contents = json_object_new_array();
    json_object_array_add(contents, content);
    json_object *req = json_object_new_object();
    json_object *sys =
        json_tokener_parse("{\"parts\":[{\"text\":\"You judge submissions. Answer in JSON.\"}]}");
    json_object_object_add(req, "system_instruction", sys);
    json_object_object_add(req, "contents", contents);
    json_object *gc = json_tokener_parse(
        "{\"responseMimeType\":\"application/json\",\"responseSchema\":{\"type\":\"OBJECT\","
        "\"properties\":{\"valid\":{\"type\":\"BOOLEAN\"},\"score\":{\"type\":\"NUMBER\"},"
        "\"reason\":{\"type\":\"STRING\"},\"title\":{\"type\":\"STRING\",\"nullable\":true}},"
        "\"required\":[\"valid\",\"score\",\"reason\"]},\"temperature\":0,\"maxOutputTokens\":1024,"
        "\"thinkingConfig\":{\"thinkingBudget\":0}}");
    json_object_object_add(req, "generationConfig", gc);
    return req;
}

/* Groq request; images (count, each with `marker`) need the vision model. */
static json_object *groq_req(const char *model, const char *text, int images, const char *marker)
{
    json_object *req = json_object_new_object();
    json_object_object_add(req, "model", jstr(model));
    json_object *msgs = json_object_new_array();
    json_object *sys = json_object_new_object();
    json_object_object_add(sys, "role", jstr("system"));
    json_object_object_add(sys, "content", jstr("You judge submissions. Respond with JSON only."));
    json_object_array_add(msgs, sys);
    json_object *user = json_object_new_object();
    json_object_object_add(user, "role", jstr("user"));
    json_object *content = json_object_new_array();
    json_object *tp = json_object_new_object();
    json_object_object_add(tp, "type", jstr("text"));
    json_object_object_add(tp, "text", jstr(text));
    json_object_array_add(content, tp);
    for (int i = 0; i < images; i++) {
        char *png = png_b64(marker);
        char *url = NULL;
        if (asprintf(&url, "data:image/png;base64,%s", png) < 0)
            abort();
        json_object *iu = json_object_new_object();
        json_object_object_add(iu, "url", jstr(url));
        json_object *ip = json_object_new_object();
        json_object_object_add(ip, "type", jstr("image_url"));
        json_object_object_add(ip, "image_url", iu);
        json_object_array_add(content, ip);
        free(url);
        free(png);
    }
    json_object_object_add(user, "content", content);
    json_object_array_add(msgs, user);
    json_object_object_add(req, "messages", msgs);
    json_object_object_add(req, "response_format",
                           json_tokener_parse("{\"type\":\"json_object\"}"));
    json_object_object_add(req, "temperature", json_object_new_int(0));
    json_object_object_add(req, "max_completion_tokens", json_object_new_int(1024));
    return req;
}

/* ------------------------------------------------------------ JSON access */

/* Walk a path like "candidates.0.content.parts.0.text" (borrowed). */
static json_object *jget(json_object *o, const char *path)
{
    const char *p = path;
    while (o && *p) {
        char tok[64];
        size_t n = strcspn(p, ".");
        snprintf(tok, sizeof(tok), "%.*s", (int)n, p);
        p += n;
        if (*p == '.')
            p++;
        if (json_object_is_type(o, json_type_array)) {
            size_t i = (size_t)strtoul(tok, NULL, 10);
            o = i < json_object_array_length(o) ? json_object_array_get_idx(o, i) : NULL;
        } else if (!json_object_object_get_ex(o, tok, &o)) {
            o = NULL;
        }
    }
    return o;
}

static const char *jstr_at(json_object *o, const char *path)
{
    json_object *v = jget(o, path);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
}

static int64_t jgeti(json_object *o, const char *path)
{
    json_object *v = jget(o, path);
    return v && json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
}

/* Find the element of error.details whose @type ends with `suffix`. */
static json_object *detail(json_object *err_body, const char *suffix)
{
    json_object *d = jget(err_body, "error.details");
    if (!d || !json_object_is_type(d, json_type_array))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(d); i++) {
        json_object *e = json_object_array_get_idx(d, i);
        const char *t = jstr_at(e, "@type");
        size_t tl = strlen(t), sl = strlen(suffix);
        if (tl >= sl && strcmp(t + tl - sl, suffix) == 0)
            return e;
    }
    return NULL;
}

/* The verdict object inside a model text; caller puts. */
static json_object *verdict(const char *text)
{
    json_object *v = json_tokener_parse(text);
    if (v && !json_object_is_type(v, json_type_object)) {
        json_object_put(v);
        v = NULL;
    }
    return v;
}

static int64_t counter(const char *prov, const char *name)
{
    return simctl_counter(sim, prov, name);
}

static bool last_malformed_has(const char *prov, const char *needle)
{
    char *m = simctl_last_malformed(sim, prov);
    bool ok = m && strstr(m, needle);
    if (!ok)
        fprintf(stderr, "last_malformed(%s) = '%s', expected '%s'\n", prov, m ? m : "(null)",
                needle);
    free(m);
    return ok;
}

static void check_groq_headers(const resp_t *r)
{
    static const char *const names[] = {
        "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
        "x-ratelimit-limit-tokens",   "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"};
    char buf[64];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        CU_ASSERT_PTR_NOT_NULL(header(r, names[i], buf, sizeof(buf)));
}

/* ------------------------------------------------------------------ tests */

static void test_gemini_valid(void)
{
    char *pdf = pdf_b64(NULL);
    json_object *req =
        gemini_req("Event theme: robots. Submission: a robot arm. Answer in JSON.", pdf);
    resp_t r;
    gemini_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    json_object *body = json_tokener_parse(r.body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    CU_ASSERT_STRING_EQUAL(jstr_at(body, "candidates.0.finishReason"), "STOP");
    CU_ASSERT_STRING_EQUAL(jstr_at(body, "candidates.0.content.role"), "model");
    json_object *v = verdict(jstr_at(body, "candidates.0.content.parts.0.text"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_TRUE(json_object_get_boolean(jget(v, "valid")));
    CU_ASSERT_DOUBLE_EQUAL(json_object_get_double(jget(v, "score")), 0.9, 1e-9);
    CU_ASSERT_TRUE(strlen(jstr_at(v, "reason")) > 0);
    int64_t prompt = jgeti(body, "usageMetadata.promptTokenCount");
    int64_t cand = jgeti(body, "usageMetadata.candidatesTokenCount");
    CU_ASSERT_TRUE(prompt > 258); /* at least the PDF page plus the text */
    CU_ASSERT_TRUE(cand > 0);
    CU_ASSERT_EQUAL(jgeti(body, "usageMetadata.totalTokenCount"), prompt + cand);
    CU_ASSERT_EQUAL(counter("gemini", "requests"), 1);
    CU_ASSERT_EQUAL(counter("gemini", "ok"), 1);
    CU_ASSERT_EQUAL(counter("gemini", "verdict_valid"), 1);
    CU_ASSERT_EQUAL(counter("gemini", "malformed"), 0);
    CU_ASSERT_EQUAL(counter("gemini", "bytes_in"),
                    (int64_t)strlen(json_object_to_json_string(req)));
    json_object_put(v);
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);
    free(pdf);
}

static void test_groq_valid(void)
{
    json_object *req = groq_req(GROQ_TEXT, "Theme: robots. Submission: robot arm.", 0, NULL);
    resp_t r;
    groq_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    json_object *body = json_tokener_parse(r.body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    CU_ASSERT_STRING_EQUAL(jstr_at(body, "choices.0.finish_reason"), "stop");
    CU_ASSERT_STRING_EQUAL(jstr_at(body, "choices.0.message.role"), "assistant");
    json_object *v = verdict(jstr_at(body, "choices.0.message.content"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_TRUE(json_object_get_boolean(jget(v, "valid")));
    CU_ASSERT_DOUBLE_EQUAL(json_object_get_double(jget(v, "score")), 0.9, 1e-9);
    CU_ASSERT_TRUE(jgeti(body, "usage.prompt_tokens") > 0);
    CU_ASSERT_TRUE(jgeti(body, "usage.completion_tokens") > 0);
    CU_ASSERT_EQUAL(strncmp(jstr_at(body, "x_groq.id"), "req_", 4), 0);
    CU_ASSERT_STRING_EQUAL(jstr_at(body, "model"), GROQ_TEXT);
    check_groq_headers(&r);
    char lim[32], rem[32], reset[32];
    CU_ASSERT_PTR_NOT_NULL_FATAL(header(&r, "x-ratelimit-limit-requests", lim, sizeof(lim)));
    CU_ASSERT_PTR_NOT_NULL_FATAL(header(&r, "x-ratelimit-remaining-requests", rem, sizeof(rem)));
    CU_ASSERT_EQUAL(atoll(rem), atoll(lim) - 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(header(&r, "x-ratelimit-reset-requests", reset, sizeof(reset)));
    /* 1 of 14400 per day comes back after 86400/14400 = 6 s. */
    CU_ASSERT_STRING_EQUAL(reset, "6s");
    CU_ASSERT_PTR_NULL(header(&r, "retry-after", lim, sizeof(lim)));
    CU_ASSERT_EQUAL(counter("groq", "ok"), 1);
    json_object_put(v);
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);

    /* The vision model with images also answers. */
    req = groq_req(GROQ_VISION, "Are these images fine? Answer in JSON.", 2, NULL);
    groq_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    body = json_tokener_parse(r.body);
    v = verdict(jstr_at(body, "choices.0.message.content"));
    CU_ASSERT_PTR_NOT_NULL(v);
    CU_ASSERT_TRUE(v && json_object_get_boolean(jget(v, "valid")));
    CU_ASSERT_EQUAL(counter("groq", "ok"), 2);
    json_object_put(v);
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);
}

/* Markers anywhere (text or decoded file bytes) give valid:false naming them. */
static void test_markers(void)
{
    struct {
        const char *text, *pdf_marker, *expect;
    } cases[] = {{"This is OFFTOPIC for sure", NULL, "OFFTOPIC"},
                 {"A fine submission", "BADPDF", "BADPDF"}};
    for (size_t i = 0; i < 2; i++) {
        char *pdf = pdf_b64(cases[i].pdf_marker);
        json_object *req = gemini_req(cases[i].text, pdf);
        resp_t r;
        gemini_post(req, &r);
        CU_ASSERT_EQUAL(r.status, 200);
        json_object *body = json_tokener_parse(r.body);
        json_object *v = verdict(jstr_at(body, "candidates.0.content.parts.0.text"));
        CU_ASSERT_PTR_NOT_NULL(v);
        CU_ASSERT_FALSE(v && json_object_get_boolean(jget(v, "valid")));
        CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(v, "reason"), cases[i].expect));
        CU_ASSERT_TRUE(json_object_get_double(jget(v, "score")) < 0.5);
        json_object_put(v);
        json_object_put(body);
        resp_free(&r);
        json_object_put(req);
        free(pdf);
    }
    CU_ASSERT_EQUAL(counter("gemini", "verdict_invalid"), 2);

    /* Groq: the text and the decoded image bytes. */
    json_object *req = groq_req(GROQ_TEXT, "OFFTOPIC submission", 0, NULL);
    resp_t r;
    groq_post(req, &r);
    json_object *body = json_tokener_parse(r.body);
    json_object *v = verdict(jstr_at(body, "choices.0.message.content"));
    CU_ASSERT_FALSE(v && json_object_get_boolean(jget(v, "valid")));
    CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(v, "reason"), "OFFTOPIC"));
    json_object_put(v);
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);

    req = groq_req(GROQ_VISION, "Check the image", 1, "BADIMG");
    groq_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    body = json_tokener_parse(r.body);
    v = verdict(jstr_at(body, "choices.0.message.content"));
    CU_ASSERT_FALSE(v && json_object_get_boolean(jget(v, "valid")));
    CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(v, "reason"), "BADIMG"));
    json_object_put(v);
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);
    CU_ASSERT_EQUAL(counter("groq", "verdict_invalid"), 2);
}

/* Apply a mutation given as a JSON merge at a path to a fresh valid request. */
typedef void (*mutate_fn)(json_object *req);

static void m_schema_additional(json_object *q)
{
    json_object_object_add(jget(q, "generationConfig.responseSchema"), "additionalProperties",
                           json_object_new_boolean(0));
}
static void m_schema_dollar(json_object *q)
{
    json_object_object_add(jget(q, "generationConfig.responseSchema"), "$schema",
                           jstr("http://json-schema.org/draft-07/schema#"));
}
static void m_schema_title(json_object *q)
{
    json_object_object_add(jget(q, "generationConfig.responseSchema.properties.valid"), "title",
                           jstr("Valid"));
}
static void m_schema_const(json_object *q)
{
    json_object_object_add(jget(q, "generationConfig.responseSchema.properties.reason"), "const",
                           jstr("x"));
}
static void m_media_after_text(json_object *q)
{
    json_object *parts = jget(q, "contents.0.parts");
    char *png = png_b64(NULL);
    json_object_array_add(parts, inline_part("image/png", png));
    free(png);
}
static void m_bad_base64(json_object *q)
{
    json_object_object_add(jget(q, "contents.0.parts.0.inline_data"), "data", jstr("JVBER!!=="));
}
static void m_data_prefix(json_object *q)
{
    char *pdf = pdf_b64(NULL);
    char *v = NULL;
    if (asprintf(&v, "data:application/pdf;base64,%s", pdf) < 0)
        abort();
    json_object_object_add(jget(q, "contents.0.parts.0.inline_data"), "data", jstr(v));
    free(v);
    free(pdf);
}
static void m_gif(json_object *q)
{
    json_object_object_add(jget(q, "contents.0.parts.0.inline_data"), "mime_type",
                           jstr("image/gif"));
}
static void m_not_pdf(json_object *q)
{
    static const char zip[] = "PK\x03\x04 a zip file";
    char *d = b64(zip, sizeof(zip) - 1);
    json_object_object_add(jget(q, "contents.0.parts.0.inline_data"), "data", jstr(d));
    free(d);
}
static void m_no_json_mode(json_object *q)
{
    json_object_object_del(jget(q, "generationConfig"), "responseMimeType");
    json_object_object_del(jget(q, "generationConfig"), "responseSchema");
}
static void m_unknown_field(json_object *q)
{
    json_object_object_add(q, "response_format", jstr("json"));
}
static void m_empty_text(json_object *q)
{
    json_object_object_add(jget(q, "contents.0.parts.1"), "text", jstr(""));
}

static void test_gemini_malformed(void)
{
    struct {
        mutate_fn fn;
        const char *expect;
    } cases[] = {
        {m_schema_additional, "additionalProperties"},
        {m_schema_dollar, "$schema"},
        {m_schema_title, "\"title\""},
        {m_schema_const, "\"const\""},
        {m_media_after_text, "media parts must come before the text part"},
        {m_bad_base64, "Base64 decoding failed"},
        {m_data_prefix, "data:"},
        {m_gif, "Unsupported MIME type: image/gif"},
        {m_not_pdf, "not a PDF"},
        {m_no_json_mode, "application/json"},
        {m_unknown_field, "Unknown name \"response_format\""},
        {m_empty_text, "empty text parameter"},
    };
    int64_t n = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *pdf = pdf_b64(NULL);
        json_object *req = gemini_req("Judge this. JSON please.", pdf);
        cases[i].fn(req);
        resp_t r;
        gemini_post(req, &r);
        CU_ASSERT_EQUAL(r.status, 400);
        json_object *body = json_tokener_parse(r.body);
        CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.status"), "INVALID_ARGUMENT");
        CU_ASSERT_EQUAL(jgeti(body, "error.code"), 400);
        CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(body, "error.message"), cases[i].expect));
        CU_ASSERT_EQUAL(counter("gemini", "malformed"), ++n);
        CU_ASSERT_TRUE(last_malformed_has("gemini", cases[i].expect));
        json_object_put(body);
        resp_free(&r);
        json_object_put(req);
        free(pdf);
    }
    CU_ASSERT_EQUAL(counter("gemini", "ok"), 0);

    /* Not JSON at all. */
    resp_t r;
    char *url = gemini_url(GEMINI_MODEL);
    post(url, gemini_hdrs, "{\"contents\": [", &r);
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_TRUE(last_malformed_has("gemini", "Invalid JSON payload"));
    resp_free(&r);

    /* The key in the URL is refused even with the right header. */
    char *kurl = NULL;
    if (asprintf(&kurl, "%s?key=%s", url, SIMCTL_GEMINI_KEY) < 0)
        abort();
    json_object *req = gemini_req("Judge this. JSON please.", NULL);
    post(kurl, gemini_hdrs, json_object_to_json_string(req), &r);
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_TRUE(last_malformed_has("gemini", "?key="));
    resp_free(&r);
    free(kurl);
    free(url);

    /* An unknown model is a 404, still the client's fault. */
    url = gemini_url("gemini-9-ultra");
    post(url, gemini_hdrs, json_object_to_json_string(req), &r);
    CU_ASSERT_EQUAL(r.status, 404);
    json_object *body = json_tokener_parse(r.body);
    CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.status"), "NOT_FOUND");
    json_object_put(body);
    resp_free(&r);
    free(url);

    /* Thinking-only models refuse a zero thinking budget. */
    url = gemini_url("gemini-2.5-pro");
    post(url, gemini_hdrs, json_object_to_json_string(req), &r);
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_TRUE(last_malformed_has("gemini", "Budget 0 is invalid"));
    resp_free(&r);
    free(url);

    /* Over the payload limit: 400 "payload size exceeds". */
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"max_body_bytes\":300}"), 0);
    gemini_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "payload size exceeds the limit: 300 bytes"));
    CU_ASSERT_EQUAL(counter("gemini", "too_large"), 1);
    resp_free(&r);
    json_object_put(req);
    CU_ASSERT_EQUAL(counter("gemini", "malformed"), n + 5);
}

static void g_json_word(json_object *q)
{
    json_object_object_add(jget(q, "messages.0"), "content", jstr("You judge submissions."));
    json_object_object_add(jget(q, "messages.1.content.0"), "text", jstr("Judge it."));
}
static void g_unknown(json_object *q)
{
    json_object_object_add(q, "responseFormat", jstr("json"));
}
static void g_pdf(json_object *q)
{
    char *pdf = pdf_b64(NULL), *url = NULL;
    if (asprintf(&url, "data:application/pdf;base64,%s", pdf) < 0)
        abort();
    json_object_object_add(jget(q, "messages.1.content.1.image_url"), "url", jstr(url));
    free(url);
    free(pdf);
}
static void g_http_url(json_object *q)
{
    json_object_object_add(jget(q, "messages.1.content.1.image_url"), "url",
                           jstr("https://example.com/a.png"));
}
static void g_bad_b64(json_object *q)
{
    json_object_object_add(jget(q, "messages.1.content.1.image_url"), "url",
                           jstr("data:image/png;base64,iVBOR*"));
}

static void test_groq_malformed(void)
{
    struct {
        const char *model;
        int images;
        mutate_fn fn;
        const char *expect;
    } cases[] = {
        {GROQ_TEXT, 0, g_json_word, "must contain the word 'json'"},
        {GROQ_TEXT, 1, NULL, "does not support image input"},
        {GROQ_VISION, 6, NULL, "Too many images provided"},
        {GROQ_VISION, 1, g_pdf, "PDF input is not supported"},
        {GROQ_TEXT, 0, g_unknown, "property 'responseFormat' is unsupported"},
        {GROQ_VISION, 1, g_http_url, "data: URLs"},
        {GROQ_VISION, 1, g_bad_b64, "invalid base64"},
    };
    int64_t n = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_object *req =
            groq_req(cases[i].model, "Judge this submission.", cases[i].images, NULL);
        if (cases[i].fn)
            cases[i].fn(req);
        resp_t r;
        groq_post(req, &r);
        CU_ASSERT_EQUAL(r.status, 400);
        json_object *body = json_tokener_parse(r.body);
        CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.type"), "invalid_request_error");
        CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(body, "error.message"), cases[i].expect));
        CU_ASSERT_EQUAL(counter("groq", "malformed"), ++n);
        CU_ASSERT_TRUE(last_malformed_has("groq", cases[i].expect));
        check_groq_headers(&r);
        json_object_put(body);
        resp_free(&r);
        json_object_put(req);
    }

    /* Unknown model: 404 model_not_found. */
    json_object *req = groq_req("llama-9-huge", "Judge. JSON.", 0, NULL);
    resp_t r;
    groq_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 404);
    json_object *body = json_tokener_parse(r.body);
    CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.code"), "model_not_found");
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);

    /* A vision request above the base64 limit: 413. */
    CU_ASSERT_EQUAL(simctl_set(sim, "groq", "{\"vision_max_bytes\":600}"), 0);
    req = groq_req(GROQ_VISION, "Judge the images. JSON.", 3, NULL);
    groq_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 413);
    body = json_tokener_parse(r.body);
    CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.code"), "request_too_large");
    check_groq_headers(&r);
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);

    /* A prompt above the tokens-per-minute limit: 413 rate_limit_exceeded,
     * which a client must not retry. */
    CU_ASSERT_EQUAL(simctl_set(sim, "groq", "{\"tpm\":20}"), 0);
    req = groq_req(GROQ_TEXT,
                   "A long submission text that is well above twenty tokens once the "
                   "system prompt is counted too. JSON.",
                   0, NULL);
    groq_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 413);
    body = json_tokener_parse(r.body);
    CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.code"), "rate_limit_exceeded");
    CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(body, "error.message"), "Request too large"));
    CU_ASSERT_EQUAL(counter("groq", "too_large"), 2);
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);
    CU_ASSERT_EQUAL(counter("groq", "ok"), 0);

    /* Requests that fit one by one but not together in a minute: Groq's
     * tokens-per-minute 429 with retry-after, and headers saying so. */
    CU_ASSERT_EQUAL(simctl_set(sim, "groq", "{\"tpm\":120}"), 0);
    req = groq_req(GROQ_TEXT, "Judge this short text. JSON.", 0, NULL);
    int ok = 0, limited = 0;
    for (int i = 0; i < 8; i++) {
        groq_post(req, &r);
        if (r.status == 200)
            ok++;
        if (r.status == 429) {
            limited++;
            body = json_tokener_parse(r.body);
            CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.code"), "rate_limit_exceeded");
            CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.type"), "tokens");
            CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(body, "error.message"),
                                          "on tokens per minute (TPM): Limit 120, Used "));
            CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(body, "error.message"), "Please try again in"));
            char ra[32];
            CU_ASSERT_PTR_NOT_NULL(header(&r, "retry-after", ra, sizeof(ra)));
            CU_ASSERT_PTR_NOT_NULL(header(&r, "x-ratelimit-remaining-tokens", ra, sizeof(ra)));
            json_object_put(body);
        }
        resp_free(&r);
    }
    CU_ASSERT_TRUE(ok >= 1);
    CU_ASSERT_TRUE(limited >= 1);
    CU_ASSERT_EQUAL(ok + limited, 8);
    json_object_put(req);
}

static void test_gemini_rate_limit(void)
{
    /* 6 per minute over a 10 s window: one request per window. */
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"rpm\":6,\"window_s\":10}"), 0);
    json_object *req = gemini_req("Judge. JSON.", NULL);
    resp_t r;
    gemini_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_free(&r);
    for (int i = 0; i < 8; i++) {
        gemini_post(req, &r);
        CU_ASSERT_EQUAL(r.status, 429);
        json_object *body = json_tokener_parse(r.body);
        CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.status"), "RESOURCE_EXHAUSTED");
        json_object *qf = detail(body, "QuotaFailure");
        CU_ASSERT_PTR_NOT_NULL(qf);
        CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(qf, "violations.0.quotaId"), "PerMinute"));
        /* The stated value is per minute, whatever the window. */
        CU_ASSERT_STRING_EQUAL(jstr_at(qf, "violations.0.quotaValue"), "6");
        json_object *ri = detail(body, "RetryInfo");
        CU_ASSERT_PTR_NOT_NULL(ri);
        const char *delay = jstr_at(ri, "retryDelay");
        char *end = NULL;
        long secs = strtol(delay, &end, 10);
        CU_ASSERT_TRUE(secs >= 1 && secs <= 10);
        CU_ASSERT_STRING_EQUAL(end, "s");
        CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(body, "error.message"), "Please retry in"));
        char buf[16];
        CU_ASSERT_PTR_NULL(header(&r, "retry-after", buf, sizeof(buf)));
        json_object_put(body);
        resp_free(&r);
    }
    CU_ASSERT_EQUAL(counter("gemini", "rate_limited"), 8);
    CU_ASSERT_EQUAL(counter("gemini", "ok"), 1);

    /* Some 429s carry no RetryInfo at all. */
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"retry_info_rate\":0}"), 0);
    gemini_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 429);
    json_object *body = json_tokener_parse(r.body);
    CU_ASSERT_PTR_NULL(detail(body, "RetryInfo"));
    CU_ASSERT_PTR_NOT_NULL(detail(body, "QuotaFailure"));
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);
}

static void test_groq_rate_limit_and_window(void)
{
    /* 600 per minute over 0.5 s: five per half second. */
    CU_ASSERT_EQUAL(simctl_set(sim, "groq", "{\"rpm\":600,\"window_s\":0.5}"), 0);
    json_object *req = groq_req(GROQ_TEXT, "Judge. JSON.", 0, NULL);
    resp_t r;
    int ok = 0, limited = 0;
    double retry = -1;
    for (int i = 0; i < 6; i++) {
        groq_post(req, &r);
        if (r.status == 200)
            ok++;
        if (r.status == 429) {
            limited++;
            char ra[32];
            CU_ASSERT_PTR_NOT_NULL_FATAL(header(&r, "retry-after", ra, sizeof(ra)));
            retry = strtod(ra, NULL);
            json_object *body = json_tokener_parse(r.body);
            CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.code"), "rate_limit_exceeded");
            CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(body, "error.message"), "Please try again in"));
            CU_ASSERT_PTR_NOT_NULL(strstr(jstr_at(body, "error.message"), "(RPM): Limit 600"));
            json_object_put(body);
        }
        check_groq_headers(&r);
        resp_free(&r);
    }
    /* Six requests well within half a second: five pass, one is refused. A
     * slow machine may see the window slide once; then all six pass. */
    CU_ASSERT_TRUE((ok == 5 && limited == 1) || (ok == 6 && limited == 0));
    if (limited) {
        CU_ASSERT_TRUE(retry > 0 && retry <= 0.5);
        /* After the advised delay the window admits again. */
        struct timespec ts = {0, (long)(retry * 1e9) + 20000000L};
        nanosleep(&ts, NULL);
        groq_post(req, &r);
        CU_ASSERT_EQUAL(r.status, 200);
        resp_free(&r);
    }
    CU_ASSERT_EQUAL(counter("groq", "rate_limited"), limited);
    json_object_put(req);
}

/* Expected outcome of one fault mode. */
typedef struct {
    const char *fault;
    long status;
    const char *needle; /* substring of the body, or NULL */
    const char *path;   /* JSON path that must equal `value`, or NULL */
    const char *value;
    bool json; /* body must parse as JSON */
} fault_case_t;

static void run_fault(const char *prov, const fault_case_t *fc)
{
    char set[128];
    snprintf(set, sizeof(set), "{\"fault\":\"%s\",\"fail_next\":1}", fc->fault);
    CU_ASSERT_EQUAL_FATAL(simctl_set(sim, prov, set), 0);
    bool gem = strcmp(prov, "gemini") == 0;
    json_object *req =
        gem ? gemini_req("Judge. JSON.", NULL) : groq_req(GROQ_TEXT, "Judge. JSON.", 0, NULL);
    resp_t r;
    if (gem)
        gemini_post(req, &r);
    else
        groq_post(req, &r);
    if (r.status != fc->status)
        fprintf(stderr, "%s fault %s: status %ld body %s\n", prov, fc->fault, r.status, r.body);
    CU_ASSERT_EQUAL(r.status, fc->status);
    if (fc->needle)
        CU_ASSERT_PTR_NOT_NULL(strstr(r.body, fc->needle));
    json_object *body = json_tokener_parse(r.body);
    if (fc->json)
        CU_ASSERT_PTR_NOT_NULL(body);
    if (fc->path)
        CU_ASSERT_STRING_EQUAL(jstr_at(body, fc->path), fc->value);
    if (!gem)
        check_groq_headers(&r);
    json_object_put(body);
    resp_free(&r);
    /* fail_next=1: the next request is answered normally. */
    if (gem)
        gemini_post(req, &r);
    else
        groq_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_free(&r);
    json_object_put(req);
}

static void test_gemini_faults(void)
{
    static const fault_case_t cases[] = {
        {"overloaded", 503, "The model is overloaded", "error.status", "UNAVAILABLE", true},
        {"internal", 500, NULL, "error.status", "INTERNAL", true},
        {"deadline", 504, NULL, "error.status", "DEADLINE_EXCEEDED", true},
        {"html", 502, "<!DOCTYPE html>", NULL, NULL, false},
        {"empty", 502, NULL, NULL, NULL, false},
        {"blocked", 200, NULL, "promptFeedback.blockReason", "PROHIBITED_CONTENT", true},
        {"safety", 200, NULL, "candidates.0.finishReason", "SAFETY", true},
        {"truncated", 200, NULL, "candidates.0.finishReason", "MAX_TOKENS", true},
        {"daily_quota", 429, "PerDay", "error.status", "RESOURCE_EXHAUSTED", true},
        {"array_error", 429, NULL, "0.error.status", "RESOURCE_EXHAUSTED", true},
        {"fenced", 200, "```json", "candidates.0.finishReason", "STOP", true},
        {"bad_key", 400, "API_KEY_INVALID", "error.status", "INVALID_ARGUMENT", true},
        {"too_large", 400, "payload size exceeds", "error.status", "INVALID_ARGUMENT", true},
        {"garbage", 200, NULL, NULL, NULL, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_fault("gemini", &cases[i]);
    CU_ASSERT_EQUAL(counter("gemini", "faults"), (int64_t)(sizeof(cases) / sizeof(cases[0])));

    /* Shapes a client must handle beyond the status. */
    json_object *req = gemini_req("Judge. JSON.", NULL);
    resp_t r;
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"garbage\",\"fail_next\":1}"), 0);
    gemini_post(req, &r);
    json_object *body = json_tokener_parse(r.body);
    CU_ASSERT_PTR_NULL(body); /* 200 but not JSON */
    json_object_put(body);
    resp_free(&r);

    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"blocked\",\"fail_next\":1}"), 0);
    gemini_post(req, &r);
    body = json_tokener_parse(r.body);
    CU_ASSERT_PTR_NULL(jget(body, "candidates"));
    json_object_put(body);
    resp_free(&r);

    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"truncated\",\"fail_next\":1}"), 0);
    gemini_post(req, &r);
    body = json_tokener_parse(r.body);
    json_object *v = verdict(jstr_at(body, "candidates.0.content.parts.0.text"));
    CU_ASSERT_PTR_NULL(v); /* cut JSON */
    CU_ASSERT_TRUE(strlen(jstr_at(body, "candidates.0.content.parts.0.text")) > 0);
    json_object_put(v);
    json_object_put(body);
    resp_free(&r);

    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"fenced\",\"fail_next\":1}"), 0);
    gemini_post(req, &r);
    body = json_tokener_parse(r.body);
    const char *text = jstr_at(body, "candidates.0.content.parts.0.text");
    const char *open = strstr(text, "```json\n"), *close = open ? strstr(open + 8, "\n```") : NULL;
    CU_ASSERT_TRUE(open && close && open != text); /* prose before the fence */
    if (open && close) {
        char *inner = strndup(open + 8, (size_t)(close - open - 8));
        v = verdict(inner);
        CU_ASSERT_TRUE(v && json_object_get_boolean(jget(v, "valid")));
        json_object_put(v);
        free(inner);
    }
    json_object_put(body);
    resp_free(&r);

    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"empty\",\"fail_next\":1}"), 0);
    gemini_post(req, &r);
    CU_ASSERT_EQUAL(r.len, 0);
    resp_free(&r);

    /* A fault at rate 0 never fires; "none" clears it. */
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"internal\",\"fault_rate\":0}"), 0);
    gemini_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_free(&r);
    /* Without a count the fault applies to every request until changed. */
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"overloaded\",\"fault_rate\":1}"), 0);
    for (int i = 0; i < 3; i++) {
        gemini_post(req, &r);
        CU_ASSERT_EQUAL(r.status, 503);
        resp_free(&r);
    }
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"none\"}"), 0);
    gemini_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_free(&r);
    json_object_put(req);

    /* Unknown or foreign fault names are refused by the control API. */
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"explode\"}"), EV_EINVAL);
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"json_failed\"}"), EV_EINVAL);
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"rpm\":\"many\"}"), EV_EINVAL);
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"no_such_setting\":1}"), EV_EINVAL);
}

static void test_groq_faults(void)
{
    static const fault_case_t cases[] = {
        {"overloaded", 503, "over capacity", "error.type", "internal_server_error", true},
        {"internal", 500, NULL, "error.type", "internal_server_error", true},
        {"deadline", 504, NULL, NULL, NULL, true},
        {"html", 502, "<html>", NULL, NULL, false},
        {"empty", 502, NULL, NULL, NULL, false},
        {"garbage", 200, NULL, NULL, NULL, false},
        {"blocked", 200, "can't help", "choices.0.finish_reason", "stop", true},
        {"truncated", 200, NULL, "choices.0.finish_reason", "length", true},
        {"daily_quota", 429, "requests per day (RPD)", "error.code", "rate_limit_exceeded", true},
        {"array_error", 429, NULL, "0.error.code", "rate_limit_exceeded", true},
        {"fenced", 200, "```json", "choices.0.finish_reason", "stop", true},
        {"bad_key", 401, NULL, "error.code", "invalid_api_key", true},
        {"too_large", 413, "Request too large", "error.code", "rate_limit_exceeded", true},
        {"json_failed", 400, "failed_generation", "error.code", "json_validate_failed", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_fault("groq", &cases[i]);
    CU_ASSERT_EQUAL(counter("groq", "faults"), (int64_t)(sizeof(cases) / sizeof(cases[0])));

    /* The daily-quota 429 carries retry-after too; the refusal is not JSON. */
    json_object *req = groq_req(GROQ_TEXT, "Judge. JSON.", 0, NULL);
    resp_t r;
    CU_ASSERT_EQUAL(simctl_set(sim, "groq", "{\"fault\":\"daily_quota\",\"fail_next\":1}"), 0);
    groq_post(req, &r);
    char ra[32];
    CU_ASSERT_PTR_NOT_NULL(header(&r, "retry-after", ra, sizeof(ra)));
    resp_free(&r);
    CU_ASSERT_EQUAL(simctl_set(sim, "groq", "{\"fault\":\"blocked\",\"fail_next\":1}"), 0);
    groq_post(req, &r);
    json_object *body = json_tokener_parse(r.body);
    json_object *v = verdict(jstr_at(body, "choices.0.message.content"));
    CU_ASSERT_PTR_NULL(v);
    json_object_put(v);
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);
    CU_ASSERT_EQUAL(simctl_set(sim, "groq", "{\"fault\":\"safety\"}"), EV_EINVAL);
}

/* hang: with hang_ms the client gets a 504 late; without, nothing until it
 * gives up, and the sim notices the client left. */
static void test_hang(void)
{
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"hang\",\"hang_ms\":150}"), 0);
    json_object *req = gemini_req("Judge. JSON.", NULL);
    resp_t r;
    gemini_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 504);
    resp_free(&r);

    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"hang\",\"hang_ms\":0}"), 0);
    char *url = gemini_url(GEMINI_MODEL);
    post_t(url, gemini_hdrs, json_object_to_json_string(req), &r, 300);
    CU_ASSERT_EQUAL(r.cc, CURLE_OPERATION_TIMEDOUT);
    CU_ASSERT_EQUAL(r.status, 0);
    resp_free(&r);
    CU_ASSERT_EQUAL(simctl_wait_counter(sim, "gemini", "in_flight", 0, 5000), 0);
    CU_ASSERT_EQUAL(counter("gemini", "hung"), 2);
    free(url);
    json_object_put(req);

    CU_ASSERT_EQUAL(simctl_set(sim, "groq", "{\"fault\":\"hang\",\"hang_ms\":0}"), 0);
    req = groq_req(GROQ_TEXT, "Judge. JSON.", 0, NULL);
    url = groq_url();
    post_t(url, groq_hdrs, json_object_to_json_string(req), &r, 300);
    CU_ASSERT_EQUAL(r.cc, CURLE_OPERATION_TIMEDOUT);
    resp_free(&r);
    CU_ASSERT_EQUAL(simctl_wait_counter(sim, "groq", "in_flight", 0, 5000), 0);
    free(url);
    json_object_put(req);
}

/* 64 clients at once: the sim holds all of them in its handler at the same
 * time and reports exactly that maximum. */
static void test_max_concurrency(void)
{
    enum { N = 64 };
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"fault\":\"hang\",\"hang_ms\":0}"), 0);
    json_object *req = gemini_req("Judge. JSON.", NULL);
    const char *body = json_object_to_json_string(req);
    char *url = gemini_url(GEMINI_MODEL);
    CURLM *m = curl_multi_init();
    CURL *h[N];
    struct curl_slist *lists[N] = {0};
    acc_t b[N], hd[N];
    memset(b, 0, sizeof(b));
    memset(hd, 0, sizeof(hd));
    for (int i = 0; i < N; i++) {
        h[i] = make_handle(url, gemini_hdrs, body, &lists[i], &b[i], &hd[i], 30000);
        curl_multi_add_handle(m, h[i]);
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int running = 0;
    int64_t inflight = 0;
    for (int iter = 0;; iter++) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 10, NULL);
        if (iter % 5 == 0) {
            inflight = counter("gemini", "in_flight");
            if (inflight == N)
                break;
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            if (t.tv_sec - t0.tv_sec > 20)
                break;
        }
    }
    CU_ASSERT_EQUAL(inflight, N);
    CU_ASSERT_EQUAL(counter("gemini", "max_in_flight"), N);
    /* The clients give up: every connection closes and the sim lets go. */
    for (int i = 0; i < N; i++) {
        curl_multi_remove_handle(m, h[i]);
        curl_easy_cleanup(h[i]);
        curl_slist_free_all(lists[i]);
        free(b[i].data);
        free(hd[i].data);
    }
    curl_multi_cleanup(m);
    CU_ASSERT_EQUAL(simctl_wait_counter(sim, "gemini", "in_flight", 0, 10000), 0);
    CU_ASSERT_EQUAL(counter("gemini", "max_in_flight"), N);
    CU_ASSERT_EQUAL(counter("gemini", "requests"), N);
    free(url);
    json_object_put(req);

    /* A sequential client never has more than one request in flight. */
    CU_ASSERT_EQUAL(simctl_reset(sim), 0);
    CU_ASSERT_EQUAL(simctl_set(sim, "groq", "{\"latency_ms\":5}"), 0);
    req = groq_req(GROQ_TEXT, "Judge. JSON.", 0, NULL);
    for (int i = 0; i < 5; i++) {
        resp_t r;
        groq_post(req, &r);
        CU_ASSERT_EQUAL(r.status, 200);
        resp_free(&r);
    }
    CU_ASSERT_EQUAL(counter("groq", "max_in_flight"), 1);
    json_object_put(req);
}

static void test_bad_keys(void)
{
    json_object *req = gemini_req("Judge. JSON.", NULL);
    char *url = gemini_url(GEMINI_MODEL);
    const char *const missing[] = {"Content-Type: application/json", NULL};
    const char *const wrong[] = {"Content-Type: application/json", "x-goog-api-key: nope", NULL};
    const char *const *variants[] = {missing, wrong};
    for (int i = 0; i < 2; i++) {
        resp_t r;
        post(url, variants[i], json_object_to_json_string(req), &r);
        CU_ASSERT_EQUAL(r.status, 400);
        json_object *body = json_tokener_parse(r.body);
        CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.status"), "INVALID_ARGUMENT");
        json_object *info = detail(body, "google.rpc.ErrorInfo");
        CU_ASSERT_PTR_NOT_NULL(info);
        CU_ASSERT_STRING_EQUAL(jstr_at(info, "reason"), "API_KEY_INVALID");
        json_object_put(body);
        resp_free(&r);
    }
    CU_ASSERT_EQUAL(counter("gemini", "auth_failed"), 2);
    CU_ASSERT_EQUAL(counter("gemini", "ok"), 0);
    free(url);
    json_object_put(req);

    req = groq_req(GROQ_TEXT, "Judge. JSON.", 0, NULL);
    url = groq_url();
    const char *const g_missing[] = {"Content-Type: application/json", NULL};
    const char *const g_wrong[] = {"Content-Type: application/json", "Authorization: Bearer nope",
                                   NULL};
    const char *const g_basic[] = {"Content-Type: application/json",
                                   "Authorization: Basic " SIMCTL_GROQ_KEY, NULL};
    const char *const *g_variants[] = {g_missing, g_wrong, g_basic};
    for (int i = 0; i < 3; i++) {
        resp_t r;
        post(url, g_variants[i], json_object_to_json_string(req), &r);
        CU_ASSERT_EQUAL(r.status, 401);
        json_object *body = json_tokener_parse(r.body);
        CU_ASSERT_STRING_EQUAL(jstr_at(body, "error.code"), "invalid_api_key");
        check_groq_headers(&r);
        json_object_put(body);
        resp_free(&r);
    }
    CU_ASSERT_EQUAL(counter("groq", "auth_failed"), 3);
    free(url);
    json_object_put(req);
}

/* Thinking spends the output budget: a small maxOutputTokens with thinking
 * on gives MAX_TOKENS and no text, as the real 2.5 models do. */
static void test_gemini_max_tokens(void)
{
    json_object *req = gemini_req("Judge. JSON.", NULL);
    json_object *gc = jget(req, "generationConfig");
    json_object_object_del(gc, "thinkingConfig");
    json_object_object_add(gc, "maxOutputTokens", json_object_new_int(100));
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"thought_tokens\":300}"), 0);
    resp_t r;
    gemini_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    json_object *body = json_tokener_parse(r.body);
    CU_ASSERT_STRING_EQUAL(jstr_at(body, "candidates.0.finishReason"), "MAX_TOKENS");
    CU_ASSERT_PTR_NULL(jget(body, "candidates.0.content.parts"));
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);

    /* Thought parts and split text: the client must skip thoughts and join. */
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"thoughts\":true,\"split_text\":true}"), 0);
    req = gemini_req("Judge. JSON.", NULL);
    json_object_object_del(jget(req, "generationConfig"), "thinkingConfig");
    gemini_post(req, &r);
    body = json_tokener_parse(r.body);
    json_object *parts = jget(body, "candidates.0.content.parts");
    CU_ASSERT_TRUE(parts && json_object_array_length(parts) == 3);
    CU_ASSERT_TRUE(json_object_get_boolean(jget(body, "candidates.0.content.parts.0.thought")));
    char joined[512];
    snprintf(joined, sizeof(joined), "%s%s", jstr_at(body, "candidates.0.content.parts.1.text"),
             jstr_at(body, "candidates.0.content.parts.2.text"));
    json_object *v = verdict(joined);
    CU_ASSERT_TRUE(v && json_object_get_boolean(jget(v, "valid")));
    CU_ASSERT_TRUE(jgeti(body, "usageMetadata.thoughtsTokenCount") > 0);
    json_object_put(v);
    json_object_put(body);
    resp_free(&r);
    json_object_put(req);
}

static void test_control_reset(void)
{
    CU_ASSERT_EQUAL(simctl_set(sim, "gemini", "{\"rpm\":1,\"latency_ms\":7}"), 0);
    json_object *req = gemini_req("Judge. JSON.", NULL);
    resp_t r;
    gemini_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_free(&r);
    gemini_post(req, &r);
    CU_ASSERT_EQUAL(r.status, 429);
    resp_free(&r);
    CU_ASSERT_EQUAL(counter("gemini", "requests"), 2);
    CU_ASSERT_EQUAL(simctl_reset(sim), 0);
    CU_ASSERT_EQUAL(counter("gemini", "requests"), 0);
    CU_ASSERT_EQUAL(counter("gemini", "rate_limited"), 0);
    /* The startup settings (rpm 0 = unlimited) are back. */
    for (int i = 0; i < 3; i++) {
        gemini_post(req, &r);
        CU_ASSERT_EQUAL(r.status, 200);
        resp_free(&r);
    }
    json_object_put(req);

    json_object *stats = NULL;
    CU_ASSERT_EQUAL(simctl_stats(sim, &stats), 0);
    CU_ASSERT_PTR_NOT_NULL(jget(stats, "uptime_s"));
    CU_ASSERT_EQUAL(jgeti(stats, "gemini.ok"), 3);
    CU_ASSERT_EQUAL(jgeti(stats, "groq.requests"), 0);
    json_object_put(stats);
}

/* A sim with a client stuck in a hang still stops cleanly on SIGTERM. */
static void test_stop_while_hanging(void)
{
    simctl_t *other = NULL;
    const char *args[] = {"--gemini-fault", "hang", NULL};
    CU_ASSERT_EQUAL_FATAL(simctl_start(&other, args), 0);
    simctl_t *saved = sim;
    sim = other;
    json_object *req = gemini_req("Judge. JSON.", NULL);
    char *url = gemini_url(GEMINI_MODEL);
    struct curl_slist *list = NULL;
    acc_t b = {0}, hd = {0};
    CURL *h = make_handle(url, gemini_hdrs, json_object_to_json_string(req), &list, &b, &hd, 30000);
    CURLM *m = curl_multi_init();
    curl_multi_add_handle(m, h);
    int running = 1;
    for (int i = 0; i < 2000 && counter("gemini", "in_flight") != 1; i++) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 5, NULL);
    }
    CU_ASSERT_EQUAL(counter("gemini", "in_flight"), 1);
    CU_ASSERT_EQUAL(simctl_stop(other), 0);
    /* The client sees its connection end without an answer. */
    for (int i = 0; i < 2000 && running; i++) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 5, NULL);
    }
    CU_ASSERT_EQUAL(running, 0);
    long status = -1;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    CU_ASSERT_EQUAL(status, 0);
    curl_multi_remove_handle(m, h);
    curl_easy_cleanup(h);
    curl_multi_cleanup(m);
    curl_slist_free_all(list);
    free(b.data);
    free(hd.data);
    free(url);
    json_object_put(req);
    sim = saved;
    simctl_free(other);
}

/* ------------------------------------------------------------------ main */

static int suite_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return simctl_start(&sim, NULL) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    int st = simctl_stop(sim);
    simctl_free(sim);
    sim = NULL;
    curl_global_cleanup();
    return st == 0 ? 0 : -1;
}

static void each_setup(void)
{
    CU_ASSERT_EQUAL_FATAL(simctl_reset(sim), 0);
}

static void each_teardown(void) {}

static const ev_test_t provider_sim_tests[] = {
    {"gemini valid request answered with the real shape", test_gemini_valid},
    {"groq valid request answered with the real shape and headers", test_groq_valid},
    {"OFFTOPIC/BADPDF/BADIMG markers give valid:false", test_markers},
    {"gemini malformed requests: 400 and counted", test_gemini_malformed},
    {"groq malformed requests: 400/404/413 and counted", test_groq_malformed},
    {"gemini rpm exceeded: 429 with QuotaFailure and RetryInfo", test_gemini_rate_limit},
    {"groq rpm exceeded: 429 with retry-after; window slides", test_groq_rate_limit_and_window},
    {"gemini fault modes", test_gemini_faults},
    {"groq fault modes", test_groq_faults},
    {"hang: late 504, or until the client leaves", test_hang},
    {"64 concurrent requests: max_in_flight", test_max_concurrency},
    {"bad keys: 400 API_KEY_INVALID / 401 invalid_api_key", test_bad_keys},
    {"gemini thinking, MAX_TOKENS, thought and split parts", test_gemini_max_tokens},
    {"control: reset restores settings and zeroes counters", test_control_reset},
    {"SIGTERM with a hanging client stops cleanly", test_stop_while_hanging},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"provider_sim", suite_init, suite_clean, provider_sim_tests, each_setup, each_teardown},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
