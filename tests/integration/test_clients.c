/*
 * test_clients.c - the Gemini and Groq clients through real HTTP against the
 * loopback provider simulator (tools/provider-sim): every fault mode the
 * simulator serves comes back with the outcome class the router relies on,
 * rate limits carry the server's hint, a hung server becomes a timeout, a
 * shutdown aborts a call in flight, requests over Groq's limits never reach
 * the server, and the API keys never show up in a result or in the logs.
 */
#include "ev/error.h"
#include "ev/gemini.h"
#include "ev/groq.h"
#include "ev/providers.h"
#include "ev/http.h"
#include "ev/log.h"
#include "ev/secret.h"
#include "ev/util.h"
#include "ev/verdict.h"

#include "simctl.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "runner.h"

#define GEMINI_MODEL "gemini-2.5-flash"
#define GROQ_MODEL "llama-3.3-70b-versatile"
#define GROQ_VISION "meta-llama/llama-4-scout-17b-16e-instruct"
#define MAX_WAIT 10000

static simctl_t *sim;
static ev_secret_t *gkey, *qkey;
static ev_provider_config_t gcfg, qcfg;
static ev_gemini_t *gem;
static ev_groq_t *groq;
static ev_http_t *http;
static char log_path[64];
static int log_fd = -1;

static const unsigned char pdf[] = "%PDF-1.4\n1 0 obj\n<< /Type /Page >>\nendobj\ntrailer\n%%EOF\n";
static const unsigned char png[] = "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00";

static ev_llm_client_options_t options(int timeout_ms)
{
    ev_llm_client_options_t o = EV_LLM_CLIENT_OPTIONS_INIT;
    o.timeout_ms = timeout_ms;
    o.connect_timeout_ms = 2000;
    o.max_wait_ms = MAX_WAIT;
    return o;
}

/* What the router would log about a call: every string of the result. */
static void log_result(const char *provider, const ev_llm_result_t *r)
{
    char status[16];
    snprintf(status, sizeof(status), "%d", r->http_status);
    ev_log_kv(EV_LOG_INFO, "llm call", "provider", provider, "outcome",
              ev_llm_outcome_name(r->outcome), "http_status", status, "error", r->error,
              "finish_reason", r->finish_reason ? r->finish_reason : "", "request_id",
              r->request_id ? r->request_id : "", "model", r->model ? r->model : "", "text",
              r->text ? r->text : "", NULL);
}

/* No field of a result may carry either key. */
static void assert_no_key(const ev_llm_result_t *r)
{
    const char *fields[] = {r->error, r->text, r->finish_reason, r->request_id, r->model};
    for (size_t i = 0; i < 5; i++) {
        if (!fields[i])
            continue;
        CU_ASSERT_FALSE(ev_secret_appears_in(gkey, fields[i], strlen(fields[i])));
        CU_ASSERT_FALSE(ev_secret_appears_in(qkey, fields[i], strlen(fields[i])));
    }
}

static void set_fault(const char *provider, const char *fault)
{
    CU_ASSERT_EQUAL_FATAL(simctl_reset(sim), 0);
    if (fault) {
        char json[128];
        snprintf(json, sizeof(json), "{\"fault\": \"%s\", \"fail_next\": 1}", fault);
        CU_ASSERT_EQUAL_FATAL(simctl_set(sim, provider, json), 0);
    }
}

static ev_llm_request_t gemini_request(void)
{
    static ev_llm_media_t media[2];
    media[0] = (ev_llm_media_t){"application/pdf", pdf, sizeof(pdf) - 1};
    media[1] = (ev_llm_media_t){"image/png", png, sizeof(png) - 1};
    ev_llm_request_t req = {.system_prompt = "You review submissions for a robotics event.",
                            .user_text = "Does the attached document fit the theme?",
                            .media = media,
                            .media_count = 2,
                            .max_output_tokens = 1024};
    return req;
}

static ev_llm_request_t groq_text_request(void)
{
    ev_llm_request_t req = {.system_prompt = "You review submissions for a robotics event.",
                            .user_text = "Title: Line-following robot",
                            .pdf_text = "Page 1: our robot follows a black line.",
                            .max_output_tokens = 1024};
    return req;
}

