/*
 * test_groq_parse.c - the Groq client builds the OpenAI-compatible request of
 * PROVIDERS.md (json word, vision model iff images, never a PDF), enforces
 * Groq's vision limits without any HTTP, and classifies every status and
 * body listed there from canned responses.
 */
#include "ev/error.h"
#include "ev/groq.h"
#include "ev/secret.h"

#include <CUnit/Basic.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

#define KEY "fake-groq-secretKey0123456789abcdefghijkl"
#define MAX_WAIT 10000
#define TEXT_MODEL "llama-3.3-70b-versatile"
#define VISION_MODEL "meta-llama/llama-4-scout-17b-16e-instruct"

static ev_llm_result_t R;
static ev_secret_t *key;
static ev_groq_t *client;

/* Classifies (status, body, headers as name/value pairs, NULL-ended). */
static void parse(int status, const char *body, int64_t max_wait, ...)
{
    ev_http_response_t resp;
    ev_http_response_init(&resp);
    resp.status = status;
    if (body) {
        resp.body = strdup(body);
        resp.body_len = strlen(body);
    }
    va_list ap;
    va_start(ap, max_wait);
    for (;;) {
        const char *n = va_arg(ap, const char *);
        if (!n)
            break;
        const char *v = va_arg(ap, const char *);
        ev_http_response_add_header(&resp, n, strlen(n), v, strlen(v));
    }
    va_end(ap);
    ev_llm_result_free(&R);
    ev_groq_parse_response(&R, &resp, max_wait);
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

/* ------------------------------------------------------------ request */

static const unsigned char png[] = "\x89PNG\r\n\x1a\n\xff\xff\xfe-image-bytes";
static const unsigned char jpg[] = "\xff\xd8\xff\xe0-jpeg-bytes";
static const unsigned char pdf[] = "%PDF-1.7 bytes";

static void test_text_request(void)
{
    ev_llm_request_t req = {.system_prompt = "You check that submissions fit the event's theme.",
                            .user_text = "Title: Robots",
                            .pdf_text = "Page 1: robots everywhere.",
                            .max_output_tokens = 300};
    CU_ASSERT_STRING_EQUAL(ev_groq_model_for(client, &req), TEXT_MODEL);
    char *body = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(ev_groq_build_body(&body, &len, &req, ev_groq_model_for(client, &req)),
                          0);
    CU_ASSERT_EQUAL(len, strlen(body));
    json_object *root = json_tokener_parse(body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    CU_ASSERT_EQUAL(json_object_object_length(root), 5);
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "model"), TEXT_MODEL);
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "messages.0.role"), "system");
    const char *sys = jpath_str(root, "messages.0.content");
    CU_ASSERT_PTR_NOT_NULL_FATAL(sys);
    CU_ASSERT_PTR_NOT_NULL(strstr(sys, "You check that submissions fit"));
    CU_ASSERT_PTR_NOT_NULL(strstr(sys, "json")); /* json_object mode needs the word */
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "messages.1.role"), "user");
    /* Text models get a plain string. */
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "messages.1.content"),
                           "Title: Robots\n\nPage 1: robots everywhere.");
    CU_ASSERT_EQUAL(json_object_array_length(jpath(root, "messages")), 2);
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "response_format.type"), "json_object");
    CU_ASSERT_TRUE(json_object_is_type(jpath(root, "temperature"), json_type_int));
    CU_ASSERT_EQUAL(json_object_get_int(jpath(root, "temperature")), 0);
    CU_ASSERT_EQUAL(json_object_get_int(jpath(root, "max_completion_tokens")), 300);
    json_object_put(root);
    free(body);

    /* A system prompt that already says json is sent unchanged; none at all
     * gets the verdict instruction. */
    req.system_prompt = "Answer in json.";
    CU_ASSERT_EQUAL_FATAL(ev_groq_build_body(&body, NULL, &req, TEXT_MODEL), 0);
    root = json_tokener_parse(body);
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "messages.0.content"), "Answer in json.");
    json_object_put(root);
    free(body);
    req.system_prompt = NULL;
    req.max_output_tokens = 0;
    CU_ASSERT_EQUAL_FATAL(ev_groq_build_body(&body, NULL, &req, TEXT_MODEL), 0);
    root = json_tokener_parse(body);
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "messages.0.content"), ev_llm_verdict_instruction());
    CU_ASSERT_EQUAL(json_object_get_int(jpath(root, "max_completion_tokens")),
                    EV_LLM_DEFAULT_MAX_OUTPUT_TOKENS);
    json_object_put(root);
    free(body);
}

