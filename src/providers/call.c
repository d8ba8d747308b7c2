/*
 * providers/call.c - the registry of provider tables and the one attempt
 * every provider shares (see providers.h).
 *
 * How: refuse locally what the provider cannot take (media types, image
 * count, request size, estimated from the media before encoding anything and
 * checked again on the encoded body), then build the body through the
 * table, POST it once and classify the answer through the table. The model
 * check is one GET to the table's metadata URL. Reentrant; no state; never
 * logs.
 */
#include "ev/providers.h"

#include "ev/error.h"
#include "ev/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ev_provider_ops_t *const tables[EV_PROVIDER_COUNT] = {
    [EV_PROVIDER_GEMINI] = &ev_provider_gemini,
    [EV_PROVIDER_GROQ] = &ev_provider_groq,
    [EV_PROVIDER_OPENAI_COMPAT] = &ev_provider_openai_compat,
};

const ev_provider_ops_t *ev_providers_get(ev_provider_id_t id)
{
    EV_ASSERT((int)id >= 0 && id < EV_PROVIDER_COUNT);
    return tables[id];
}

const ev_provider_ops_t *ev_providers_find(const char *name)
{
    for (int i = 0; name && i < EV_PROVIDER_COUNT; i++)
        if (strcmp(tables[i]->name, name) == 0)
            return tables[i];
    return NULL;
}

bool ev_provider_req_has_media(const ev_llm_request_t *req)
{
    return req && !req->text_only && req->media && req->media_count > 0;
}

char *const *ev_provider_models_for(const ev_provider_ops_t *ops, const ev_provider_config_t *cfg,
                                    const ev_llm_request_t *req, size_t *n)
{
    if ((ops->caps & EV_PROVIDER_CAP_VISION_MODELS) && ev_provider_req_has_media(req)) {
        *n = cfg->n_vision_models;
        return cfg->vision_models;
    }
    *n = cfg->n_models;
    return cfg->models;
}

static bool is_pdf(const char *mime)
{
    return mime && strcmp(mime, "application/pdf") == 0;
}

static bool is_image(const char *mime)
{
    return mime && strncmp(mime, "image/", 6) == 0;
}

bool ev_provider_accepts_image(const ev_provider_ops_t *ops, const char *mime)
{
    if (!(ops->caps & EV_PROVIDER_CAP_IMAGES) || !is_image(mime))
        return false;
    for (const char *const *t = ops->image_types; t && *t; t++)
        if (strcmp(*t, mime) == 0)
            return true;
    return false;
}

/* Refuses media the provider cannot take at all. Returns 0 or EV_EINVAL with
 * the result filled; counts images and estimates the encoded size. */
static int check_media(const ev_provider_ops_t *ops, const ev_llm_request_t *req,
                       ev_llm_result_t *out, size_t *images, size_t *estimate)
{
    size_t n = ev_provider_req_has_media(req) ? req->media_count : 0;
    for (size_t i = 0; i < n; i++) {
        const char *mime = req->media[i].mime;
        const char *what = NULL;
        if (is_pdf(mime) && !(ops->caps & EV_PROVIDER_CAP_INLINE_PDF))
            what = "PDF";
        else if (is_image(mime) && !ev_provider_accepts_image(ops, mime))
            what = mime;
        else if (!is_pdf(mime) && !is_image(mime))
            what = "non-image, non-PDF";
        if (what) {
            out->outcome = EV_LLM_BAD_REQUEST;
            out->err = EV_EINVAL;
            ev_llm_result_set_error(out, "%s takes no %s input", ops->name, what);
            return EV_EINVAL;
        }
        *images += is_image(mime);
        /* The data URL's or part's framing is small; 64 bytes covers it. */
        *estimate += ev_llm_base64_len(req->media[i].len) + 64;
    }
    return 0;
}

static void too_large(ev_llm_result_t *out)
{
    out->outcome = EV_LLM_FALLBACK;
    out->too_large = true;
}

