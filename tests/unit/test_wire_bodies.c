/*
 * test_wire_bodies.c - real recorded provider answers through the parsers.
 *
 * ../shared/wire-bodies/ (beside the repository, read at run time, never
 * copied in) holds HTTP answers recorded from the real Gemini and Groq APIs:
 * status, headers and body. Every file is replayed through the provider's
 * classifier and checked against what a user of the service must see: the
 * outcome, the retry delay, daily versus per-minute quota, the tokens billed.
 * A file without an expectation here fails the test, so a new recording
 * cannot go unnoticed. A second suite replays the answers quoted in our
 * provider notes that the recordings lack (thinking-budget refusals, Groq's
 * 429 "Request too large", retired models).
 */
#include "ev/error.h"
#include "ev/gemini.h"
#include "ev/groq.h"
#include "ev/verdict.h"

#include <CUnit/Basic.h>
#include <dirent.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

#define MAX_WAIT 10000

typedef struct expect {
    const char *file;
    ev_llm_outcome_t outcome;
    int64_t tokens_in, tokens_out;
    const char *finish;     /* expected finish/block reason, or NULL for none */
    const char *request_id; /* prefix, or NULL */
    bool verdict_ok;        /* an OK text parses as our verdict */
    ev_model_status_t model_status;
} expect_t;

static const expect_t expected[] = {
    {"g01-stop-thoughts.json", EV_LLM_OK, 15, 283, "STOP", "1Fpe", false, EV_MODEL_AVAILABLE},
    {"g02-stop-json-nothoughts.json", EV_LLM_OK, 8, 20, "STOP", "Efsg", false, EV_MODEL_AVAILABLE},
    {"g03-max-tokens-partial.json", EV_LLM_BAD_ANSWER, 15, 5, "MAX_TOKENS", NULL, false,
     EV_MODEL_AVAILABLE},
    {"g04-max-tokens-no-parts.json", EV_LLM_BAD_ANSWER, 15, 2, "MAX_TOKENS", NULL, false,
     EV_MODEL_AVAILABLE},
    {"g05-safety-empty-content.json", EV_LLM_BAD_ANSWER, 14, 0, "SAFETY", NULL, false,
     EV_MODEL_AVAILABLE},
    {"g06-stop-thoughtsig-gemini3.json", EV_LLM_OK, 2, 222, "STOP", NULL, false,
     EV_MODEL_AVAILABLE},
    {"g07-stop-long-thoughts.json", EV_LLM_OK, 10, 818, "STOP", NULL, false, EV_MODEL_AVAILABLE},
    {"g08-promptfeedback-block.json", EV_LLM_BAD_ANSWER, 0, 0, "MODEL_ARMOR", NULL, false,
     EV_MODEL_AVAILABLE},
    /* The recording's note says "fatal_config": for the provider, yes, but
     * it is the model that is unknown, and the next configured model works. */
    {"g09-404-model.json", EV_LLM_MODEL_UNAVAILABLE, 0, 0, NULL, NULL, false, EV_MODEL_UNKNOWN},
    {"q01-200-json-gptoss.json", EV_LLM_OK, 178, 94, "stop", "req_", false, EV_MODEL_AVAILABLE},
    /* Prose, not JSON: fine for the client, refused by the verdict parser. */
    {"q02-200-vision-scout.json", EV_LLM_OK, 2344, 55, "stop", "req_", false, EV_MODEL_AVAILABLE},
    {"q03-400-tool-use-failed.json", EV_LLM_BAD_REQUEST, 0, 0, NULL, NULL, false,
     EV_MODEL_AVAILABLE},
    {"q04-404-model-not-found.json", EV_LLM_MODEL_UNAVAILABLE, 0, 0, NULL, NULL, false,
     EV_MODEL_UNKNOWN},
};

static char dir[PATH_MAX];

static const expect_t *expectation(const char *file)
{
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
        if (strcmp(expected[i].file, file) == 0)
            return &expected[i];
    return NULL;
}

/* The recorded headers: a value is a string or a list of strings. */
static void add_headers(ev_http_response_t *resp, json_object *headers)
{
    json_object_object_foreach(headers, name, v)
    {
        if (json_object_is_type(v, json_type_array)) {
            for (size_t i = 0; i < json_object_array_length(v); i++) {
                const char *s = json_object_get_string(json_object_array_get_idx(v, i));
                ev_http_response_add_header(resp, name, strlen(name), s, strlen(s));
            }
        } else {
            const char *s = json_object_get_string(v);
            ev_http_response_add_header(resp, name, strlen(name), s, strlen(s));
        }
    }
}

/* Loads one recording into resp; returns its provider ("gemini"/"groq") or
 * NULL. The caller releases *doc. */