static void test_vision_request(void)
{
    ev_llm_media_t media[2] = {{"image/png", png, sizeof(png) - 1},
                               {"image/jpeg", jpg, sizeof(jpg) - 1}};
    ev_llm_request_t req = {.system_prompt = "Judge the images. Reply as JSON.",
                            .user_text = "Are these real photos of the event?",
                            .media = media,
                            .media_count = 2};
    CU_ASSERT_STRING_EQUAL(ev_groq_model_for(client, &req), VISION_MODEL);
    char *body = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_groq_build_body(&body, NULL, &req, ev_groq_model_for(client, &req)),
                          0);
    json_object *root = json_tokener_parse(body);
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "model"), VISION_MODEL);
    /* "JSON" in capitals is not enough for Groq: lower-case json is added. */
    CU_ASSERT_PTR_NOT_NULL(strstr(jpath_str(root, "messages.0.content"), "json"));
    json_object *content = jpath(root, "messages.1.content");
    CU_ASSERT_TRUE_FATAL(json_object_is_type(content, json_type_array));
    CU_ASSERT_EQUAL_FATAL(json_object_array_length(content), 3);
    CU_ASSERT_STRING_EQUAL(jpath_str(content, "0.type"), "text");
    CU_ASSERT_STRING_EQUAL(jpath_str(content, "0.text"), "Are these real photos of the event?");
    CU_ASSERT_STRING_EQUAL(jpath_str(content, "1.type"), "image_url");
    char *b64 = ev_llm_base64(png, sizeof(png) - 1, NULL);
    char expect[256];
    snprintf(expect, sizeof(expect), "data:image/png;base64,%s", b64);
    CU_ASSERT_STRING_EQUAL(jpath_str(content, "1.image_url.url"), expect);
    free(b64);
    CU_ASSERT_PTR_NULL(strstr(body, "\\/"));
    CU_ASSERT_STRING_EQUAL(jpath_str(content, "2.type"), "image_url");
    CU_ASSERT_EQUAL(strncmp(jpath_str(content, "2.image_url.url"), "data:image/jpeg;base64,", 23),
                    0);
    json_object_put(root);
    free(body);

    /* text_only: the images are ignored and the text model is used. */
    req.text_only = true;
    CU_ASSERT_STRING_EQUAL(ev_groq_model_for(client, &req), TEXT_MODEL);
    CU_ASSERT_EQUAL_FATAL(ev_groq_build_body(&body, NULL, &req, TEXT_MODEL), 0);
    CU_ASSERT_PTR_NULL(strstr(body, "image_url"));
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

/* The images' base64 is written straight into the body (not through
 * json-c): the body must still parse as JSON, keep the PROVIDERS.md shape,
 * and each data URL must give back exactly the file bytes, whatever their
 * size and however many images. A MIME type is escaped like any string. */
