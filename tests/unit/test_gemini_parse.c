/*
 * test_gemini_parse.c - the Gemini client builds exactly the request of
 * PROVIDERS.md and classifies every status and failure body listed there,
 * without any HTTP: canned responses go through ev_gemini_parse_response().
 */
#include "ev/error.h"
#include "ev/gemini.h"
#include "ev/secret.h"

#include <CUnit/Basic.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

#define KEY "fake-gemini-secret-key-0123456789abcdef"
#define NO_WAIT_LIMIT 0
#define MAX_WAIT 10000

static ev_llm_result_t R;

/* Classifies (status, body) with a fresh result in R. body may be NULL. */
static void parse(int status, const char *body, int64_t max_wait)
{
    ev_http_response_t resp;
    ev_http_response_init(&resp);
    resp.status = status;
    if (body) {
        resp.body = strdup(body);
        resp.body_len = strlen(body);
    }
    ev_llm_result_free(&R);
    ev_gemini_parse_response(&R, &resp, max_wait);
    ev_http_response_free(&resp);
}

static json_object *jpath(json_object *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    /* Walk "a.0.b": numbers index arrays, names index objects. */
    for (char *tok = buf, *next; tok && o; tok = next) {
        next = strchr(tok, '.');
        if (next)
            *next++ = '\0';
        if (tok[0] >= '0' && tok[0] <= '9') {
            o = json_object_is_type(o, json_type_array)
                    ? json_object_array_get_idx(o, (size_t)strtoul(tok, NULL, 10))
                    : NULL;
        } else {
            json_object *v = NULL;
            o = json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, tok, &v)
                    ? v
                    : NULL;
        }
    }
    return o;
}

static const char *jpath_str(json_object *o, const char *path)
{
    json_object *v = jpath(o, path);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* True when any object key anywhere under o is `key`. */
static bool has_key_anywhere(json_object *o, const char *key)
{
    if (json_object_is_type(o, json_type_object)) {
        json_object_object_foreach(o, k, v)
        {
            if (strcmp(k, key) == 0 || has_key_anywhere(v, key))
                return true;
        }
    } else if (json_object_is_type(o, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(o); i++) {
            if (has_key_anywhere(json_object_array_get_idx(o, i), key))
                return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------ request */

static const unsigned char pdf_bytes[] = "%PDF-1.4\n\xff\xff\xff\xfe binary";
static const unsigned char png_bytes[] = "\x89PNG\r\n\x1a\n\xfb\xff\xbf";

static void test_body_shape(void)
{
    ev_llm_media_t media[2] = {{"application/pdf", pdf_bytes, sizeof(pdf_bytes) - 1},
                               {"image/png", png_bytes, sizeof(png_bytes) - 1}};
    ev_llm_request_t req = {.system_prompt = "You judge event submissions.",
                            .user_text = "Does this fit the theme?",
                            .media = media,
                            .media_count = 2,
                            .max_output_tokens = 512};
    char *body = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(ev_gemini_build_body(&body, &len, &req, 0), 0);
    CU_ASSERT_EQUAL(len, strlen(body));
    json_object *root = json_tokener_parse(body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);

    /* Exactly the three top-level members. */
    CU_ASSERT_EQUAL(json_object_object_length(root), 3);
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "system_instruction.parts.0.text"),
                           "You judge event submissions.");
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "contents.0.role"), "user");
    json_object *parts = jpath(root, "contents.0.parts");
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(parts), 3);
    /* Media parts first, in order, as plain base64; then the text. */
    CU_ASSERT_STRING_EQUAL(jpath_str(parts, "0.inline_data.mime_type"), "application/pdf");
    char *b64 = ev_llm_base64(pdf_bytes, sizeof(pdf_bytes) - 1, NULL);
    CU_ASSERT_STRING_EQUAL(jpath_str(parts, "0.inline_data.data"), b64);
    CU_ASSERT_PTR_NOT_NULL(strchr(b64, '/')); /* the data exercises '/' ... */
    CU_ASSERT_PTR_NULL(strstr(body, "\\/"));  /* ... which is not escaped */
    free(b64);
    CU_ASSERT_STRING_EQUAL(jpath_str(parts, "1.inline_data.mime_type"), "image/png");
    CU_ASSERT_PTR_NULL(strstr(body, "data:"));
    CU_ASSERT_STRING_EQUAL(jpath_str(parts, "2.text"), "Does this fit the theme?");

    json_object *gc = jpath(root, "generationConfig");
    CU_ASSERT_STRING_EQUAL(jpath_str(gc, "responseMimeType"), "application/json");
    CU_ASSERT_EQUAL(json_object_get_int(jpath(gc, "temperature")), 0);
    CU_ASSERT_EQUAL(json_object_get_int(jpath(gc, "maxOutputTokens")), 512);
    CU_ASSERT_EQUAL(json_object_get_int(jpath(gc, "thinkingConfig.thinkingBudget")), 0);
    json_object *schema = jpath(gc, "responseSchema");
    CU_ASSERT_STRING_EQUAL(jpath_str(schema, "type"), "OBJECT");
    CU_ASSERT_STRING_EQUAL(jpath_str(schema, "properties.valid.type"), "BOOLEAN");
    CU_ASSERT_STRING_EQUAL(jpath_str(schema, "properties.score.type"), "NUMBER");
    CU_ASSERT_STRING_EQUAL(jpath_str(schema, "properties.reason.type"), "STRING");
    CU_ASSERT_EQUAL(json_object_object_length(jpath(schema, "properties")), 3);
    json_object *req_fields = jpath(schema, "required");
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(req_fields), 3);
    CU_ASSERT_STRING_EQUAL(jpath_str(req_fields, "0"), "valid");
    CU_ASSERT_STRING_EQUAL(jpath_str(req_fields, "1"), "score");
    CU_ASSERT_STRING_EQUAL(jpath_str(req_fields, "2"), "reason");
    /* Keys Gemini rejects with a 400. */
    const char *forbidden[] = {"$schema", "additionalProperties", "title", "const"};
    for (size_t i = 0; i < 4; i++)
        CU_ASSERT_FALSE(has_key_anywhere(schema, forbidden[i]));
    json_object_put(root);
    free(body);
}

