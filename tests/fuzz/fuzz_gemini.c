/*
 * fuzz_gemini.c - libFuzzer target for ev_gemini_parse_response()
 * (include/ev/gemini.h): any status, any body (success shapes, every error
 * shape, arrays, HTML, truncated JSON). Input layout and checks: fuzz_llm.h.
 * Single-threaded.
 */
#include "fuzz_llm.h"

#include "ev/gemini.h"

static int fuzz_gemini(const uint8_t *data, size_t size)
{
    fuzz_head_t h = fuzz_read_head(data, size);
    ev_http_response_t resp;
    ev_http_response_init(&resp);
    resp.status = h.status;
    fuzz_set_body(&resp, data + h.off, size - h.off);

    ev_llm_result_t r;
    ev_llm_result_init(&r);
    ev_gemini_parse_response(&r, &resp, h.max_wait_ms);
    fuzz_check_result(&r, &resp, h.max_wait_ms);
    ev_llm_result_free(&r);
    ev_http_response_free(&resp);
    return 0;
}

#ifndef EV_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_gemini(data, size);
}
#endif