int ev_provider_call(const ev_provider_ops_t *ops, const ev_provider_config_t *cfg,
                     const ev_llm_client_options_t *opts, ev_http_t *http, const char *model,
                     const ev_llm_request_t *req, ev_llm_result_t *out, const atomic_bool *stop)
{
    ev_llm_result_init(out);
    int rc = 0;
    char *body = NULL, *url = NULL;
    size_t body_len = 0, images = 0, estimate = 0;
    ev_llm_client_options_t o = EV_LLM_CLIENT_OPTIONS_INIT;
    if (!ops || !cfg || !req || !model || !model[0]) {
        rc = EV_EINVAL;
        out->outcome = EV_LLM_BAD_REQUEST;
        out->err = rc;
        ev_llm_result_set_error(out, "invalid call arguments");
        goto out;
    }
    out->model = ev_strdup(model);
    if (opts)
        o = *opts;
    if (o.timeout_ms <= 0)
        o.timeout_ms = 60000;
    size_t max_req = o.max_request_bytes ? o.max_request_bytes : ops->max_request;
    int max_img = ops->max_images;
    if (o.max_images > 0 && (max_img == 0 || o.max_images < max_img))
        max_img = o.max_images;

    if ((rc = check_media(ops, req, out, &images, &estimate)) < 0)
        goto out;
    /* Refuse before encoding anything: over these limits the provider
     * answers 413, which would waste an attempt of the call budget. */
    if ((max_img > 0 && images > (size_t)max_img) || estimate > max_req) {
        too_large(out);
        ev_llm_result_set_error(out,
                                "request too large for %s (%zu images, ~%zu bytes; limits %d "
                                "images, %zu bytes)",
                                ops->name, images, estimate, max_img, max_req);
        goto out;
    }
    rc = ops->build_body(&body, &body_len, req, model, cfg);
    bool limited = !ops->limit_is_media || ev_provider_req_has_media(req);
    if (rc == EV_ETOOBIG || (rc == 0 && limited && body_len > max_req)) {
        rc = 0;
        too_large(out);
        ev_llm_result_set_error(out, "request of %zu bytes exceeds %s's %zu", body_len, ops->name,
                                max_req);
        goto out;
    }
    if (rc < 0) {
        out->outcome = EV_LLM_BAD_REQUEST;
        out->err = rc;
        ev_llm_result_set_error(out, "unusable request (no text or media, unsupported type "
                                     "or empty file)");
        goto out;
    }
    url = ops->call_url(cfg->base_url, model);
    rc = ev_llm_send(http, url, body, body_len, cfg->api_key, ops->auth_prefix, &o,
                     ops->parse_response, out, stop);
out:
    if (cfg)
        ev_llm_result_scrub(out, cfg->api_key);
    free(url);
    free(body);
    return rc;
}

ev_model_status_t ev_provider_check_model(const ev_provider_ops_t *ops,
                                          const ev_provider_config_t *cfg, ev_http_t *http,
                                          int timeout_ms, const char *model, char *msg,
                                          size_t msglen)
{
    char *url = ops->model_info_url(cfg->base_url, model);
    ev_http_request_t hreq = {
        .url = url,
        .secret = cfg->api_key,
        .secret_prefix = ops->auth_prefix,
        .timeout_ms = timeout_ms > 0 ? timeout_ms : 10000,
        .connect_timeout_ms = timeout_ms > 0 ? timeout_ms : 10000,
    };
    ev_http_response_t resp;
    ev_model_status_t st = EV_MODEL_UNCHECKED;
    int rc = ev_http_get(http, &hreq, &resp);
    if (rc < 0)
        snprintf(msg, msglen, "%s", resp.error[0] ? resp.error : ev_strerror(rc));
    else
        st = ops->parse_model_info(&resp, model, msg, msglen);
    /* A server echoing the key never gets it into the message. */
    if (cfg->api_key && ev_secret_appears_in(cfg->api_key, msg, strlen(msg)))
        snprintf(msg, msglen, "(message withheld: it echoed the key)");
    ev_http_response_free(&resp);
    free(url);
    return st;
}
