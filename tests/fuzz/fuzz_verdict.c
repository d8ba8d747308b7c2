/*
 * fuzz_verdict.c - libFuzzer target for the verdict extractor
 * (include/ev/verdict.h). The input is a model's answer text exactly as
 * received: not NUL-terminated, so ASan catches any read past its end.
 * Checked for any input: ev_verdict_find_object() returns a slice inside the
 * text that starts with '{' and ends with '}'; ev_verdict_parse() either
 * fails with EV_EPARSE and a reason, or returns a score in 0..1 and a
 * non-empty, NUL-terminated reason of at most EV_VERDICT_REASON_MAX bytes;
 * a small or absent `why` buffer is never overrun; read as a combined answer
 * (ev_verdict_parse_parts), only the parts asked for come back, each a valid
 * verdict. Single-threaded.
 */
#include "fuzz_common.h"

#include "ev/error.h"
#include "ev/verdict.h"

#include <math.h>

static int fuzz_verdict(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy: libFuzzer's own buffer is exact too, but the
     * replay test passes a larger one. */
    char *text = malloc(size ? size : 1);
    if (!text)
        abort();
    if (size)
        memcpy(text, data, size);

    size_t start = 0, olen = 0;
    int frc = ev_verdict_find_object(text, size, &start, &olen);
    FUZZ_CHECK(frc == 0 || frc == EV_EPARSE);
    if (frc == 0) {
        FUZZ_CHECK(olen >= 2 && start < size && olen <= size - start);
        FUZZ_CHECK(text[start] == '{' && text[start + olen - 1] == '}');
    }

    ev_verdict_t v;
    char why[96];
    memset(why, 'x', sizeof(why));
    int rc = ev_verdict_parse(&v, text, size, why, sizeof(why));
    FUZZ_CHECK(rc == 0 || rc == EV_EPARSE);
    if (rc == 0) {
        FUZZ_CHECK(frc == 0);
        FUZZ_CHECK(isfinite(v.score) && v.score >= 0.0 && v.score <= 1.0);
        FUZZ_CHECK(fuzz_terminated(v.reason, sizeof(v.reason)));
        FUZZ_CHECK(v.reason[0] != '\0');
    } else {
        FUZZ_CHECK(fuzz_terminated(why, sizeof(why)));
        FUZZ_CHECK(why[0] != '\0');
    }

    /* The same answer with a 1-byte and with no reason buffer. */
    ev_verdict_t v2;
    char tiny[1] = {'x'};
    FUZZ_CHECK(ev_verdict_parse(&v2, text, size, tiny, sizeof(tiny)) == rc);
    FUZZ_CHECK(tiny[0] == '\0' || rc == 0);
    FUZZ_CHECK(ev_verdict_parse(&v2, text, size, NULL, 0) == rc);
    if (rc == 0)
        FUZZ_CHECK(v2.valid == v.valid && v2.score == v.score && strcmp(v2.reason, v.reason) == 0);

    /* The same text as a combined answer (CHECK_MODE=combined): only parts
     * asked for, each a valid verdict; success means at least one. */
    static const char *const names[] = {"theme", "pdf", "image"};
    ev_verdict_t parts[3];
    unsigned got = 0;
    int prc = ev_verdict_parse_parts(parts, &got, text, size, names, 3, why, sizeof(why));
    FUZZ_CHECK(prc == 0 || prc == EV_EPARSE);
    FUZZ_CHECK((got & ~7u) == 0 && (prc == 0) == (got != 0));
    for (int i = 0; i < 3; i++) {
        if (!(got & (1u << i)))
            continue;
        FUZZ_CHECK(isfinite(parts[i].score) && parts[i].score >= 0.0 && parts[i].score <= 1.0);
        FUZZ_CHECK(fuzz_terminated(parts[i].reason, sizeof(parts[i].reason)));
        FUZZ_CHECK(parts[i].reason[0] != '\0');
    }
    free(text);
    return 0;
}

#ifndef EV_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_verdict(data, size);
}
#endif
