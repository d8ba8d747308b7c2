/*
 * fuzz_api_event.c - libFuzzer target for ev_api_parse_event()
 * (include/ev/api_request.h): the JSON body of POST /v1/events, straight from
 * the network.
 *
 * Checks: success and failure are exclusive and complete: on success name and
 * theme are non-empty and within their limits, every string is NUL-free and no
 * longer than its limit, and the error is untouched; on failure the request is
 * cleared and the error has an HTTP status of 400, 413 or 422, a code and a
 * message. The first byte picks allow_private. Single-threaded.
 */
#include "fuzz_common.h"

#include "ev/api_request.h"

static int fuzz_api_event(const uint8_t *data, size_t size)
{
    bool allow_private = size > 0 && (data[0] & 1);
    ev_api_event_req_t r;
    ev_api_error_t e = {0};
    int rc = ev_api_parse_event((const char *)data, size, allow_private, &r, &e);
    if (rc == 0) {
        FUZZ_CHECK(e.status == 0);
        FUZZ_CHECK(r.name && r.name[0] && strlen(r.name) <= 200);
        FUZZ_CHECK(r.theme && r.theme[0] && strlen(r.theme) <= 2000);
        FUZZ_CHECK(!r.rules || strlen(r.rules) <= 20000);
        FUZZ_CHECK(!r.webhook_url || strlen(r.webhook_url) <= 2000);
    } else {
        FUZZ_CHECK(e.status == 400 || e.status == 413 || e.status == 422);
        FUZZ_CHECK(e.code[0] && e.message[0]);
        FUZZ_CHECK(!r.name && !r.theme && !r.rules && !r.webhook_url);
    }
    ev_api_event_req_clear(&r);
    return 0;
}

#ifndef EV_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_api_event(data, size);
}
#endif
