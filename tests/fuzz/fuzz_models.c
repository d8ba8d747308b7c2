/*
 * fuzz_models.c - libFuzzer target for the model-metadata parsers of the
 * provider tables (ev_provider_ops_t.parse_model_info): Gemini's model record
 * and the OpenAI-shaped model list. The first input byte picks the table
 * (even: Gemini, odd: OpenAI-shaped), the rest is fuzz_llm.h's layout
 * (status line, body). Checks: a known status, a terminated message that
 * never holds the key. Single-threaded.
 */
#include "fuzz_llm.h"

#include "ev/providers.h"

static int fuzz_models(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const ev_provider_ops_t *ops = data[0] % 2 ? &ev_provider_groq : &ev_provider_gemini;
    data++;
    size--;
    fuzz_head_t h = fuzz_read_head(data, size);
    ev_http_response_t resp;
    ev_http_response_init(&resp);
    resp.status = h.status;
    fuzz_set_body(&resp, data + h.off, size - h.off);

    char msg[160];
    memset(msg, 'x', sizeof(msg));
    ev_model_status_t st = ops->parse_model_info(&resp, "gemini-3.5-flash-lite", msg, sizeof(msg));
    FUZZ_CHECK(st >= EV_MODEL_AVAILABLE && st <= EV_MODEL_UNCHECKED);
    FUZZ_CHECK(fuzz_terminated(msg, sizeof(msg)));
    /* Only a 200 says a model is there. */
    FUZZ_CHECK(st != EV_MODEL_AVAILABLE || resp.status == 200);
    ev_http_response_free(&resp);
    return 0;
}

#ifndef EV_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_models(data, size);
}
#endif