static const char *load(const char *file, ev_http_response_t *resp, json_object **doc)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    *doc = json_object_from_file(path);
    ev_http_response_init(resp);
    if (!*doc)
        return NULL;
    json_object *status = NULL, *body = NULL, *headers = NULL, *provider = NULL;
    json_object_object_get_ex(*doc, "status", &status);
    json_object_object_get_ex(*doc, "body", &body);
    json_object_object_get_ex(*doc, "headers", &headers);
    json_object_object_get_ex(*doc, "provider", &provider);
    resp->status = json_object_get_int(status);
    const char *text = json_object_is_type(body, json_type_string)
                           ? json_object_get_string(body)
                           : json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
    resp->body = strdup(text);
    resp->body_len = strlen(text);
    if (headers && json_object_is_type(headers, json_type_object))
        add_headers(resp, headers);
    return provider ? json_object_get_string(provider) : NULL;
}

static void check_one(const char *file, const expect_t *x)
{
    ev_http_response_t resp;
    json_object *doc = NULL;
    const char *provider = load(file, &resp, &doc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(provider);
    ev_llm_result_t r;
    ev_llm_result_init(&r);
    if (strcmp(provider, "gemini") == 0)
        ev_gemini_parse_response(&r, &resp, MAX_WAIT);
    else
        ev_groq_parse_response(&r, &resp, MAX_WAIT);

    bool ok = r.outcome == x->outcome && r.tokens_in == x->tokens_in &&
              r.tokens_out == x->tokens_out && r.model_status == x->model_status;
    ok = ok && (x->finish ? r.finish_reason && strcmp(r.finish_reason, x->finish) == 0
                          : r.finish_reason == NULL);
    ok = ok && (!x->request_id ||
                (r.request_id && strncmp(r.request_id, x->request_id, strlen(x->request_id)) == 0));
    /* None of these is a rate limit: no delay, no quota flags. */
    ok = ok && r.retry_after_ms == -1 && !r.daily_quota && !r.rate_limited && !r.no_quota;
    if (r.outcome == EV_LLM_OK) {
        ev_verdict_t v;
        char why[160];
        bool parsed = ev_verdict_parse(&v, r.text, strlen(r.text), why, sizeof(why)) == 0;
        ok = ok && parsed == x->verdict_ok && r.error[0] == '\0';
    } else {
        ok = ok && r.text == NULL && r.error[0] != '\0';
    }
    if (!ok)
        fprintf(stderr,
                "\n  %s: outcome %s (want %s), tokens %lld/%lld (want %lld/%lld), finish %s, "
                "model %s, retry %lld, error \"%s\"\n",
                file, ev_llm_outcome_name(r.outcome), ev_llm_outcome_name(x->outcome),
                (long long)r.tokens_in, (long long)r.tokens_out, (long long)x->tokens_in,
                (long long)x->tokens_out, r.finish_reason ? r.finish_reason : "(none)",
                ev_model_status_name(r.model_status), (long long)r.retry_after_ms, r.error);
    CU_ASSERT_TRUE(ok);
    ev_llm_result_free(&r);
    ev_http_response_free(&resp);
    json_object_put(doc);
}

static void test_every_recording(void)
{
    DIR *d = opendir(dir);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    size_t seen = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".json") != 0)
            continue;
        const expect_t *x = expectation(e->d_name);
        if (!x)
            fprintf(stderr, "\n  %s: a recording without an expectation in this test\n", e->d_name);
        CU_ASSERT_PTR_NOT_NULL(x);
        if (x) {
            check_one(e->d_name, x);
            seen++;
        }
    }
    closedir(d);
    /* Every expectation met a file: none was renamed away. */
    CU_ASSERT_EQUAL(seen, sizeof(expected) / sizeof(expected[0]));
}

/* ---- answers quoted in the provider notes, not in the recordings ---- */

static void classify(ev_llm_result_t *r, bool gemini, int status, const char *body,
                     const char *const *headers)
{
    ev_http_response_t resp;
    ev_http_response_init(&resp);
    resp.status = status;
    resp.body = strdup(body);
    resp.body_len = strlen(body);
    for (const char *const *h = headers; h && *h; h += 2)
        ev_http_response_add_header(&resp, h[0], strlen(h[0]), h[1], strlen(h[1]));
    ev_llm_result_init(r);
    if (gemini)
        ev_gemini_parse_response(r, &resp, MAX_WAIT);
    else
        ev_groq_parse_response(r, &resp, MAX_WAIT);
    ev_http_response_free(&resp);
}