static int gemini_call(ev_gemini_t *g, const ev_llm_request_t *req, ev_llm_result_t *r,
                       const atomic_bool *stop)
{
    int rc = ev_gemini_call(g, http, req, r, stop);
    log_result("gemini", r);
    assert_no_key(r);
    return rc;
}

static int groq_call(ev_groq_t *g, const ev_llm_request_t *req, ev_llm_result_t *r)
{
    int rc = ev_groq_call(g, http, req, r, NULL);
    log_result("groq", r);
    assert_no_key(r);
    return rc;
}

static void assert_verdict(const ev_llm_result_t *r, bool valid)
{
    ev_verdict_t v;
    char why[128] = "";
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->text);
    CU_ASSERT_EQUAL(ev_verdict_parse(&v, r->text, strlen(r->text), why, sizeof(why)), 0);
    CU_ASSERT_EQUAL(v.valid, valid);
}

/* ------------------------------------------------------------- Gemini */

static void test_gemini_ok(void)
{
    set_fault("gemini", NULL);
    ev_llm_request_t req = gemini_request();
    ev_llm_result_t r;
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_OK);
    CU_ASSERT_EQUAL(r.http_status, 200);
    CU_ASSERT_TRUE(r.http_attempted);
    CU_ASSERT_STRING_EQUAL(r.finish_reason, "STOP");
    CU_ASSERT(r.tokens_in > 0);
    CU_ASSERT(r.tokens_out > 0);
    CU_ASSERT_PTR_NOT_NULL(r.request_id);
    CU_ASSERT_STRING_EQUAL(r.model, GEMINI_MODEL);
    CU_ASSERT(r.latency_ms >= 0);
    assert_verdict(&r, true);
    ev_llm_result_free(&r);
    /* The simulator found the request well-formed, the key in its header. */
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "requests"), 1);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "malformed"), 0);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "auth_failed"), 0);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "ok"), 1);

    /* Thought parts are skipped and split text is joined; a marker in the
     * text gives a negative verdict. */
    CU_ASSERT_EQUAL_FATAL(simctl_set(sim, "gemini", "{\"thoughts\": true, \"split_text\": true}"),
                          0);
    req.user_text = "This one is OFFTOPIC.";
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_OK);
    assert_verdict(&r, false);
    ev_llm_result_free(&r);

    /* Text only: no media is sent. */
    req.text_only = true;
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_OK);
    ev_llm_result_free(&r);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "malformed"), 0);
}

typedef struct fault_case {
    const char *fault;
    ev_llm_outcome_t outcome;
    int status;
} fault_case_t;