static void test_image_round_trip(void)
{
    static const char *const mimes[] = {"image/png", "image/jpeg", "image/x\"odd\\type",
                                        "image/webp"};
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
            bool with_text = k % 2 == 0;
            ev_llm_request_t req = {.system_prompt = "Reply in json: \"a\" \\ / \u00e9\n\x01.",
                                    .user_text = with_text ? "Real \"photos\"?\t\u4e2d" : NULL,
                                    .media = media,
                                    .media_count = count};
            char *body = NULL;
            size_t len = 0;
            CU_ASSERT_EQUAL_FATAL(ev_groq_build_body(&body, &len, &req, VISION_MODEL), 0);
            CU_ASSERT_EQUAL(len, strlen(body));
            json_object *root = ev_llm_json_parse(body, len);
            CU_ASSERT_PTR_NOT_NULL_FATAL(root);
            CU_ASSERT_TRUE(same_as_json_c(root, body, len));
            CU_ASSERT_STRING_EQUAL(jpath_str(root, "model"), VISION_MODEL);
            CU_ASSERT_STRING_EQUAL(jpath_str(root, "messages.0.content"), req.system_prompt);
            json_object *content = jpath(root, "messages.1.content");
            size_t first = with_text ? 1 : 0;
            CU_ASSERT_EQUAL_FATAL(json_object_array_length(content), first + count);
            if (with_text)
                CU_ASSERT_STRING_EQUAL(jpath_str(content, "0.text"), req.user_text);
            for (size_t j = 0; j < count; j++) {
                char path[64], prefix[64];
                snprintf(path, sizeof(path), "%zu.type", first + j);
                CU_ASSERT_STRING_EQUAL(jpath_str(content, path), "image_url");
                snprintf(path, sizeof(path), "%zu.image_url.url", first + j);
                const char *url = jpath_str(content, path);
                CU_ASSERT_PTR_NOT_NULL_FATAL(url);
                int plen = snprintf(prefix, sizeof(prefix), "data:%s;base64,", mimes[j]);
                CU_ASSERT_EQUAL_FATAL(strncmp(url, prefix, (size_t)plen), 0);
                size_t n = 0;
                unsigned char *back = b64_decode(url + plen, &n);
                CU_ASSERT_PTR_NOT_NULL_FATAL(back);
                CU_ASSERT_EQUAL(n, media[j].len);
                CU_ASSERT_TRUE(n == media[j].len && memcmp(back, media[j].bytes, n) == 0);
                free(back);
            }
            CU_ASSERT_EQUAL(json_object_get_int(jpath(root, "max_completion_tokens")),
                            EV_LLM_DEFAULT_MAX_OUTPUT_TOKENS);
            json_object_put(root);
            free(body);
        }
    }
    for (size_t k = 0; k < N_SIZES; k++)
        free(files[k]);

    /* Text only: the content is a plain string, still canonical JSON. */
    ev_llm_request_t text = {.user_text = "Just \"text\"", .max_output_tokens = 77};
    char *body = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(ev_groq_build_body(&body, &len, &text, TEXT_MODEL), 0);
    json_object *root = ev_llm_json_parse(body, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    CU_ASSERT_TRUE(same_as_json_c(root, body, len));
    CU_ASSERT_STRING_EQUAL(jpath_str(root, "messages.1.content"), "Just \"text\"");
    CU_ASSERT_EQUAL(json_object_get_int(jpath(root, "max_completion_tokens")), 77);
    json_object_put(root);
    free(body);

    /* A size whose base64 cannot be counted in a size_t is refused before
     * any byte is read (the pointer is to 4 bytes on purpose). */
    ev_llm_media_t huge = {"image/png", (const unsigned char *)"abcd", SIZE_MAX / 4 * 3};
    ev_llm_request_t too_big = {.user_text = "x", .media = &huge, .media_count = 1};
    CU_ASSERT_EQUAL(ev_groq_build_body(&body, &len, &too_big, VISION_MODEL), EV_ETOOBIG);
    CU_ASSERT_PTR_NULL(body);
    CU_ASSERT_EQUAL(len, 0);
}

static void test_never_a_pdf(void)
{
    ev_llm_media_t media[2] = {{"image/png", png, sizeof(png) - 1},
                               {"application/pdf", pdf, sizeof(pdf) - 1}};
    ev_llm_request_t req = {.user_text = "Check the PDF.", .media = media, .media_count = 2};
    char *body = NULL;
    CU_ASSERT_EQUAL(ev_groq_build_body(&body, NULL, &req, VISION_MODEL), EV_EINVAL);
    CU_ASSERT_PTR_NULL(body);
    /* The call refuses before any HTTP: http is NULL on purpose. */
    ev_llm_result_t r;
    CU_ASSERT_EQUAL(ev_groq_call(client, NULL, &req, &r, NULL), EV_EINVAL);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_BAD_REQUEST);
    CU_ASSERT_FALSE(r.http_attempted);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error, "PDF"));
    ev_llm_result_free(&r);
    /* Other non-image media too. */
    ev_llm_media_t txt = {"text/plain", pdf, 3};
    req.media = &txt;
    req.media_count = 1;
    CU_ASSERT_EQUAL(ev_groq_call(client, NULL, &req, &r, NULL), EV_EINVAL);
    CU_ASSERT_FALSE(r.http_attempted);
    ev_llm_result_free(&r);
    /* No text and no image. */
    ev_llm_request_t empty = {.system_prompt = "json"};
    CU_ASSERT_EQUAL(ev_groq_call(client, NULL, &empty, &r, NULL), EV_EINVAL);
    ev_llm_result_free(&r);
}