static void test_body_options(void)
{
    ev_llm_media_t media[1] = {{"application/pdf", pdf_bytes, sizeof(pdf_bytes) - 1}};
    ev_llm_request_t req = {.user_text = "Judge the theme.",
                            .media = media,
                            .media_count = 1,
                            .text_only = true,
                            .pdf_text = "Extracted text of page one."};
    char *body = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_gemini_build_body(&body, NULL, &req, -1), 0);
    json_object *root = json_tokener_parse(body);
    /* No system prompt: no system_instruction. text_only: no media. */
    CU_ASSERT_PTR_NULL(jpath(root, "system_instruction"));
    CU_ASSERT_EQUAL(json_object_array_length(jpath(root, "contents.0.parts")), 1);
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "contents.0.parts.0.text"),
                           "Judge the theme.\n\nExtracted text of page one.");
    /* thinkingBudget -1: no thinkingConfig at all; default token cap. */
    CU_ASSERT_PTR_NULL(jpath(root, "generationConfig.thinkingConfig"));
    CU_ASSERT_EQUAL(json_object_get_int(jpath(root, "generationConfig.maxOutputTokens")),
                    EV_LLM_DEFAULT_MAX_OUTPUT_TOKENS);
    json_object_put(root);
    free(body);

    /* Unusable requests. */
    ev_llm_request_t empty = {0};
    CU_ASSERT_EQUAL(ev_gemini_build_body(&body, NULL, &empty, 0), EV_EINVAL);
    CU_ASSERT_PTR_NULL(body);
    ev_llm_media_t gif = {"image/gif", png_bytes, 4};
    ev_llm_request_t bad_mime = {.user_text = "x", .media = &gif, .media_count = 1};
    CU_ASSERT_EQUAL(ev_gemini_build_body(&body, NULL, &bad_mime, 0), EV_EINVAL);
    ev_llm_media_t zero = {"image/png", png_bytes, 0};
    ev_llm_request_t zero_len = {.user_text = "x", .media = &zero, .media_count = 1};
    CU_ASSERT_EQUAL(ev_gemini_build_body(&body, NULL, &zero_len, 0), EV_EINVAL);
    /* Media alone is a valid request. */
    ev_llm_request_t media_only = {.media = media, .media_count = 1};
    CU_ASSERT_EQUAL(ev_gemini_build_body(&body, NULL, &media_only, 0), 0);
    free(body);
}

/* Strict standard base64 (padding required, no other characters): a new
 * buffer with the bytes and their count in *n, or NULL when invalid. */
static unsigned char *b64_decode(const char *s, size_t *n)
{
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = strlen(s);
    *n = 0;
    if (len % 4 != 0)
        return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = s[i + k];
            const char *d = c ? strchr(digits, c) : NULL;
            if (c == '=' && i + 4 == len && k >= 2 && (k == 3 || s[i + 3] == '=')) {
                pad++;
                v <<= 6;
            } else if (d && pad == 0) {
                v = v << 6 | (uint32_t)(d - digits);
            } else {
                free(out);
                return NULL;
            }
        }
        out[o++] = (unsigned char)(v >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(v >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)v;
    }
    *n = o;
    return out;
}