static void test_gemini_faults(void)
{
    static const fault_case_t cases[] = {
        {"overloaded", EV_LLM_RETRY, 503},
        {"internal", EV_LLM_RETRY, 500},
        {"deadline", EV_LLM_RETRY, 504},
        {"html", EV_LLM_RETRY, 502},
        {"empty", EV_LLM_RETRY, 502},
        {"garbage", EV_LLM_BAD_ANSWER, 200},
        {"blocked", EV_LLM_BAD_ANSWER, 200},
        {"safety", EV_LLM_BAD_ANSWER, 200},
        {"truncated", EV_LLM_BAD_ANSWER, 200},
        {"daily_quota", EV_LLM_FALLBACK, 429},
        {"fenced", EV_LLM_OK, 200},
        {"bad_key", EV_LLM_FATAL_CONFIG, 400},
        {"too_large", EV_LLM_FALLBACK, 400},
    };
    ev_llm_request_t req = gemini_request();
    for (size_t i = 0; i < EV_ARRAY_LEN(cases); i++) {
        set_fault("gemini", cases[i].fault);
        ev_llm_result_t r;
        CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, NULL), 0);
        if (r.outcome != cases[i].outcome || r.http_status != cases[i].status)
            fprintf(stderr, "gemini fault %s: outcome %s status %d (%s)\n", cases[i].fault,
                    ev_llm_outcome_name(r.outcome), r.http_status, r.error);
        CU_ASSERT_EQUAL(r.outcome, cases[i].outcome);
        CU_ASSERT_EQUAL(r.http_status, cases[i].status);
        CU_ASSERT_TRUE(r.http_attempted);
        if (r.outcome == EV_LLM_OK) {
            assert_verdict(&r, true); /* the fence is the verdict parser's job */
        } else {
            CU_ASSERT_PTR_NULL(r.text);
            CU_ASSERT_NOT_EQUAL(r.error[0], '\0');
        }
        if (strcmp(cases[i].fault, "daily_quota") == 0) {
            CU_ASSERT_TRUE(r.daily_quota);
            CU_ASSERT_TRUE(r.rate_limited);
        }
        if (strcmp(cases[i].fault, "too_large") == 0)
            CU_ASSERT_TRUE(r.too_large);
        ev_llm_result_free(&r);
    }

    /* Array-wrapped 429 with a 1-30 s RetryInfo: retry when the hint fits
     * the allowed wait, fall back otherwise. */
    set_fault("gemini", "array_error");
    ev_llm_result_t r;
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.http_status, 429);
    CU_ASSERT_TRUE(r.rate_limited);
    CU_ASSERT(r.retry_after_ms >= 1000 && r.retry_after_ms <= 30000);
    CU_ASSERT_EQUAL(r.outcome, r.retry_after_ms > MAX_WAIT ? EV_LLM_FALLBACK : EV_LLM_RETRY);
    ev_llm_result_free(&r);

    /* After all that, the same handle still gets answers. */
    set_fault("gemini", NULL);
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_OK);
    ev_llm_result_free(&r);
}

static void test_gemini_rate_limit(void)
{
    ev_llm_request_t req = gemini_request();
    ev_llm_result_t r;
    /* One request per second: the second one gets a short RetryInfo. */
    set_fault("gemini", NULL);
    CU_ASSERT_EQUAL_FATAL(simctl_set(sim, "gemini", "{\"rpm\": 60, \"window_s\": 1}"), 0);
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_OK);
    ev_llm_result_free(&r);
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.http_status, 429);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_RETRY);
    CU_ASSERT_TRUE(r.rate_limited);
    CU_ASSERT_FALSE(r.daily_quota);
    CU_ASSERT(r.retry_after_ms > 0 && r.retry_after_ms <= 2000);
    ev_llm_result_free(&r);

    /* One request per minute: the hint (~60 s) is beyond the allowed wait. */
    set_fault("gemini", NULL);
    CU_ASSERT_EQUAL_FATAL(simctl_set(sim, "gemini", "{\"rpm\": 1}"), 0);
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, NULL), 0);
    ev_llm_result_free(&r);
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(r.rate_limited);
    CU_ASSERT(r.retry_after_ms > MAX_WAIT);
    ev_llm_result_free(&r);

    /* A 429 without RetryInfo: retry, with no hint. */
    CU_ASSERT_EQUAL_FATAL(simctl_set(sim, "gemini", "{\"retry_info_rate\": 0}"), 0);
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_RETRY);
    CU_ASSERT_TRUE(r.rate_limited);
    CU_ASSERT_EQUAL(r.retry_after_ms, -1);
    ev_llm_result_free(&r);
}