static void test_thinking_budget_refusals(void)
{
    static const char *const bodies[] = {
        "{\"error\": {\"code\": 400, \"message\": \"models/gemini-3.5-flash-lite does not "
        "support setting thinking_budget to 0.\", \"status\": \"INVALID_ARGUMENT\"}}",
        "{\"error\": {\"code\": 400, \"message\": \"The thinking budget (100000) is invalid. "
        "Please choose a value between 128 and 32768.\", \"status\": \"INVALID_ARGUMENT\"}}",
        "{\"error\": {\"code\": 400, \"message\": \"Budget 0 is invalid. This model only works "
        "in thinking mode.\", \"status\": \"INVALID_ARGUMENT\"}}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        ev_llm_result_t r;
        classify(&r, true, 400, bodies[i], NULL);
        CU_ASSERT_EQUAL(r.outcome, EV_LLM_MODEL_UNAVAILABLE);
        CU_ASSERT_EQUAL(r.model_status, EV_MODEL_UNUSABLE);
        CU_ASSERT_STRING_EQUAL(r.config_hint ? r.config_hint : "", "GEMINI_THINKING_BUDGET");
        ev_llm_result_free(&r);
    }
    /* An ordinary bad request stays one. */
    ev_llm_result_t r;
    classify(&r, true, 400,
             "{\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload received.\", "
             "\"status\": \"INVALID_ARGUMENT\"}}",
             NULL);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_BAD_REQUEST);
    CU_ASSERT_EQUAL(r.model_status, EV_MODEL_AVAILABLE);
    ev_llm_result_free(&r);
}

static void test_groq_request_too_large_429(void)
{
    static const char *const no_retry[] = {"x-should-retry", "false", NULL};
    ev_llm_result_t r;
    classify(&r, false, 429,
             "{\"error\": {\"message\": \"Request too large for model `openai/gpt-oss-120b` in "
             "organization `org_01` service tier `on_demand` on tokens per minute (TPM): Limit "
             "8000, Requested 9120, please reduce your message size and try again.\", "
             "\"type\": \"tokens\", \"code\": \"rate_limit_exceeded\"}}",
             no_retry);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(r.too_large);
    /* Not a quota problem: the provider must not be paused for it. */
    CU_ASSERT_FALSE(r.rate_limited);
    CU_ASSERT_FALSE(r.daily_quota);
    ev_llm_result_free(&r);

    /* x-should-retry: false stops a retry whatever the status. */
    classify(&r, false, 503, "{\"error\": {\"message\": \"Service Unavailable\"}}", no_retry);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_FALLBACK);
    ev_llm_result_free(&r);
    classify(&r, true, 500, "{\"error\": {\"code\": 500, \"message\": \"Internal error\"}}",
             no_retry);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_FALLBACK);
    ev_llm_result_free(&r);
    static const char *const may_retry[] = {"x-should-retry", "true", NULL};
    classify(&r, false, 503, "{\"error\": {\"message\": \"Service Unavailable\"}}", may_retry);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_RETRY);
    ev_llm_result_free(&r);
}

static void test_retired_models(void)
{
    ev_llm_result_t r;
    classify(&r, false, 400,
             "{\"error\": {\"message\": \"The model `llama-3.3-70b-versatile` has been "
             "decommissioned and is no longer supported.\", \"type\": \"invalid_request_error\", "
             "\"code\": \"model_decommissioned\"}}",
             NULL);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_MODEL_UNAVAILABLE);
    CU_ASSERT_EQUAL(r.model_status, EV_MODEL_RETIRED);
    ev_llm_result_free(&r);
    classify(&r, false, 404,
             "{\"error\": {\"message\": \"The model `meta-llama/llama-4-scout-17b-16e-instruct` "
             "has been decommissioned.\", \"type\": \"invalid_request_error\", \"code\": "
             "\"model_decommissioned\"}}",
             NULL);
    CU_ASSERT_EQUAL(r.model_status, EV_MODEL_RETIRED);
    ev_llm_result_free(&r);
    /* A 404 that names no model is a wrong base URL: the provider's problem. */
    classify(&r, true, 404, "<html>Not Found</html>", NULL);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_FATAL_CONFIG);
    ev_llm_result_free(&r);
}

static int init_suite(void)
{
    const char *src = getenv("EV_SOURCE_DIR");
    snprintf(dir, sizeof(dir), "%s/../shared/wire-bodies", src ? src : EV_SOURCE_DIR);
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr,
                "\n  %s: cannot open (the shared recordings must sit beside the "
                "repository)\n",
                dir);
        return 1;
    }
    closedir(d);
    return 0;
}

static const ev_test_t recorded_tests[] = {
    {"every recorded answer", test_every_recording},
    EV_TEST_END,
};

static const ev_test_t quoted_tests[] = {
    {"thinking-budget refusals", test_thinking_budget_refusals},
    {"Groq 429 request too large, x-should-retry", test_groq_request_too_large_429},
    {"retired models", test_retired_models},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"recorded", init_suite, NULL, recorded_tests, NULL, NULL},
    {"quoted", NULL, NULL, quoted_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