/* n bytes of file number `seed`: every byte value occurs, so every base64
 * digit and both padding lengths do too. */
static unsigned char *file_bytes(size_t n, unsigned seed)
{
    unsigned char *b = malloc(n ? n : 1);
    uint32_t x = 2654435761u * (seed + 1);
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (unsigned char)(x >> 16);
    }
    return b;
}

/* Sizes with every remainder mod 3, twice, small and large, and one the
 * size of a real upload. */
static const size_t media_sizes[] = {1, 2, 3, 4, 5, 6, 3000, 3001, 3002, 3003, 3004, 3005, 150001};
#define N_SIZES (sizeof(media_sizes) / sizeof(media_sizes[0]))
#define MAX_PARTS 4

/* True when `body` is exactly what json-c prints for the tree it parses to:
 * the hand-assembled skeleton around the base64 is canonical JSON. */
static bool same_as_json_c(json_object *root, const char *body, size_t len)
{
    size_t n = 0;
    const char *s = json_object_to_json_string_length(
        root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    return s && n == len && memcmp(s, body, len) == 0;
}

/* The base64 is written straight into the body (not through json-c): the
 * body must still parse as JSON, keep the PROVIDERS.md shape, and give back
 * exactly the file bytes, whatever their size and however many files. */
static void test_body_media_round_trip(void)
{
    static const char *const mimes[] = {"application/pdf", "image/png", "image/jpeg", "image/webp"};
    unsigned char *files[N_SIZES];
    for (size_t k = 0; k < N_SIZES; k++)
        files[k] = file_bytes(media_sizes[k], (unsigned)k);
    for (size_t count = 1; count <= MAX_PARTS; count++) {
        for (size_t k = 0; k < N_SIZES; k++) {
            ev_llm_media_t media[MAX_PARTS];
            for (size_t j = 0; j < count; j++) {
                size_t f = (k + j) % N_SIZES;
                media[j] = (ev_llm_media_t){mimes[j], files[f], media_sizes[f]};
            }
            ev_llm_request_t req = {.system_prompt = "Judge \"this\" \\ / \u00e9\n\x01.",
                                    .user_text = "Fits \"the\" theme?\t\u4e2d",
                                    .media = media,
                                    .media_count = count};
            char *body = NULL;
            size_t len = 0;
            CU_ASSERT_EQUAL_FATAL(ev_gemini_build_body(&body, &len, &req, 0), 0);
            CU_ASSERT_EQUAL(len, strlen(body));
            /* Strict parse: nothing may follow the object. */
            json_object *root = ev_llm_json_parse(body, len);
            CU_ASSERT_PTR_NOT_NULL_FATAL(root);
            CU_ASSERT_TRUE(same_as_json_c(root, body, len));
            json_object *parts = jpath(root, "contents.0.parts");
            CU_ASSERT_EQUAL_FATAL(json_object_array_length(parts), count + 1);
            for (size_t j = 0; j < count; j++) {
                char path[64];
                snprintf(path, sizeof(path), "%zu.inline_data.mime_type", j);
                CU_ASSERT_STRING_EQUAL(jpath_str(parts, path), mimes[j]);
                snprintf(path, sizeof(path), "%zu.inline_data.data", j);
                const char *data = jpath_str(parts, path);
                CU_ASSERT_PTR_NOT_NULL_FATAL(data);
                size_t n = 0;
                unsigned char *back = b64_decode(data, &n);
                CU_ASSERT_PTR_NOT_NULL_FATAL(back);
                CU_ASSERT_EQUAL(n, media[j].len);
                CU_ASSERT_TRUE(n == media[j].len && memcmp(back, media[j].bytes, n) == 0);
                free(back);
            }
            char last[16];
            snprintf(last, sizeof(last), "%zu.text", count);
            CU_ASSERT_STRING_EQUAL(jpath_str(parts, last), req.user_text);
            CU_ASSERT_STRING_EQUAL(jpath_str(root, "system_instruction.parts.0.text"),
                                   req.system_prompt);
            json_object_put(root);
            free(body);
        }
    }
    for (size_t k = 0; k < N_SIZES; k++)
        free(files[k]);

    /* Media only, no system prompt, no thinkingConfig: still canonical. */
    ev_llm_media_t one = {"image/heif", (const unsigned char *)"abcd", 4};
    ev_llm_request_t bare = {.media = &one, .media_count = 1};
    char *body = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(ev_gemini_build_body(&body, &len, &bare, -1), 0);
    json_object *root = ev_llm_json_parse(body, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    CU_ASSERT_TRUE(same_as_json_c(root, body, len));
    CU_ASSERT_EQUAL(json_object_array_length(jpath(root, "contents.0.parts")), 1);
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "contents.0.parts.0.inline_data.data"), "YWJjZA==");
    json_object_put(root);
    free(body);

    /* An empty file is refused rather than sent as "". */
    ev_llm_media_t empty = {"application/pdf", (const unsigned char *)"", 0};
    ev_llm_request_t with_empty = {.user_text = "x", .media = &empty, .media_count = 1};
    CU_ASSERT_EQUAL(ev_gemini_build_body(&body, NULL, &with_empty, 0), EV_EINVAL);
    CU_ASSERT_PTR_NULL(body);
    /* A size whose base64 cannot be counted in a size_t is refused before
     * any byte is read (the pointer is to 4 bytes on purpose). */
    ev_llm_media_t huge = {"image/png", (const unsigned char *)"abcd", SIZE_MAX / 4 * 3};
    ev_llm_request_t too_big = {.user_text = "x", .media = &huge, .media_count = 1};
    CU_ASSERT_EQUAL(ev_gemini_build_body(&body, &len, &too_big, 0), EV_ETOOBIG);
    CU_ASSERT_PTR_NULL(body);
    CU_ASSERT_EQUAL(len, 0);
    /* Two files that each fit but not together. */
    ev_llm_media_t halves[2] = {{"image/png", (const unsigned char *)"abcd", SIZE_MAX / 2},
                                {"image/png", (const unsigned char *)"abcd", SIZE_MAX / 2}};
    too_big.media = halves;
    too_big.media_count = 2;
    CU_ASSERT_EQUAL(ev_gemini_build_body(&body, NULL, &too_big, 0), EV_ETOOBIG);
    CU_ASSERT_PTR_NULL(body);
}