static void test_gemini_config_errors(void)
{
    set_fault("gemini", NULL);
    ev_llm_request_t req = gemini_request();
    ev_llm_client_options_t o = options(5000);
    ev_llm_result_t r;

    /* Unknown model: 404. */
    ev_provider_config_t c = gcfg;
    c.model = "gemini-9.9-imaginary";
    ev_gemini_t *g = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_gemini_new(&g, &c, &o), 0);
    CU_ASSERT_EQUAL(gemini_call(g, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.http_status, 404);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_MODEL_UNAVAILABLE);
    CU_ASSERT_EQUAL(r.model_status, EV_MODEL_UNKNOWN);
    ev_llm_result_free(&r);
    ev_gemini_free(g);

    /* Wrong key: Gemini's 400 API_KEY_INVALID. */
    ev_secret_t *wrong = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_secret_new(&wrong, "wrong-gemini-test-key-000000000000000"), 0);
    c = gcfg;
    c.api_key = wrong;
    CU_ASSERT_EQUAL_FATAL(ev_gemini_new(&g, &c, &o), 0);
    CU_ASSERT_EQUAL(gemini_call(g, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.http_status, 400);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_FATAL_CONFIG);
    CU_ASSERT_FALSE(ev_secret_appears_in(wrong, r.error, strlen(r.error)));
    log_result("gemini", &r);
    ev_llm_result_free(&r);
    ev_gemini_free(g);
    ev_secret_free(wrong);

    /* Nothing listening: a connection error is retryable. */
    c = gcfg;
    c.base_url = "http://127.0.0.1:1/v1beta";
    CU_ASSERT_EQUAL_FATAL(ev_gemini_new(&g, &c, &o), 0);
    CU_ASSERT_EQUAL(gemini_call(g, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_RETRY);
    CU_ASSERT_EQUAL(r.err, EV_EHTTP);
    CU_ASSERT_EQUAL(r.http_status, 0);
    CU_ASSERT_TRUE(r.http_attempted);
    ev_llm_result_free(&r);
    ev_gemini_free(g);
}

static void test_gemini_timeout(void)
{
    set_fault("gemini", "hang");
    ev_llm_client_options_t o = options(500);
    ev_gemini_t *g = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_gemini_new(&g, &gcfg, &o), 0);
    ev_llm_request_t req = gemini_request();
    ev_llm_result_t r;
    CU_ASSERT_EQUAL(gemini_call(g, &req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_RETRY);
    CU_ASSERT_EQUAL(r.err, EV_ETIMEOUT);
    CU_ASSERT_TRUE(r.http_attempted);
    CU_ASSERT(r.latency_ms >= 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error, "timeout"));
    ev_llm_result_free(&r);
    CU_ASSERT_EQUAL(simctl_counter(sim, "gemini", "hung"), 1);
    ev_gemini_free(g);
}

static atomic_bool stop_flag;

static void *stopper(void *arg)
{
    /* Shut down once the simulator is holding the request. */
    simctl_wait_counter(sim, "gemini", "in_flight", 1, 10000);
    atomic_store(&stop_flag, true);
    return NULL;
}

static void test_gemini_stop(void)
{
    set_fault("gemini", "hang");
    atomic_store(&stop_flag, false);
    ev_llm_request_t req = gemini_request();
    ev_llm_result_t r;
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, stopper, NULL), 0);
    /* gem has a 10 s timeout: only the stop flag can end this call early. */
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, &stop_flag), EV_ESHUTDOWN);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_RETRY);
    CU_ASSERT_EQUAL(r.err, EV_ESHUTDOWN);
    CU_ASSERT(r.latency_ms < 10000);
    ev_llm_result_free(&r);
    pthread_join(t, NULL);
    /* Already stopped: nothing is sent. */
    CU_ASSERT_EQUAL(gemini_call(gem, &req, &r, &stop_flag), EV_ESHUTDOWN);
    CU_ASSERT_FALSE(r.http_attempted);
    ev_llm_result_free(&r);
}

/* --------------------------------------------------------------- Groq */

