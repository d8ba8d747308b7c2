/*
 * providers/groq.c - the Groq operations table, and the OpenAI-shaped
 * pieces the OpenAI-compatible provider shares with it.
 *
 * The wire format is groq.c (OpenAI chat completions). Groq takes no PDF
 * (the PDF check sends its extracted text), images only on vision models
 * (at most 5, in a base64 request of at most 4 MB), counts requests per
 * rolling day and says when one frees up; GET {base}/models lists the models
 * the key may use. Immutable; no state.
 */
#include "ev/groq.h"
#include "ev/providers.h"

#include "ev/util.h"

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

/* Without an announced reset, look again after this long: the breaker's
 * probe then costs one call an hour while the quota stays empty. */
#define NO_HINT_COOLDOWN_US (INT64_C(3600) * 1000000)

/* What OpenAI documents for image inputs and Groq's vision models take;
 * HEIC/HEIF are Gemini's alone, so such images go to Gemini or nowhere. */
const char *const ev_provider_openai_image_types[] = {"image/png", "image/jpeg", "image/webp",
                                                      NULL};

char *ev_provider_openai_call_url(const char *base_url, const char *model)
{
    (void)model; /* named in the body */
    return ev_groq_build_url(base_url);
}

int ev_provider_openai_body(char **out, size_t *out_len, const ev_llm_request_t *req,
                            const char *model, const ev_provider_config_t *cfg)
{
    (void)cfg;
    return ev_groq_build_body(out, out_len, req, model);
}

/* A rolling daily window announces when a request frees up (retry-after,
 * x-ratelimit-reset-requests): waiting for that gives the quota back as soon
 * as it exists. A key with no quota at all gets no hint worth trusting. */
int64_t ev_provider_openai_quota_reset(const ev_llm_result_t *res, int64_t wall_us)
{
    int64_t hint_ms = EV_MAX(res->retry_after_ms, res->ratelimit.reset_requests_ms);
    if (!res->no_quota && hint_ms > 0)
        return wall_us + hint_ms * 1000;
    return wall_us + NO_HINT_COOLDOWN_US;
}

char *ev_provider_openai_models_url(const char *base_url, const char *model)
{
    (void)model; /* the list names every model the key may use */
    size_t blen = strlen(base_url);
    while (blen > 0 && base_url[blen - 1] == '/')
        blen--;
    return ev_asprintf("%.*s/models", (int)blen, base_url);
}

/* {"object": "list", "data": [{"id": "...", "active": true, ...}]}: a model
 * absent from the list is unknown to this key; one listed inactive is
 * retired. */
ev_model_status_t ev_provider_openai_model_info(const ev_http_response_t *resp, const char *model,
                                                char *msg, size_t msglen)
{
    json_object *root = ev_llm_json_parse(resp->body, resp->body_len);
    ev_model_status_t st = EV_MODEL_UNCHECKED;
    const char *m = ev_llm_json_str(ev_llm_json_get(root, "error"), "message");
    if (m)
        ev_llm_snippet(msg, msglen, m, strlen(m));
    else
        snprintf(msg, msglen, "HTTP %d", resp->status);
    if (resp->status == 200) {
        json_object *data = ev_llm_json_get(root, "data");
        size_t n =
            data && json_object_is_type(data, json_type_array) ? json_object_array_length(data) : 0;
        st = EV_MODEL_UNKNOWN;
        snprintf(msg, msglen, "not in the provider's list of %zu models", n);
        for (size_t i = 0; i < n; i++) {
            json_object *e = json_object_array_get_idx(data, i);
            const char *id = ev_llm_json_str(e, "id");
            if (!id || strcmp(id, model) != 0)
                continue;
            json_object *active = ev_llm_json_get(e, "active");
            bool retired = active && json_object_is_type(active, json_type_boolean) &&
                           !json_object_get_boolean(active);
            st = retired ? EV_MODEL_RETIRED : EV_MODEL_AVAILABLE;
            snprintf(msg, msglen, "%s", retired ? "listed as inactive" : "listed");
            break;
        }
    } else if (resp->status == 401 || resp->status == 403) {
        st = EV_MODEL_KEY_REJECTED;
    }
    json_object_put(root);
    return st;
}

const ev_provider_ops_t ev_provider_groq = {
    .id = EV_PROVIDER_GROQ,
    .name = "groq",
    .env = "GROQ",
    .caps = EV_PROVIDER_CAP_IMAGES | EV_PROVIDER_CAP_VISION_MODELS,
    .max_images = EV_GROQ_MAX_IMAGES_DEFAULT,
    .max_request = EV_GROQ_MAX_REQUEST_DEFAULT,
    .limit_is_media = true, /* text-only requests are bounded by tokens: Groq answers 413 */
    .auth_prefix = "Authorization: Bearer ",
    .image_types = ev_provider_openai_image_types,
    /* Groq's vision models bill more per image; no PDF is sent. */
    .image_tokens = 1600,
    .pdf_page_tokens = 0,
    .call_url = ev_provider_openai_call_url,
    .build_body = ev_provider_openai_body,
    .parse_response = ev_groq_parse_response,
    .quota_reset_us = ev_provider_openai_quota_reset,
    .model_info_url = ev_provider_openai_models_url,
    .parse_model_info = ev_provider_openai_model_info,
};
