/*
 * fuzz_retryhint.c - libFuzzer target for the retry-delay parsers
 * (include/ev/retryhint.h): the input, cut at its first NUL, goes through
 * all four parsers. Checked for any input: no crash, no read past the NUL
 * (ASan), no UB (UBSan), and the documented result contract: on success *ms
 * is -1 (an HTTP-date) or 0..EV_RETRYHINT_MAX_MS, on failure exactly -1 and
 * one of the documented codes. Single-threaded.
 */
#include "fuzz_common.h"

#include "ev/error.h"
#include "ev/retryhint.h"

static void check(int rc, int64_t ms, int other_failure, int allow_no_hint)
{
    if (rc == 0) {
        FUZZ_CHECK(ms >= 0 || (allow_no_hint && ms == -1));
        FUZZ_CHECK(ms <= EV_RETRYHINT_MAX_MS);
    } else {
        FUZZ_CHECK(rc == other_failure);
        FUZZ_CHECK(ms == -1);
    }
}

static int fuzz_retryhint(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    int64_t ms = 12345;
    int rc = ev_retryhint_gemini_delay(&ms, s);
    check(rc, ms, EV_EPARSE, 0);
    ms = 12345;
    rc = ev_retryhint_retry_after(&ms, s);
    check(rc, ms, EV_EPARSE, 1);
    ms = 12345;
    rc = ev_retryhint_duration(&ms, s);
    check(rc, ms, EV_EPARSE, 0);
    ms = 12345;
    rc = ev_retryhint_from_message(&ms, s);
    check(rc, ms, EV_ENOTFOUND, 0);

    /* A duration that parses alone is also found after "retry in " (except
     * the bare "0", which has no unit and is only accepted on its own). */
    int64_t alone = -1;
    size_t n = strlen(s);
    while (n > 0 && strchr(" \t\r\n", s[n - 1]))
        n--;
    if (size < 256 && ev_retryhint_duration(&alone, s) == 0 && s[0] >= '0' && s[0] <= '9' &&
        !(n == 1 && s[0] == '0')) {
        char msg[300];
        snprintf(msg, sizeof(msg), "Please retry in %s", s);
        int64_t found = -1;
        FUZZ_CHECK(ev_retryhint_from_message(&found, msg) == 0);
        FUZZ_CHECK(found == alone);
    }
    free(s);
    return 0;
}

#ifndef EV_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_retryhint(data, size);
}
#endif