static void test_groq_ok(void)
{
    set_fault("groq", NULL);
    ev_llm_request_t req = groq_text_request();
    ev_llm_result_t r;
    CU_ASSERT_EQUAL(groq_call(groq, &req, &r), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_OK);
    CU_ASSERT_EQUAL(r.http_status, 200);
    CU_ASSERT_STRING_EQUAL(r.model, GROQ_MODEL);
    CU_ASSERT_STRING_EQUAL(r.finish_reason, "stop");
    CU_ASSERT(r.tokens_in > 0);
    CU_ASSERT(r.tokens_out > 0);
    CU_ASSERT_PTR_NOT_NULL(r.request_id);
    if (r.request_id)
        CU_ASSERT_EQUAL(strncmp(r.request_id, "req_", 4), 0);
    /* Rate-limit headers of every answer are exposed. */
    CU_ASSERT(r.ratelimit.limit_requests > 0);
    CU_ASSERT(r.ratelimit.remaining_requests >= 0);
    CU_ASSERT(r.ratelimit.limit_tokens > 0);
    CU_ASSERT(r.ratelimit.remaining_tokens >= 0);
    CU_ASSERT(r.ratelimit.reset_requests_ms >= 0);
    CU_ASSERT(r.ratelimit.reset_tokens_ms >= 0);
    assert_verdict(&r, true);
    ev_llm_result_free(&r);

    /* Images go to the vision model as data URLs. */
    ev_llm_media_t media[2] = {{"image/png", png, sizeof(png) - 1},
                               {"image/png", png, sizeof(png) - 1}};
    req.media = media;
    req.media_count = 2;
    req.user_text = "Are these photos BADIMG?";
    CU_ASSERT_EQUAL(groq_call(groq, &req, &r), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_OK);
    CU_ASSERT_STRING_EQUAL(r.model, GROQ_VISION);
    assert_verdict(&r, false);
    ev_llm_result_free(&r);
    CU_ASSERT_EQUAL(simctl_counter(sim, "groq", "requests"), 2);
    CU_ASSERT_EQUAL(simctl_counter(sim, "groq", "malformed"), 0);
    CU_ASSERT_EQUAL(simctl_counter(sim, "groq", "auth_failed"), 0);
}

static void test_groq_faults(void)
{
    static const fault_case_t cases[] = {
        {"overloaded", EV_LLM_RETRY, 503},
        {"internal", EV_LLM_RETRY, 500},
        {"deadline", EV_LLM_RETRY, 504},
        {"html", EV_LLM_RETRY, 502},
        {"empty", EV_LLM_RETRY, 502},
        {"garbage", EV_LLM_BAD_ANSWER, 200},
        {"blocked", EV_LLM_OK, 200},
        {"truncated", EV_LLM_BAD_ANSWER, 200},
        {"daily_quota", EV_LLM_FALLBACK, 429},
        {"fenced", EV_LLM_OK, 200},
        {"bad_key", EV_LLM_FATAL_CONFIG, 401},
        {"too_large", EV_LLM_FALLBACK, 413},
        {"json_failed", EV_LLM_BAD_ANSWER, 400},
    };
    ev_llm_request_t req = groq_text_request();
    for (size_t i = 0; i < EV_ARRAY_LEN(cases); i++) {
        set_fault("groq", cases[i].fault);
        ev_llm_result_t r;
        CU_ASSERT_EQUAL(groq_call(groq, &req, &r), 0);
        if (r.outcome != cases[i].outcome || r.http_status != cases[i].status)
            fprintf(stderr, "groq fault %s: outcome %s status %d (%s)\n", cases[i].fault,
                    ev_llm_outcome_name(r.outcome), r.http_status, r.error);
        CU_ASSERT_EQUAL(r.outcome, cases[i].outcome);
        CU_ASSERT_EQUAL(r.http_status, cases[i].status);
        CU_ASSERT_TRUE(r.http_attempted);
        if (strcmp(cases[i].fault, "blocked") == 0) {
            /* A refusal in prose: the transport is fine, the verdict is not. */
            ev_verdict_t v;
            CU_ASSERT_NOT_EQUAL(ev_verdict_parse(&v, r.text, strlen(r.text), NULL, 0), 0);
        } else if (r.outcome == EV_LLM_OK) {
            assert_verdict(&r, true);
        } else {
            CU_ASSERT_PTR_NULL(r.text);
        }
        if (strcmp(cases[i].fault, "daily_quota") == 0) {
            CU_ASSERT_TRUE(r.daily_quota);
            CU_ASSERT_TRUE(r.rate_limited);
        }
        if (strcmp(cases[i].fault, "too_large") == 0) {
            CU_ASSERT_TRUE(r.too_large);
            CU_ASSERT_FALSE(r.rate_limited); /* 413 says nothing about the quota */
        }
        ev_llm_result_free(&r);
    }

    set_fault("groq", "array_error");
    ev_llm_result_t r;
    CU_ASSERT_EQUAL(groq_call(groq, &req, &r), 0);
    CU_ASSERT_EQUAL(r.http_status, 429);
    CU_ASSERT_TRUE(r.rate_limited);
    CU_ASSERT(r.retry_after_ms >= 1000 && r.retry_after_ms <= 30000);
    CU_ASSERT_EQUAL(r.outcome, r.retry_after_ms > MAX_WAIT ? EV_LLM_FALLBACK : EV_LLM_RETRY);
    ev_llm_result_free(&r);
}

