/*
 * fuzz_common.h - what every libFuzzer harness in tests/fuzz shares.
 *
 * Each fuzz_<name>.c puts its work in a static function fuzz_<name>() and
 * defines LLVMFuzzerTestOneInput() around it unless EV_FUZZ_REPLAY is
 * defined: tests/unit/test_fuzz_regressions.c includes the harnesses with
 * EV_FUZZ_REPLAY and its own FUZZ_CHECK (a CUnit assertion) to replay the
 * committed corpora and crash inputs through the very same code in ctest.
 *
 * FUZZ_CHECK states a property the module's header promises for any input;
 * under the fuzzer a broken promise aborts, which libFuzzer reports as a
 * crash with its input saved.
 */
#ifndef EV_FUZZ_COMMON_H
#define EV_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FUZZ_CHECK
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)
#endif

/* A NUL-terminated heap copy of the input (parsers that take C strings). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* True when the n-byte buffer holds a NUL within its bounds. */
static inline int fuzz_terminated(const char *buf, size_t n)
{
    return memchr(buf, '\0', n) != NULL;
}

#endif
