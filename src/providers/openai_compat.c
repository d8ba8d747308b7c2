/*
 * providers/openai_compat.c - an optional third provider speaking the
 * OpenAI chat-completions format: OpenAI itself, OpenRouter, vLLM, Ollama.
 *
 * It is Groq's wire format at another base URL (OPENAI_COMPAT_BASE_URL):
 * bearer key, json_object mode, images as data URLs for the vision models
 * (OPENAI_COMPAT_VISION_MODELS; without them it answers only text checks),
 * no PDF input (the PDF check sends the extracted text). Servers differ in
 * their limits, so it claims none of its own: MAX_IMAGES and
 * OPENAI_COMPAT_MAX_REQUEST_BYTES bound what is sent. Immutable; no state.
 */
#include "ev/groq.h"
#include "ev/providers.h"

const ev_provider_ops_t ev_provider_openai_compat = {
    .id = EV_PROVIDER_OPENAI_COMPAT,
    .name = "openai_compat",
    .env = "OPENAI_COMPAT",
    .caps = EV_PROVIDER_CAP_IMAGES | EV_PROVIDER_CAP_VISION_MODELS,
    .max_images = 0,
    /* The largest request OpenAI documents for chat completions with images. */
    .max_request = (size_t)50 * 1000 * 1000,
    .limit_is_media = true,
    .auth_prefix = "Authorization: Bearer ",
    .image_types = ev_provider_openai_image_types,
    .image_tokens = 1600,
    .pdf_page_tokens = 0,
    .call_url = ev_provider_openai_call_url,
    .build_body = ev_provider_openai_body,
    .parse_response = ev_groq_parse_response,
    .quota_reset_us = ev_provider_openai_quota_reset,
    .model_info_url = ev_provider_openai_models_url,
    .parse_model_info = ev_provider_openai_model_info,
};