static void test_groq_rate_limit_and_timeout(void)
{
    ev_llm_request_t req = groq_text_request();
    ev_llm_result_t r;
    set_fault("groq", NULL);
    CU_ASSERT_EQUAL_FATAL(simctl_set(sim, "groq", "{\"rpm\": 60, \"window_s\": 1}"), 0);
    CU_ASSERT_EQUAL(groq_call(groq, &req, &r), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_OK);
    ev_llm_result_free(&r);
    CU_ASSERT_EQUAL(groq_call(groq, &req, &r), 0);
    CU_ASSERT_EQUAL(r.http_status, 429);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_RETRY);
    CU_ASSERT_TRUE(r.rate_limited);
    CU_ASSERT(r.retry_after_ms > 0 && r.retry_after_ms <= 1000); /* from retry-after */
    ev_llm_result_free(&r);

    /* Unknown model: that model is unavailable. */
    ev_provider_config_t c = qcfg;
    c.model = "llama-0-imaginary";
    ev_llm_client_options_t o = options(500);
    ev_groq_t *g = NULL;
    set_fault("groq", NULL);
    CU_ASSERT_EQUAL_FATAL(ev_groq_new(&g, &c, &o), 0);
    CU_ASSERT_EQUAL(groq_call(g, &req, &r), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_MODEL_UNAVAILABLE);
    CU_ASSERT_EQUAL(r.model_status, EV_MODEL_UNKNOWN);
    ev_llm_result_free(&r);
    ev_groq_free(g);

    /* A hung server becomes a timeout. */
    set_fault("groq", "hang");
    CU_ASSERT_EQUAL_FATAL(ev_groq_new(&g, &qcfg, &o), 0);
    CU_ASSERT_EQUAL(groq_call(g, &req, &r), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_RETRY);
    CU_ASSERT_EQUAL(r.err, EV_ETIMEOUT);
    ev_llm_result_free(&r);
    ev_groq_free(g);
}

static void test_groq_refused_before_http(void)
{
    set_fault("groq", NULL);
    ev_llm_result_t r;
    /* A PDF is never sent to Groq. */
    ev_llm_media_t with_pdf[1] = {{"application/pdf", pdf, sizeof(pdf) - 1}};
    ev_llm_request_t req = groq_text_request();
    req.media = with_pdf;
    req.media_count = 1;
    CU_ASSERT_EQUAL(groq_call(groq, &req, &r), EV_EINVAL);
    CU_ASSERT_FALSE(r.http_attempted);
    ev_llm_result_free(&r);
    /* A HEIC image is Gemini's alone: Groq is never sent one. */
    ev_llm_media_t heic[1] = {{"image/heic", png, sizeof(png) - 1}};
    req.media = heic;
    CU_ASSERT_EQUAL(groq_call(groq, &req, &r), EV_EINVAL);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_BAD_REQUEST);
    CU_ASSERT_FALSE(r.http_attempted);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error, "image/heic"));
    CU_ASSERT_FALSE(ev_provider_accepts_image(&ev_provider_groq, "image/heic"));
    CU_ASSERT_TRUE(ev_provider_accepts_image(&ev_provider_gemini, "image/heic"));
    CU_ASSERT_TRUE(ev_provider_accepts_image(&ev_provider_groq, "image/webp"));
    ev_llm_result_free(&r);
    /* Six images exceed Groq's limit of five. */
    ev_llm_media_t six[6];
    for (int i = 0; i < 6; i++)
        six[i] = (ev_llm_media_t){"image/png", png, sizeof(png) - 1};
    req.media = six;
    req.media_count = 6;
    CU_ASSERT_EQUAL(groq_call(groq, &req, &r), 0);
    CU_ASSERT_EQUAL(r.outcome, EV_LLM_FALLBACK);
    CU_ASSERT_TRUE(r.too_large);
    CU_ASSERT_FALSE(r.http_attempted);
    ev_llm_result_free(&r);
    /* The simulator never saw any of them. */
    CU_ASSERT_EQUAL(simctl_counter(sim, "groq", "requests"), 0);
}