static void test_limits_without_http(void)
{
    ev_llm_media_t six[6];
    for (int i = 0; i < 6; i++)
        six[i] = (ev_llm_media_t){"image/png", png, sizeof(png) - 1};
    ev_llm_request_t req = {.user_text = "judge", .media = six, .media_count = 6};
    ev_llm_result_t r;
    CU_ASSERT_EQUAL(ev_groq_call(client, NULL, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(r.too_large);
    CU_ASSERT_FALSE(r.http_attempted);
    CU_ASSERT_STRING_EQUAL(r.model, VISION_MODEL);
    ev_llm_result_free(&r);

    /* Five images are fine (the call then stops at the missing handle). */
    req.media_count = 5;
    CU_ASSERT_EQUAL(ev_groq_call(client, NULL, &req, &r, NULL), EV_EINVAL);
    CU_ASSERT_FALSE(r.too_large);
    ev_llm_result_free(&r);

    /* 3.2 MB of image is 4.27 MB of base64: over Groq's 4 MB. */
    size_t n = 3200 * 1000;
    unsigned char *big = calloc(1, n);
    ev_llm_media_t one = {"image/jpeg", big, n};
    req.media = &one;
    req.media_count = 1;
    CU_ASSERT_EQUAL(ev_groq_call(client, NULL, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(r.too_large);
    CU_ASSERT_FALSE(r.http_attempted);
    ev_llm_result_free(&r);
    /* 2.9 MB (3.87 MB base64) fits. */
    one.len = 2900 * 1000;
    CU_ASSERT_EQUAL(ev_groq_call(client, NULL, &req, &r, NULL), EV_EINVAL);
    CU_ASSERT_FALSE(r.too_large);
    ev_llm_result_free(&r);
    free(big);

    /* The 4 MB limit is a vision limit: 5 MB of PDF text is Groq's to judge
     * (by tokens), so the call goes on to the missing handle. */
    char *text = malloc(5 * 1000 * 1000 + 1);
    memset(text, 'w', 5 * 1000 * 1000);
    text[5 * 1000 * 1000] = '\0';
    ev_llm_request_t long_text = {.user_text = "judge", .pdf_text = text};
    CU_ASSERT_EQUAL(ev_groq_call(client, NULL, &long_text, &r, NULL), EV_EINVAL);
    CU_ASSERT_FALSE(r.too_large);
    CU_ASSERT_STRING_EQUAL(r.model, TEXT_MODEL);
    ev_llm_result_free(&r);
    free(text);
}

static void test_url_and_config(void)
{
    const char *url = ev_groq_url(client);
    CU_ASSERT_STRING_EQUAL(url, "http://127.0.0.1:1/openai/v1/chat/completions");
    CU_ASSERT_FALSE(ev_secret_appears_in(key, url, strlen(url)));
    char *u = ev_groq_build_url("https://api.groq.com/openai/v1/");
    CU_ASSERT_STRING_EQUAL(u, "https://api.groq.com/openai/v1/chat/completions");
    free(u);
    ev_provider_config_t cfg = {
        .id = EV_PROVIDER_GROQ, .model = TEXT_MODEL, .base_url = "http://x"};
    ev_groq_t *g = NULL;
    CU_ASSERT_EQUAL(ev_groq_new(&g, &cfg, NULL), EV_ECONFIG); /* no key */
    CU_ASSERT_PTR_NULL(g);
    cfg.api_key = key;
    CU_ASSERT_EQUAL_FATAL(ev_groq_new(&g, &cfg, NULL), 0);
    /* No vision model configured: the text model serves images too. */
    ev_llm_media_t m = {"image/png", png, 4};
    ev_llm_request_t req = {.user_text = "x", .media = &m, .media_count = 1};
    CU_ASSERT_STRING_EQUAL(ev_groq_model_for(g, &req), TEXT_MODEL);
    ev_groq_free(g);
}

/* ----------------------------------------------------------- responses */

static void test_ok(void)
{
    parse(
        200,
        "{\"id\": \"chatcmpl-1\", \"object\": \"chat.completion\", \"created\": 1, \"model\": "
        "\"" VISION_MODEL "\", \"choices\": [{\"index\": 0, \"message\": {\"role\": "
        "\"assistant\", \"content\": \"{\\\"valid\\\": false, \\\"score\\\": 0.2, \\\"reason\\\": "
        "\\\"off-topic\\\"}\"}, \"logprobs\": null, \"finish_reason\": \"stop\"}], \"usage\": "
        "{\"prompt_tokens\": 812, \"completion_tokens\": 31, \"total_tokens\": 843}, "
        "\"x_groq\": {\"id\": \"req_01abc\"}}",
        MAX_WAIT, "x-ratelimit-limit-requests", "1000", "x-ratelimit-remaining-requests", "998",
        "x-ratelimit-limit-tokens", "30000", "x-ratelimit-remaining-tokens", "29157",
        "x-ratelimit-reset-requests", "2m52.8s", "x-ratelimit-reset-tokens", "1.686s", NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_OK);
    CU_ASSERT_STRING_EQUAL(R.text, "{\"valid\": false, \"score\": 0.2, \"reason\": \"off-topic\"}");
    CU_ASSERT_STRING_EQUAL(R.finish_reason, "stop");
    CU_ASSERT_EQUAL(R.tokens_in, 812);
    CU_ASSERT_EQUAL(R.tokens_out, 31);
    CU_ASSERT_STRING_EQUAL(R.request_id, "req_01abc");
    CU_ASSERT_EQUAL(R.ratelimit.limit_requests, 1000);
    CU_ASSERT_EQUAL(R.ratelimit.remaining_requests, 998);
    CU_ASSERT_EQUAL(R.ratelimit.limit_tokens, 30000);
    CU_ASSERT_EQUAL(R.ratelimit.remaining_tokens, 29157);
    CU_ASSERT_EQUAL(R.ratelimit.reset_requests_ms, 172800);
    CU_ASSERT_EQUAL(R.ratelimit.reset_tokens_ms, 1686);
    CU_ASSERT_EQUAL(R.retry_after_ms, -1);
    CU_ASSERT_STRING_EQUAL(R.error, "");

    /* Missing or broken headers are "unknown", not zero. */
    parse(200, "{\"choices\": [{\"message\": {\"content\": \"{}\"}, \"finish_reason\": \"stop\"}]}",
          MAX_WAIT, "x-ratelimit-remaining-tokens", "lots", "x-ratelimit-reset-tokens", "soon",
          NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_OK);
    CU_ASSERT_EQUAL(R.ratelimit.remaining_tokens, -1);
    CU_ASSERT_EQUAL(R.ratelimit.reset_tokens_ms, -1);
    CU_ASSERT_EQUAL(R.ratelimit.limit_requests, -1);
    CU_ASSERT_PTR_NULL(R.request_id);
}

static void test_200_without_answer(void)
{
    parse(200,
          "{\"choices\": [{\"message\": {\"content\": \"{\\\"valid\\\": true, \\\"sco\"}, "
          "\"finish_reason\": \"length\"}], \"usage\": {\"completion_tokens\": 1024}}",
          MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    CU_ASSERT_STRING_EQUAL(R.finish_reason, "length");
    CU_ASSERT_PTR_NULL(R.text);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "truncated"));
    CU_ASSERT_EQUAL(R.tokens_out, 1024);

    parse(200,
          "{\"choices\": [{\"message\": {\"content\": \"x\"}, \"finish_reason\": "
          "\"content_filter\"}]}",
          MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    parse(200, "{\"choices\": [{\"message\": {\"content\": \"\"}, \"finish_reason\": \"stop\"}]}",
          MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "empty"));
    parse(200, "{\"choices\": [{\"message\": {\"content\": null}, \"finish_reason\": \"stop\"}]}",
          MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    parse(200, "{\"choices\": []}", MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    parse(200, "{\"choices\": [{\"message\": 5}]}", MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    const char *garbage[] = {"", "<html>ok</html>", "{\"choices\": [", "[1, 2]", "42"};
    for (size_t i = 0; i < 5; i++) {
        parse(200, garbage[i], MAX_WAIT, NULL);
        CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
        CU_ASSERT_PTR_NULL(R.text);
    }
}

#define RPM_429                                                                                    \
    "{\"error\": {\"message\": \"Rate limit reached for model `" VISION_MODEL "` in organization " \
    "`org_x` service tier `on_demand` on requests per minute (RPM): Limit 30, Used 30, Requested " \
    "1. Please try again in 2.5s. Need more tokens? Upgrade to Dev Tier today at "                 \
    "https://console.groq.com/settings/billing\", \"type\": \"requests\", \"code\": "              \
    "\"rate_limit_exceeded\"}}"

static void test_429(void)
{
    parse(429, RPM_429, MAX_WAIT, "retry-after", "2.5", "x-ratelimit-remaining-requests", "700",
          NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_TRUE(R.rate_limited);
    CU_ASSERT_FALSE(R.daily_quota);
    CU_ASSERT_EQUAL(R.retry_after_ms, 2500);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "429"));
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "rate_limit_exceeded"));
    /* The message states the per-minute limit. */
    CU_ASSERT_DOUBLE_EQUAL(R.stated_per_min, 30, 1e-9);
    CU_ASSERT_FALSE(R.tokens_limited);
    /* Tokens per minute: Groq's TPM 429. */
    parse(429,
          "{\"error\": {\"message\": \"Rate limit reached for model `x` in organization `org_x` "
          "service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used 5521, Requested "
          "1195. Please try again in 7.16s. Need more tokens?\", \"type\": \"tokens\", "
          "\"code\": \"rate_limit_exceeded\"}}",
          MAX_WAIT, "retry-after", "8", NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_TRUE(R.tokens_limited);
    CU_ASSERT_DOUBLE_EQUAL(R.stated_per_min, 6000, 1e-9);

    /* The header wins over the message. */
    parse(429, RPM_429, MAX_WAIT, "retry-after", "3", NULL);
    CU_ASSERT_EQUAL(R.retry_after_ms, 3000);
    /* No header: the message is the hint. */
    parse(429, RPM_429, MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_EQUAL(R.retry_after_ms, 2500);
    /* An HTTP-date header is no hint; the message still is. */
    parse(429, RPM_429, MAX_WAIT, "retry-after", "Wed, 21 Oct 2015 07:28:00 GMT", NULL);
    CU_ASSERT_EQUAL(R.retry_after_ms, 2500);
    /* Nothing at all. */
    parse(429, "", MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
    CU_ASSERT_EQUAL(R.retry_after_ms, -1);
    CU_ASSERT_TRUE(R.rate_limited);

    /* Longer than the allowed wait: fall back at once. */
    parse(429, RPM_429, MAX_WAIT, "retry-after", "45", NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_EQUAL(R.retry_after_ms, 45000);
    CU_ASSERT_TRUE(R.rate_limited);

    /* Daily quotas: by message or by the per-day request counter. */
    parse(429,
          "{\"error\": {\"message\": \"Rate limit reached for model `x` on tokens per day "
          "(TPD): Limit 500000, Used 499000, Requested 2000. Please try again in 2m59.56s.\","
          "\"type\": \"tokens\", \"code\": \"rate_limit_exceeded\"}}",
          0, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(R.daily_quota);
    CU_ASSERT_EQUAL(R.retry_after_ms, 179560);
    parse(429, RPM_429, 0, "retry-after", "1", "x-ratelimit-remaining-requests", "0", NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(R.daily_quota);
}

static void test_other_statuses(void)
{
    /* 413 "Request too large" looks like a rate limit but never succeeds. */
    parse(413,
          "{\"error\": {\"message\": \"Request too large for model `x` in organization `o` on "
          "tokens per minute (TPM): Limit 6000, Requested 9000, please reduce your message "
          "size and try again.\", \"type\": \"tokens\", \"code\": \"rate_limit_exceeded\"}}",
          MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(R.too_large);
    CU_ASSERT_FALSE(R.rate_limited);
    parse(413, "<html>413</html>", MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(R.too_large);

    parse(400,
          "{\"error\": {\"message\": \"Failed to generate JSON. Please adjust your prompt.\","
          "\"type\": \"invalid_request_error\", \"code\": \"json_validate_failed\","
          "\"failed_generation\": \"{\\\"valid\\\": tru\"}}",
          MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_ANSWER);
    CU_ASSERT_PTR_NOT_NULL(strstr(R.error, "json_validate_failed"));
    parse(400,
          "{\"error\": {\"message\": \"'messages' must contain the word 'json' in some form\","
          "\"type\": \"invalid_request_error\"}}",
          MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_REQUEST);
    parse(400,
          "{\"error\": {\"message\": \"Please reduce the length of the messages or "
          "completion.\", \"type\": \"invalid_request_error\", \"code\": "
          "\"context_length_exceeded\"}}",
          MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(R.too_large);

    parse(401,
          "{\"error\": {\"message\": \"Invalid API Key\", \"type\": \"invalid_request_error\","
          "\"code\": \"invalid_api_key\"}}",
          MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FATAL_CONFIG);
    parse(403, "{\"error\": {\"message\": \"Forbidden\"}}", MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FATAL_CONFIG);
    parse(404,
          "{\"error\": {\"message\": \"The model `nope` does not exist or you do not have "
          "access to it.\", \"type\": \"invalid_request_error\", \"code\": "
          "\"model_not_found\"}}",
          MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_MODEL_UNAVAILABLE);
    CU_ASSERT_EQUAL(R.model_status, EV_MODEL_UNKNOWN);

    int retryable[] = {498, 500, 502, 503, 504};
    for (size_t i = 0; i < 5; i++) {
        parse(retryable[i],
              "{\"error\": {\"message\": \"Service Unavailable\", \"type\": "
              "\"internal_server_error\"}}",
              MAX_WAIT, NULL);
        CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
        CU_ASSERT_FALSE(R.rate_limited);
        parse(retryable[i], "<html>bad gateway</html>", MAX_WAIT, NULL);
        CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
        parse(retryable[i], NULL, MAX_WAIT, NULL);
        CU_ASSERT_EQUAL(R.outcome, EV_LLM_RETRY);
        CU_ASSERT_EQUAL(R.http_status, retryable[i]);
    }
    parse(422, "{}", MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_BAD_REQUEST);
    parse(301, "", MAX_WAIT, NULL);
    CU_ASSERT_EQUAL(R.outcome, EV_LLM_FATAL_CONFIG);
}

static int init_suite(void)
{
    ev_llm_result_init(&R);
    if (ev_secret_new(&key, KEY) != 0)
        return 1;
    ev_provider_config_t cfg = {.id = EV_PROVIDER_GROQ,
                                .api_key = key,
                                .model = TEXT_MODEL,
                                .vision_model = VISION_MODEL,
                                .base_url = "http://127.0.0.1:1/openai/v1",
                                .thinking_budget = -1};
    return ev_groq_new(&client, &cfg, NULL) != 0;
}

static int clean_suite(void)
{
    ev_llm_result_free(&R);
    ev_groq_free(client);
    ev_secret_free(key);
    return 0;
}

static const ev_test_t groq_tests[] = {
    {"text request", test_text_request},
    {"vision request", test_vision_request},
    {"image base64 round trip, every size mod 3, 1-4 images", test_image_round_trip},
    {"never a PDF", test_never_a_pdf},
    {"limits enforced without HTTP", test_limits_without_http},
    {"URL and config", test_url_and_config},
    {"200 with an answer", test_ok},
    {"200 without a usable answer", test_200_without_answer},
    {"429 variants", test_429},
    {"other statuses", test_other_statuses},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"groq", init_suite, clean_suite, groq_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