static void test_url_and_client(void)
{
    char *u = ev_gemini_build_url("https://generativelanguage.googleapis.com/v1beta/",
                                  "models/gemini-2.5-flash");
    CU_ASSERT_STRING_EQUAL(
        u,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent");
    free(u);

    ev_secret_t *key = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_secret_new(&key, KEY), 0);
    ev_provider_config_t cfg = {.id = EV_PROVIDER_GEMINI,
                                .api_key = key,
                                .model = "gemini-2.5-flash",
                                .base_url = "http://127.0.0.1:1/v1beta",
                                .thinking_budget = -1};
    ev_gemini_t *g = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_gemini_new(&g, &cfg, NULL), 0);
    const char *url = ev_gemini_url(g);
    CU_ASSERT_STRING_EQUAL(url,
                           "http://127.0.0.1:1/v1beta/models/gemini-2.5-flash:generateContent");
    CU_ASSERT_FALSE(ev_secret_appears_in(key, url, strlen(url)));
    CU_ASSERT_PTR_NULL(strstr(url, "key="));

    /* Refused before any HTTP: http is NULL here on purpose. */
    ev_llm_result_t r;
    ev_llm_request_t empty = {0};
    CU_ASSERT_EQUAL(ev_gemini_call(g, NULL, &empty, &r, NULL), EV_EINVAL);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_BAD_REQUEST);
    CU_ASSERT_FALSE(r.http_attempted);
    ev_llm_result_free(&r);
    ev_gemini_free(g);

    /* A request over the configured size limit falls back, no HTTP. */
    ev_llm_client_options_t opts = EV_LLM_CLIENT_OPTIONS_INIT;
    opts.max_request_bytes = 1000;
    CU_ASSERT_EQUAL_FATAL(ev_gemini_new(&g, &cfg, &opts), 0);
    static unsigned char big[3000];
    memset(big, 'A', sizeof(big));
    ev_llm_media_t m = {"application/pdf", big, sizeof(big)};
    ev_llm_request_t req = {.user_text = "judge", .media = &m, .media_count = 1};
    CU_ASSERT_EQUAL(ev_gemini_call(g, NULL, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(r.too_large);
    CU_ASSERT_FALSE(r.http_attempted);
    CU_ASSERT_STRING_EQUAL(r.model, "gemini-2.5-flash");
    ev_llm_result_free(&r);
    /* text_only drops the file, so the same request now fits. */
    req.text_only = true;
    atomic_bool stop = true;
    CU_ASSERT_EQUAL(ev_gemini_call(g, NULL, &req, &r, &stop), EV_EINVAL); /* no handle */
    CU_ASSERT_FALSE(r.too_large);
    ev_llm_result_free(&r);
    ev_gemini_free(g);

    /* Config errors. */
    ev_provider_config_t nokey = cfg;
    nokey.api_key = NULL;
    CU_ASSERT_EQUAL(ev_gemini_new(&g, &nokey, NULL), EV_ECONFIG);
    CU_ASSERT_PTR_NULL(g);
    ev_provider_config_t badmodel = cfg;
    badmodel.model = "gemini/../../x?key=1";
    CU_ASSERT_EQUAL(ev_gemini_new(&g, &badmodel, NULL), EV_ECONFIG);
    ev_secret_free(key);
}

/* ----------------------------------------------------------- 200 bodies */

static void test_ok_answer(void)
{
    parse(200,
          "{\"candidates\": [{\"content\": {\"parts\": ["
          "{\"text\": \"Thinking about the theme...\", \"thought\": true},"
          "{\"text\": \"{\\\"valid\\\": true, \"},"
          "{\"text\": \"\\\"score\\\": 0.9, \\\"reason\\\": \\\"fits\\\"}\", \"thought\": false}],"
          "\"role\": \"model\"}, \"finishReason\": \"STOP\", \"index\": 0}],"
          "\"usageMetadata\": {\"promptTokenCount\": 1200, \"candidatesTokenCount\": 20,"
          "\"thoughtsTokenCount\": 100, \"totalTokenCount\": 1320},"
          "\"modelVersion\": \"gemini-2.5-flash\", \"responseId\": \"abc123\"}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_OK);
    CU_ASSERT_EQUAL(R.http_status, 200);
    CU_ASSERT_STRING_EQUAL(R.text, "{\"valid\": true, \"score\": 0.9, \"reason\": \"fits\"}");
    CU_ASSERT_STRING_EQUAL(R.finish_reason, "STOP");
    CU_ASSERT_EQUAL(R.tokens_in, 1200);
    CU_ASSERT_EQUAL(R.tokens_out, 120);
    CU_ASSERT_STRING_EQUAL(R.request_id, "abc123");
    CU_ASSERT_STRING_EQUAL(R.error, "");
    CU_ASSERT_EQUAL(R.retry_after_ms, -1);

    /* Array-wrapped success and no finishReason are tolerated. */
    parse(200, "[{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"{}\"}]}}]}]", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_OK);
    CU_ASSERT_STRING_EQUAL(R.text, "{}");
}

static void test_200_without_answer(void)
{
    /* Blocked prompt: 200, no candidates, promptFeedback.blockReason. */
    parse(200,
          "{\"promptFeedback\": {\"blockReason\": \"SAFETY\", \"safetyRatings\": []},"
          "\"usageMetadata\": {\"promptTokenCount\": 7}}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    CU_ASSERT_STRING_EQUAL(R.finish_reason, "SAFETY");
    CU_ASSERT_PTR_NULL(R.text);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "blocked"));
    CU_ASSERT_EQUAL(R.tokens_in, 7);

    /* SAFETY finish with text: the text is not trusted. */
    parse(200,
          "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"{\\\"valid\\\": true}\"}]},"
          "\"finishReason\": \"SAFETY\"}]}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    CU_ASSERT_PTR_NULL(R.text);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "SAFETY"));

    const char *others[] = {"RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
                            "OTHER",      "SOMETHING_NEW_2027"};
    for (size_t i = 0; i < 6; i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"x\"}]},"
                 "\"finishReason\": \"%s\"}]}",
                 others[i]);
        parse(200, body, MAX_WAIT);
        CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
        CU_ASSERT_STRING_EQUAL(R.finish_reason, others[i]);
    }

    /* MAX_TOKENS, with empty text and with a truncated object. */
    parse(200,
          "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\"}], \"role\": \"model\"},"
          "\"finishReason\": \"MAX_TOKENS\"}]}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "MAX_TOKENS"));
    parse(200,
          "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"{\\\"valid\\\": tr\"}]},"
          "\"finishReason\": \"MAX_TOKENS\"}]}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    CU_ASSERT_PTR_NULL(R.text);
    /* MAX_TOKENS spent on thinking: only thought parts. */
    parse(200,
          "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"hmm\", \"thought\": true}]},"
          "\"finishReason\": \"STOP\"}]}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "empty"));

    /* Candidate without content; content without parts; empty candidates. */
    parse(200, "{\"candidates\": [{\"finishReason\": \"STOP\", \"index\": 0}]}", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "no content"));
    parse(200,
          "{\"candidates\": [{\"content\": {\"role\": \"model\"}, \"finishReason\": \"STOP\"}]}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    parse(200, "{\"candidates\": []}", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    parse(200, "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"  \\n\"}]}}]}", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    /* Wrong types everywhere. */
    parse(200, "{\"candidates\": {\"content\": 5}, \"usageMetadata\": \"x\"}", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    parse(200, "{\"candidates\": [{\"content\": {\"parts\": [1, null, {\"text\": 3}]}}]}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);

    /* Garbage 200s: HTML, empty, truncated JSON, trailing junk, a string. */
    const char *garbage[] = {"<html><body>Gateway</body></html>",
                             "",
                             "{\"candidates\": [",
                             "{\"candidates\": []} trailing",
                             "\"just a string\"",
                             "null"};
    for (size_t i = 0; i < 6; i++) {
        parse(200, garbage[i], MAX_WAIT);
        CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
        CU_ASSERT_PTR_NULL(R.text);
    }
    parse(200, NULL, MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
}

/* ------------------------------------------------------------ 429 bodies */

#define QUOTA_MINUTE                                                                               \
    "{\"@type\": \"type.googleapis.com/google.rpc.QuotaFailure\", \"violations\": [{"              \
    "\"quotaMetric\": \"generativelanguage.googleapis.com/generate_content_free_tier_requests\","  \
    "\"quotaId\": \"GenerateRequestsPerMinutePerProjectPerModel-FreeTier\","                       \
    "\"quotaDimensions\": {\"location\": \"global\", \"model\": \"gemini-2.5-flash\"},"            \
    "\"quotaValue\": \"10\"}]}"
#define HELP                                                                                       \
    "{\"@type\": \"type.googleapis.com/google.rpc.Help\", \"links\": [{\"description\": \"Learn "  \
    "more\", \"url\": \"https://ai.google.dev/gemini-api/docs/rate-limits\"}]}"
#define RETRY26 "{\"@type\": \"type.googleapis.com/google.rpc.RetryInfo\", \"retryDelay\": \"26s\"}"
#define ERR429(msg, details)                                                                       \
    "{\"error\": {\"code\": 429, \"message\": \"" msg                                              \
    "\", \"status\": \"RESOURCE_EXHAUSTED\"" details "}}"

static void test_429(void)
{
    /* Canonical order, shuffled orders, array-wrapped: all the same. */
    const char *bodies[] = {
        ERR429("You exceeded your current quota.",
               ", \"details\": [" QUOTA_MINUTE "," HELP "," RETRY26 "]"),
        ERR429("You exceeded your current quota.",
               ", \"details\": [" RETRY26 "," QUOTA_MINUTE "," HELP "]"),
        ERR429("You exceeded your current quota.",
               ", \"details\": [" HELP "," RETRY26 "," QUOTA_MINUTE "]"),
        "[" ERR429("You exceeded your current quota.",
                   ", \"details\": [" QUOTA_MINUTE "," RETRY26 "]") "]",
    };
    for (size_t i = 0; i < 4; i++) {
        parse(429, bodies[i], MAX_WAIT * 10);
        CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
        CU_ASSERT_TRUE(R.rate_limited);
        CU_ASSERT_FALSE(R.daily_quota);
        CU_ASSERT_FALSE(R.no_quota);
        CU_ASSERT_EQUAL(R.retry_after_ms, 26000);
        CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "429"));
        /* The per-minute quota's value is the real limit: 10 requests. */
        CU_ASSERT_DOUBLE_EQUAL(R.stated_per_min, 10, 1e-9);
        CU_ASSERT_FALSE(R.tokens_limited);
    }
    /* A per-minute input-token quota is a token limit. */
    parse(429,
          ERR429("x", ", \"details\": [{\"@type\": \"type.googleapis.com/google.rpc.QuotaFailure\","
                      "\"violations\": [{\"quotaId\": "
                      "\"GenerateContentInputTokensPerModelPerMinute-FreeTier\","
                      "\"quotaValue\": 250000}]}]"),
          MAX_WAIT);
    CU_ASSERT_TRUE(R.tokens_limited);
    CU_ASSERT_DOUBLE_EQUAL(R.stated_per_min, 250000, 1e-9);
    /* The same 26 s hint is longer than a 10 s max wait: fall back now. */
    parse(429, bodies[0], MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(R.rate_limited);
    CU_ASSERT_EQUAL(R.retry_after_ms, 26000);

    /* Fractional retryDelay. */
    parse(429,
          ERR429("x", ", \"details\": [{\"@type\": \"type.googleapis.com/google.rpc.RetryInfo\","
                      "\"retryDelay\": \"1.5s\"}]"),
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_EQUAL(R.retry_after_ms, 1500);

    /* No RetryInfo: the message's "Please retry in 53.01s." is the hint. */
    parse(429,
          ERR429("Quota exceeded for metric: x, limit: 10, model: gemini-2.5-flash\\n"
                 "Please retry in 53.01s.",
                 ", \"details\": [" QUOTA_MINUTE "]"),
          NO_WAIT_LIMIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_EQUAL(R.retry_after_ms, 53010);

    /* No hint at all, no details. */
    parse(429, ERR429("Resource has been exhausted (e.g. check quota).", ""), MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_EQUAL(R.retry_after_ms, -1);
    CU_ASSERT_TRUE(R.rate_limited);

    /* Daily quota: retrying today is pointless. */
    parse(429,
          ERR429("You exceeded your current quota.",
                 ", \"details\": [" RETRY26 ", {\"@type\": "
                 "\"type.googleapis.com/google.rpc.QuotaFailure\", \"violations\": [{"
                 "\"quotaId\": \"GenerateRequestsPerDayPerProjectPerModel-FreeTier\","
                 "\"quotaValue\": \"250\"}]}]"),
          MAX_WAIT * 10);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(R.daily_quota);
    CU_ASSERT_TRUE(R.rate_limited);

    /* Quota value 0: the model has no quota at all on this key. */
    parse(429,
          ERR429("Quota exceeded for metric: x, limit: 0, model: gemini-2.5-pro",
                 ", \"details\": [{\"@type\": \"type.googleapis.com/google.rpc.QuotaFailure\","
                 "\"violations\": [{\"quotaId\": "
                 "\"GenerateRequestsPerMinutePerProjectPerModel-FreeTier\","
                 "\"quotaValue\": \"0\"}]}]"),
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(R.no_quota);
    /* Only the message says so. */
    parse(429, ERR429("Quota exceeded for metric: x, limit: 0, model: gemini-2.5-pro", ""),
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(R.no_quota);
    parse(429, ERR429("Quota exceeded for metric: x, limit: 05, model: m", ""), MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);

    /* HTML and empty 429s: the status decides. */
    parse(429, "<html><title>Too Many Requests</title></html>", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_TRUE(R.rate_limited);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "not JSON"));
    parse(429, "", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "empty"));
    /* details of the wrong type are ignored. */
    parse(429, "{\"error\": {\"code\": 429, \"details\": {\"@type\": 5}}}", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    parse(429,
          "{\"error\": {\"details\": [5, null, {\"@type\": \"RetryInfo\", \"retryDelay\": 7},"
          "{\"@type\": \"x.RetryInfo\", \"retryDelay\": \"garbage\"}]}}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_EQUAL(R.retry_after_ms, -1);
}

/* ----------------------------------------------------- other error codes */

static void test_client_errors(void)
{
    parse(400,
          "{\"error\": {\"code\": 400, \"message\": \"API key not valid. Please pass a valid API "
          "key.\","
          "\"status\": \"INVALID_ARGUMENT\", \"details\": [{\"@type\": "
          "\"type.googleapis.com/google.rpc.ErrorInfo\", \"reason\": \"API_KEY_INVALID\","
          "\"domain\": \"googleapis.com\", \"metadata\": {\"service\": "
          "\"generativelanguage.googleapis.com\"}}, {\"@type\": "
          "\"type.googleapis.com/google.rpc.LocalizedMessage\", \"locale\": \"en-US\","
          "\"message\": \"API key not valid. Please pass a valid API key.\"}]}}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FATAL_CONFIG);
    CU_ASSERT_FALSE(R.rate_limited);
    /* ErrorInfo alone, message unhelpful, array-wrapped. */
    parse(
        400,
        "[{\"error\": {\"code\": 400, \"message\": \"bad\", \"status\": \"INVALID_ARGUMENT\","
        "\"details\": [{\"@type\": \"google.rpc.ErrorInfo\", \"reason\": \"API_KEY_INVALID\"}]}}]",
        MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FATAL_CONFIG);

    parse(400,
          "{\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload received. Unknown "
          "name \\\"additionalProperties\\\"\", \"status\": \"INVALID_ARGUMENT\"}}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_REQUEST);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "INVALID_ARGUMENT"));

    parse(400,
          "{\"error\": {\"code\": 400, \"message\": \"Request payload size exceeds the limit: "
          "20971520 bytes.\", \"status\": \"INVALID_ARGUMENT\"}}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(R.too_large);

    parse(400,
          "{\"error\": {\"code\": 400, \"message\": \"User location is not supported for the "
          "API use.\", \"status\": \"FAILED_PRECONDITION\"}}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FATAL_CONFIG);
    parse(400, "<html>Bad Request</html>", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_REQUEST);

    parse(401, "{\"error\": {\"code\": 401, \"status\": \"UNAUTHENTICATED\"}}", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FATAL_CONFIG);
    parse(403,
          "{\"error\": {\"code\": 403, \"message\": \"Method doesn't allow unregistered "
          "callers\", \"status\": \"PERMISSION_DENIED\"}}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FATAL_CONFIG);
    parse(404,
          "{\"error\": {\"code\": 404, \"message\": \"models/gemini-9 is not found for API "
          "version v1beta\", \"status\": \"NOT_FOUND\"}}",
          MAX_WAIT);
    /* The model is gone or misspelt: the next configured model may work. */
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_MODEL_UNAVAILABLE);
    CU_ASSERT_EQUAL(R.model_status, EV_MODEL_UNKNOWN);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "404"));
    parse(404, "", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FATAL_CONFIG);

    parse(413, "<html><h1>413 Request Entity Too Large</h1></html>", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(R.too_large);
    CU_ASSERT_FALSE(R.rate_limited);

    parse(302, "", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FATAL_CONFIG);
    parse(422, "{}", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_REQUEST);
}

static void test_server_errors(void)
{
    parse(500,
          "{\"error\": {\"code\": 500, \"message\": \"An internal error has occurred.\","
          "\"status\": \"INTERNAL\"}}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_FALSE(R.rate_limited);
    parse(503,
          "{\"error\": {\"code\": 503, \"message\": \"The model is overloaded. Please try "
          "again later.\", \"status\": \"UNAVAILABLE\"}}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_EQUAL(R.retry_after_ms, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "overloaded"));
    parse(504,
          "{\"error\": {\"code\": 504, \"message\": \"Deadline expired before operation could "
          "complete.\", \"status\": \"DEADLINE_EXCEEDED\"}}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    parse(502, "<html><head><title>502 Bad Gateway</title></head></html>", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    parse(503, "", MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    parse(503, NULL, MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    /* A 503 asking for longer than allowed falls back. */
    parse(503,
          "{\"error\": {\"code\": 503, \"details\": [{\"@type\": "
          "\"type.googleapis.com/google.rpc.RetryInfo\", \"retryDelay\": \"30s\"}]}}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_EQUAL(R.retry_after_ms, 30000);
}

static void test_error_string_is_short_and_clean(void)
{
    char body[8192];
    int n =
        snprintf(body, sizeof(body), "{\"error\": {\"code\": 500, \"message\": \"line1\\nline2\\t");
    memset(body + n, 'x', 6000);
    snprintf(body + n + 6000, sizeof(body) - (size_t)n - 6000, "\", \"status\": \"INTERNAL\"}}");
    parse(500, body, MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT(strlen(R.error) < EV_LLM_ERROR_MAX);
    CU_ASSERT_PTR_NULL(strchr(R.error, '\n'));
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "line1 line2"));

    /* A server echoing the key never gets it into the result. */
    ev_secret_t *key = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_secret_new(&key, KEY), 0);
    parse(400, "{\"error\": {\"code\": 400, \"message\": \"API key not valid: " KEY "\"}}",
          MAX_WAIT);
    CU_ASSERT_TRUE(ev_secret_appears_in(key, R.error, strlen(R.error)));
    CU_ASSERT(ev_llm_result_scrub(&R, key) >= 1);
    CU_ASSERT_FALSE(ev_secret_appears_in(key, R.error, strlen(R.error)));
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FATAL_CONFIG);
    ev_secret_free(key);

    /* A toy key as short as "sim" occurs in ordinary words: scrubbing on it
     * would withhold every answer, so it is not matched. */
    CU_ASSERT_EQUAL_FATAL(ev_secret_new(&key, "sim"), 0);
    parse(200,
          "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"{\\\"valid\\\": true, "
          "\\\"score\\\": 1, \\\"reason\\\": \\\"similar to the theme\\\"}\"}]}, "
          "\"finishReason\": \"STOP\"}]}",
          MAX_WAIT);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_OK);
    CU_ASSERT_EQUAL(ev_llm_result_scrub(&R, key), 0);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_OK);
    CU_ASSERT_PTR_NOT_NULL(R.text);
    ev_secret_free(key);
}

static int init_suite(void)
{
    ev_llm_result_init(&R);
    return 0;
}

static int clean_suite(void)
{
    ev_llm_result_free(&R);
    return 0;
}

static const ev_test_t gemini_tests[] = {
    {"request body shape", test_body_shape},
    {"request options and refusals", test_body_options},
    {"media base64 round trip, every size mod 3, 1-4 parts", test_body_media_round_trip},
    {"URL and client", test_url_and_client},
    {"200 with an answer", test_ok_answer},
    {"200 without a usable answer", test_200_without_answer},
    {"429 variants", test_429},
    {"4xx", test_client_errors},
    {"5xx", test_server_errors},
    {"error strings", test_error_string_is_short_and_clean},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"gemini", init_suite, clean_suite, gemini_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