/* Runs last: everything logged above, including every error text of
 * every fault, never contains either key. */
static void test_keys_never_logged(void)
{
    CU_ASSERT_EQUAL_FATAL(fsync(log_fd), 0);
    FILE *f = fopen(log_path, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    CU_ASSERT(n > 1000); /* the calls above were logged */
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
    fclose(f);
    CU_ASSERT_FALSE(ev_secret_appears_in(gkey, buf, got));
    CU_ASSERT_FALSE(ev_secret_appears_in(qkey, buf, got));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"outcome\":\"fatal_config\""));
    free(buf);
}

static int init_suite(void)
{
    if (ev_http_global_init() != 0)
        return 1;
    if (simctl_start(&sim, NULL) != 0)
        return 1;
    if (ev_secret_new(&gkey, SIMCTL_GEMINI_KEY) != 0 || ev_secret_new(&qkey, SIMCTL_GROQ_KEY) != 0)
        return 1;
    gcfg = (ev_provider_config_t){.id = EV_PROVIDER_GEMINI,
                                  .api_key = gkey,
                                  .model = GEMINI_MODEL,
                                  .vision_model = GEMINI_MODEL,
                                  .base_url = (char *)simctl_gemini_url(sim),
                                  .thinking_budget = 0};
    qcfg = (ev_provider_config_t){.id = EV_PROVIDER_GROQ,
                                  .api_key = qkey,
                                  .model = GROQ_MODEL,
                                  .vision_model = GROQ_VISION,
                                  .base_url = (char *)simctl_groq_url(sim),
                                  .thinking_budget = -1};
    ev_llm_client_options_t o = options(10000);
    if (ev_gemini_new(&gem, &gcfg, &o) != 0 || ev_groq_new(&groq, &qcfg, &o) != 0)
        return 1;
    if (ev_http_new(&http) != 0)
        return 1;
    snprintf(log_path, sizeof(log_path), "/tmp/ev-test-clients-XXXXXX");
    log_fd = mkstemp(log_path);
    if (log_fd < 0)
        return 1;
    ev_log_set_fd(log_fd);
    ev_log_set_level(EV_LOG_DEBUG);
    return 0;
}

static int clean_suite(void)
{
    ev_log_set_fd(2);
    if (log_fd >= 0) {
        close(log_fd);
        unlink(log_path);
    }
    ev_http_free(http);
    ev_gemini_free(gem);
    ev_groq_free(groq);
    simctl_free(sim);
    ev_secret_free(gkey);
    ev_secret_free(qkey);
    ev_http_global_cleanup();
    return 0;
}

static const ev_test_t clients_tests[] = {
    {"gemini answers", test_gemini_ok},
    {"gemini fault modes", test_gemini_faults},
    {"gemini rate limits", test_gemini_rate_limit},
    {"gemini config errors", test_gemini_config_errors},
    {"gemini timeout on a hung server", test_gemini_timeout},
    {"gemini stop aborts a call", test_gemini_stop},
    {"groq answers", test_groq_ok},
    {"groq fault modes", test_groq_faults},
    {"groq rate limit, bad model, timeout", test_groq_rate_limit_and_timeout},
    {"groq refusals before HTTP", test_groq_refused_before_http},
    {"keys never in results or logs", test_keys_never_logged},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"clients", init_suite, clean_suite, clients_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
