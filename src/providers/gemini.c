/*
 * providers/gemini.c - the Gemini operations table.
 *
 * The wire format (request body, answer classification) is gemini.c; this
 * file says what Gemini can take (PDF inline, any number of images, 100 MB
 * requests), when its daily quotas come back (midnight Pacific time), and how
 * to ask about a model: GET {base}/models/{model}, which spends no
 * generation quota. Immutable; no state.
 */
#include "ev/gemini.h"
#include "ev/providers.h"

#include "ev/util.h"

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static char *call_url(const char *base_url, const char *model)
{
    return ev_gemini_build_url(base_url, model);
}

static int build_body(char **out, size_t *out_len, const ev_llm_request_t *req, const char *model,
                      const ev_provider_config_t *cfg)
{
    (void)model; /* Gemini names the model in the URL */
    return ev_gemini_build_body(out, out_len, req, cfg->thinking_budget);
}

/* ---- Pacific midnight (US DST rule: 2nd Sunday of March .. 1st Sunday of
 * November, switching at 02:00 local time). ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* Day of month of the n-th Sunday of (y, m). */
static unsigned nth_sunday(int64_t y, unsigned m, unsigned n)
{
    int64_t days = days_from_civil(y, m, 1);
    unsigned wd = (unsigned)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday (4) */
    unsigned first = 1 + (7 - wd) % 7;
    return first + 7 * (n - 1);
}

/* UTC offset of US Pacific time at Unix time t (seconds): -7 h during DST. */
static int64_t pacific_offset(int64_t t)
{
    const int64_t day = 86400;
    time_t lt = (time_t)(t - 8 * 3600);
    struct tm tm;
    gmtime_r(&lt, &tm);
    int64_t y = tm.tm_year + 1900;
    /* 02:00 PST on the 2nd Sunday of March; 02:00 PDT on the 1st Sunday of November. */
    int64_t start = days_from_civil(y, 3, nth_sunday(y, 3, 2)) * day + 10 * 3600;
    int64_t end = days_from_civil(y, 11, nth_sunday(y, 11, 1)) * day + 9 * 3600;
    return (t >= start && t < end) ? -7 * 3600 : -8 * 3600;
}

int64_t ev_gemini_next_pacific_midnight(int64_t wall_us)
{
    const int64_t day = 86400;
    int64_t t = wall_us / 1000000;
    int64_t local_midnight = ((t + pacific_offset(t)) / day + 1) * day;
    int64_t candidate = local_midnight - pacific_offset(t);
    /* A DST switch between now and midnight changes the offset that applies
     * at midnight itself. */
    candidate = local_midnight - pacific_offset(candidate);
    return candidate * 1000000;
}

/* Gemini's daily quotas reset at midnight Pacific time; the RetryInfo of a
 * PerDay 429 is a misleading short delay, so it is ignored. */
static int64_t quota_reset_us(const ev_llm_result_t *res, int64_t wall_us)
{
    (void)res;
    return ev_gemini_next_pacific_midnight(wall_us);
}

static char *model_info_url(const char *base_url, const char *model)
{
    size_t blen = strlen(base_url);
    while (blen > 0 && base_url[blen - 1] == '/')
        blen--;
    if (strncmp(model, "models/", 7) == 0)
        model += 7;
    return ev_asprintf("%.*s/models/%s", (int)blen, base_url, model);
}

/* 200: the model's record; 404: no such model (Gemini says the same for a
 * model it shut down); 400 API_KEY_INVALID, 401, 403: the key. */
static ev_model_status_t parse_model_info(const ev_http_response_t *resp, const char *model,
                                          char *msg, size_t msglen)
{
    json_object *root = ev_llm_json_parse(resp->body, resp->body_len);
    json_object *err = ev_llm_json_get(root, "error");
    const char *m = ev_llm_json_str(err, "message");
    ev_model_status_t st = EV_MODEL_UNCHECKED;
    if (m)
        ev_llm_snippet(msg, msglen, m, strlen(m));
    else
        snprintf(msg, msglen, "HTTP %d", resp->status);
    if (resp->status == 200) {
        /* A model that cannot generate content (an embedding model, say)
         * would refuse every call. */
        json_object *methods = ev_llm_json_get(root, "supportedGenerationMethods");
        bool generates = !methods || !json_object_is_type(methods, json_type_array);
        for (size_t i = 0; !generates && i < json_object_array_length(methods); i++) {
            const char *name = json_object_get_string(json_object_array_get_idx(methods, i));
            generates = name && strcmp(name, "generateContent") == 0;
        }
        snprintf(msg, msglen, "%s", generates ? model : "does not support generateContent");
        st = generates ? EV_MODEL_AVAILABLE : EV_MODEL_UNUSABLE;
    } else if (resp->status == 404) {
        st = EV_MODEL_UNKNOWN;
    } else if (resp->status == 401 || resp->status == 403 ||
               (resp->status == 400 && m &&
                (strstr(m, "API key not valid") || strstr(m, "API_KEY_INVALID")))) {
        st = EV_MODEL_KEY_REJECTED;
    }
    json_object_put(root);
    return st;
}

/* Gemini's documented inline image types. */
static const char *const gemini_image_types[] = {"image/png",  "image/jpeg", "image/webp",
                                                 "image/heic", "image/heif", NULL};

const ev_provider_ops_t ev_provider_gemini = {
    .id = EV_PROVIDER_GEMINI,
    .name = "gemini",
    .env = "GEMINI",
    .caps = EV_PROVIDER_CAP_INLINE_PDF | EV_PROVIDER_CAP_IMAGES,
    .max_images = 0,
    .max_request = EV_GEMINI_MAX_REQUEST_DEFAULT,
    .limit_is_media = false,
    .auth_prefix = "x-goog-api-key: ",
    .image_types = gemini_image_types,
    /* Gemini bills 258 tokens per image and per PDF page. */
    .image_tokens = 258,
    .pdf_page_tokens = 258,
    .call_url = call_url,
    .build_body = build_body,
    .parse_response = ev_gemini_parse_response,
    .quota_reset_us = quota_reset_us,
    .model_info_url = model_info_url,
    .parse_model_info = parse_model_info,
};
