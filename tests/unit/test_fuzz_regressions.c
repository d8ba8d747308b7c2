/*
 * test_fuzz_regressions.c - replays the fuzzers' seed corpora and every
 * input that once broke a fuzz target through the very same harness code.
 *
 * How: the harnesses in tests/fuzz/ are included here with EV_FUZZ_REPLAY
 * (no libFuzzer entry point) and FUZZ_CHECK turned into a CUnit assertion
 * that names the input file. For each target, every file of
 * tests/fuzz/corpus/<name>/ and tests/fuzz/regressions/<name>/ is read and
 * passed to fuzz_<name>(), so a fixed crash stays fixed in ctest, under ASan
 * and UBSan in the build-asan stage, without clang or libFuzzer.
 * Single-threaded.
 */
#include <CUnit/Basic.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *current_input = "";

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        int fuzz_ok_ = !!(cond);                                                                   \
        if (!fuzz_ok_)                                                                             \
            fprintf(stderr, "\n%s: FUZZ_CHECK failed: %s\n", current_input, #cond);                \
        CU_assertImplementation(fuzz_ok_ ? CU_TRUE : CU_FALSE, __LINE__, #cond, __FILE__, "",      \
                                CU_FALSE);                                                         \
    } while (0)
#define EV_FUZZ_REPLAY 1

#include "../fuzz/fuzz_api_event.c"
#include "../fuzz/fuzz_api_upload.c"
#include "../fuzz/fuzz_config.c"
#include "../fuzz/fuzz_gemini.c"
#include "../fuzz/fuzz_groq.c"
#include "../fuzz/fuzz_image.c"
#include "../fuzz/fuzz_models.c"
#include "../fuzz/fuzz_prompt.c"
#include "../fuzz/fuzz_retryhint.c"
#include "../fuzz/fuzz_verdict.c"
#include "runner.h"

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

static const char *source_dir(void)
{
    const char *s = getenv("EV_SOURCE_DIR");
    return s && *s ? s : EV_SOURCE_DIR;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            unsigned char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Runs fn on every regular file of <source>/tests/fuzz/<kind>/<name>/ in name
 * order; returns how many ran (0 when the directory does not exist). */
static int replay_dir(const char *kind, const char *name, fuzz_fn fn)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/tests/fuzz/%s/%s", source_dir(), kind, name);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    char **names = NULL;
    size_t count = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char **more = realloc(names, (count + 1) * sizeof(*names));
        CU_ASSERT_PTR_NOT_NULL_FATAL(more);
        names = more;
        names[count++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, count, sizeof(*names), cmp_names);
    int ran = 0;
    for (size_t i = 0; i < count; i++) {
        char path[1536];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        size_t len = 0;
        unsigned char *data = read_all(path, &len);
        CU_ASSERT_PTR_NOT_NULL(data);
        if (data) {
            current_input = path;
            fn(data, len);
            current_input = "";
            ran++;
        }
        free(data);
        free(names[i]);
    }
    free(names);
    return ran;
}

/* Every target has a non-empty committed corpus; regressions are optional. */
static void replay(const char *name, fuzz_fn fn)
{
    int seeds = replay_dir("corpus", name, fn);
    CU_ASSERT(seeds > 0);
    replay_dir("regressions", name, fn);
}

static void test_gemini(void)
{
    replay("gemini", fuzz_gemini);
}
static void test_groq(void)
{
    replay("groq", fuzz_groq);
}
static void test_models(void)
{
    replay("models", fuzz_models);
}
static void test_verdict(void)
{
    replay("verdict", fuzz_verdict);
}
static void test_retryhint(void)
{
    replay("retryhint", fuzz_retryhint);
}
static void test_config(void)
{
    replay("config", fuzz_config);
}
static void test_image(void)
{
    replay("image", fuzz_image);
}
static void test_prompt(void)
{
    replay("prompt", fuzz_prompt);
}
static void test_api_event(void)
{
    replay("api_event", fuzz_api_event);
}
static void test_api_upload(void)
{
    replay("api_upload", fuzz_api_upload);
}

static const ev_test_t fuzz_regressions_tests[] = {
    {"gemini response parser", test_gemini},
    {"groq response parser", test_groq},
    {"model-metadata parsers", test_models},
    {"verdict extractor", test_verdict},
    {"retry hints", test_retryhint},
    {"config loader", test_config},
    {"prompt framing", test_prompt},
    {"file type and image header", test_image},
    {"API event body", test_api_event},
    {"API multipart upload", test_api_upload},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"fuzz_regressions", NULL, NULL, fuzz_regressions_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
