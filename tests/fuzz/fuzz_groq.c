/*
 * fuzz_groq.c - libFuzzer target for ev_groq_parse_response()
 * (include/ev/groq.h), headers included. After the status line of
 * fuzz_llm.h come header lines "name: value" up to an empty line (lines
 * without ':' are skipped, as the HTTP layer skips them; at most
 * EV_HTTP_MAX_HEADERS are kept by ev_http_response_add_header), then the
 * body. Without an empty line everything is headers and the body is empty.
 * Checks: fuzz_llm.h. Single-threaded.
 */
#include "fuzz_llm.h"

#include "ev/groq.h"

static int fuzz_groq(const uint8_t *data, size_t size)
{
    fuzz_head_t h = fuzz_read_head(data, size);
    ev_http_response_t resp;
    ev_http_response_init(&resp);
    resp.status = h.status;

    size_t p = h.off;
    while (p < size) {
        const uint8_t *nl = memchr(data + p, '\n', size - p);
        size_t end = nl ? (size_t)(nl - data) : size;
        size_t len = end - p;
        if (len > 0 && data[end - 1] == '\r')
            len--;
        if (len == 0) { /* the empty line: the body follows */
            p = end + 1;
            fuzz_set_body(&resp, data + p, p < size ? size - p : 0);
            break;
        }
        const uint8_t *colon = memchr(data + p, ':', len);
        if (colon) {
            size_t nlen = (size_t)(colon - (data + p));
            ev_http_response_add_header(&resp, (const char *)data + p, nlen,
                                        (const char *)colon + 1, len - nlen - 1);
        }
        p = end + 1;
    }

    ev_llm_result_t r;
    ev_llm_result_init(&r);
    ev_groq_parse_response(&r, &resp, h.max_wait_ms);
    fuzz_check_result(&r, &resp, h.max_wait_ms);
    ev_llm_result_free(&r);
    ev_http_response_free(&resp);
    return 0;
}

#ifndef EV_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_groq(data, size);
}
#endif
