/*
 * test_sandbox.c - hostile PDFs are parsed in a limited child and fail with a
 * reason; honest PDFs of the same sizes pass; the caller is free again within
 * the deadline and the child's peak memory (from the kernel's accounting)
 * stays within its budget.
 *
 * The sandbox re-executes this test program as its parse server (the test
 * main hands EV_SANDBOX_SERVER_ARG to ev_sandbox_server_main).
 */
#include "ev/error.h"
#include "ev/sandbox.h"
#include "ev/util.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hostile.h"
#include "runner.h"

#define TEXT_MAX (64 * 1024)
#define PAGE_TEXT_MAX (16 * 1024)
/* What the child may hold beyond its budget: the server's own pages it
 * shares (poppler and GLib mapped, the file itself). */
#define BASELINE_KB (96 * 1024)

static ev_sandbox_t *make(int cpu_ms, int memory_mb, int timeout_ms)
{
    ev_sandbox_options_t o = EV_SANDBOX_OPTIONS_INIT;
    o.cpu_ms = cpu_ms;
    o.memory_mb = memory_mb;
    o.timeout_ms = timeout_ms;
    ev_sandbox_t *sb = NULL;
    CU_ASSERT_FATAL(ev_sandbox_new(&sb, &o) == 0);
    return sb;
}

/* Parses and returns the code; *reason and *res filled. */
static int parse(ev_sandbox_t *sb, const char *pdf, size_t len, ev_sandbox_pdf_t *res,
                 char **reason)
{
    return ev_sandbox_pdf(sb, res, pdf, len, 100, TEXT_MAX, PAGE_TEXT_MAX, reason);
}

static void test_honest_pdf_passes(void)
{
    ev_sandbox_t *sb = make(2000, 512, 10000);
    ev_hostile_params_t p = {.pages = 3};
    size_t len;
    char *pdf = ev_hostile_pdf(EV_HOSTILE_HONEST, &p, &len);
    ev_sandbox_pdf_t res;
    char *why = NULL;
    CU_ASSERT_EQUAL(parse(sb, pdf, len, &res, &why), 0);
    CU_ASSERT_PTR_NULL(why);
    CU_ASSERT_EQUAL(res.pages, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.text, "Solar powered bus stops, page 3"));
    CU_ASSERT_FALSE(res.usage.limit_killed);
    CU_ASSERT_TRUE(res.usage.max_rss_kb > 0);
    ev_sandbox_pdf_clear(&res);
    free(pdf);
    ev_sandbox_free(sb);
}

static void test_honest_hundred_pages_with_defaults(void)
{
    ev_sandbox_options_t d = EV_SANDBOX_OPTIONS_INIT;
    ev_sandbox_t *sb = make(d.cpu_ms, d.memory_mb, d.timeout_ms);
    ev_hostile_params_t p = {.pages = 100, .pad = 2 * 1024 * 1024};
    size_t len;
    char *pdf = ev_hostile_pdf(EV_HOSTILE_HONEST, &p, &len);
    ev_sandbox_pdf_t res;
    char *why = NULL;
    CU_ASSERT_EQUAL(parse(sb, pdf, len, &res, &why), 0);
    CU_ASSERT_EQUAL(res.pages, 100);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.text, "page 100"));
    free(why);
    ev_sandbox_pdf_clear(&res);
    free(pdf);
    ev_sandbox_free(sb);
}

/* A bomb of `kind` fails for a limit, costs the caller nothing, and its
 * child stayed within the memory budget; an honest PDF of the same size
 * passes in the same sandbox afterwards. */
static void expect_bomb_refused(ev_hostile_pdf_t kind, size_t mib, int cpu_ms, int memory_mb,
                                const char *why_expected)
{
    ev_sandbox_t *sb = make(cpu_ms, memory_mb, 60000);
    ev_hostile_params_t p = {.mib = mib};
    size_t len;
    char *pdf = ev_hostile_pdf(kind, &p, &len);
    ev_sandbox_pdf_t res;
    char *why = NULL;
    int rc = parse(sb, pdf, len, &res, &why);
    if (getenv("EV_TEST_VERBOSE"))
        fprintf(stderr, "\n  %zu bytes: rc %d, %s; cpu %lld us, peak %lld KiB, %lld ms\n", len, rc,
                why ? why : "", (long long)res.usage.cpu_us, (long long)res.usage.max_rss_kb,
                (long long)res.usage.wall_ms);
    CU_ASSERT_EQUAL(rc, EV_ELIMIT);
    CU_ASSERT_TRUE(res.usage.limit_killed);
    CU_ASSERT_PTR_NOT_NULL_FATAL(why);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "built to exhaust the validator"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, why_expected));
    /* The kernel's accounting of the child, not a timer. */
    CU_ASSERT_TRUE(res.usage.max_rss_kb <= (int64_t)memory_mb * 1024 + BASELINE_KB);
    CU_ASSERT_TRUE(res.usage.cpu_us <= (int64_t)cpu_ms * 1000 + 1000 * 1000);
    /* Free within the deadline: a limit ended it, not the clock. */
    CU_ASSERT_TRUE(res.usage.wall_ms < 60000);
    free(why);
    why = NULL;

    ev_hostile_params_t h = {.pages = 2, .pad = len};
    size_t hlen;
    char *honest = ev_hostile_pdf(EV_HOSTILE_HONEST, &h, &hlen);
    CU_ASSERT_TRUE(hlen >= len);
    ev_sandbox_pdf_t ok;
    CU_ASSERT_EQUAL(parse(sb, honest, hlen, &ok, &why), 0);
    CU_ASSERT_EQUAL(ok.pages, 2);
    free(why);
    ev_sandbox_pdf_clear(&ok);
    free(honest);
    free(pdf);
    ev_sandbox_free(sb);
}

static void test_text_bomb(void)
{
    expect_bomb_refused(EV_HOSTILE_TEXT_BOMB, 400, 1000, 512,
                        "PDF needs more than 1 s of processing; it may be malformed or built to "
                        "exhaust the validator");
}

static void test_string_bomb_memory(void)
{
    /* CPU to spare: the memory limit ends it. */
    expect_bomb_refused(EV_HOSTILE_STRING_BOMB, 1024, 30000, 48,
                        "PDF needs more than 48 MiB of memory to process; it may be malformed or "
                        "built to exhaust the validator");
}

static void test_zero_bomb(void)
{
    expect_bomb_refused(EV_HOSTILE_ZERO_BOMB, 1024, 1000, 512, "PDF needs more than 1 s");
}

/* Deep nesting: refused or judged, never a hang or a crash of the caller. */
static void test_deep_nesting(void)
{
    ev_sandbox_t *sb = make(2000, 256, 10000);
    ev_hostile_params_t p = {.depth = 200000};
    ev_hostile_pdf_t kinds[] = {EV_HOSTILE_NESTED, EV_HOSTILE_DEEP_PAGES};
    for (size_t i = 0; i < EV_ARRAY_LEN(kinds); i++) {
        p.depth = kinds[i] == EV_HOSTILE_NESTED ? 200000 : 5000;
        size_t len;
        char *pdf = ev_hostile_pdf(kinds[i], &p, &len);
        ev_sandbox_pdf_t res;
        char *why = NULL;
        int rc = parse(sb, pdf, len, &res, &why);
        CU_ASSERT_TRUE(rc == 0 || rc == EV_EPARSE || rc == EV_ELIMIT);
        CU_ASSERT_TRUE(rc == 0 ? why == NULL : why != NULL && strncmp(why, "PDF ", 4) == 0);
        CU_ASSERT_TRUE(res.usage.max_rss_kb <= 256 * 1024 + BASELINE_KB);
        free(why);
        ev_sandbox_pdf_clear(&res);
        free(pdf);
    }
    ev_sandbox_free(sb);
}

static void test_truncated(void)
{
    ev_sandbox_t *sb = make(2000, 256, 10000);
    ev_hostile_params_t p = {0};
    size_t len;
    char *pdf = ev_hostile_pdf(EV_HOSTILE_TRUNCATED, &p, &len);
    ev_sandbox_pdf_t res;
    char *why = NULL;
    CU_ASSERT_EQUAL(parse(sb, pdf, len, &res, &why), EV_EPARSE);
    CU_ASSERT_PTR_NOT_NULL(why);
    CU_ASSERT_PTR_NOT_NULL(why ? strstr(why, "damaged or truncated") : NULL);
    CU_ASSERT_FALSE(res.usage.limit_killed);
    free(why);
    free(pdf);
    ev_sandbox_free(sb);
}

static void test_page_limit_is_the_files_fault(void)
{
    ev_sandbox_t *sb = make(2000, 256, 10000);
    ev_hostile_params_t p = {.pages = 5};
    size_t len;
    char *pdf = ev_hostile_pdf(EV_HOSTILE_HONEST, &p, &len);
    ev_sandbox_pdf_t res;
    char *why = NULL;
    CU_ASSERT_EQUAL(ev_sandbox_pdf(sb, &res, pdf, len, 3, TEXT_MAX, PAGE_TEXT_MAX, &why),
                    EV_ELIMIT);
    CU_ASSERT_STRING_EQUAL(why, "PDF has 5 pages, limit is 3");
    CU_ASSERT_FALSE(res.usage.limit_killed);
    free(why);
    free(pdf);
    ev_sandbox_free(sb);
}

/* Text is bounded per page and in total while it is extracted. */
static void test_text_bounds(void)
{
    ev_sandbox_t *sb = make(2000, 256, 10000);
    ev_hostile_params_t p = {.pages = 20};
    size_t len;
    char *pdf = ev_hostile_pdf(EV_HOSTILE_HONEST, &p, &len);
    ev_sandbox_pdf_t res;
    char *why = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_sandbox_pdf(sb, &res, pdf, len, 100, 400, 40, &why), 0);
    CU_ASSERT_TRUE(res.text_len <= 400);
    CU_ASSERT_TRUE(res.truncated);
    /* Page 2's first words appear: page 1 could not take the whole budget. */
    CU_ASSERT_PTR_NOT_NULL(strstr(res.text, "Solar powered bus stops, page 2"));
    CU_ASSERT_PTR_NULL(strstr(res.text, "light the street"));
    ev_sandbox_pdf_clear(&res);
    free(pdf);
    ev_sandbox_free(sb);
}

/* Under contention: several threads parse honest files and one a bomb. */
typedef struct worker_arg {
    ev_sandbox_t *sb;
    bool bomb;
    int ok, refused, other;
} worker_arg_t;

static void *worker(void *arg)
{
    worker_arg_t *w = arg;
    ev_hostile_params_t p = {.pages = 2, .mib = 300};
    size_t len;
    char *pdf = ev_hostile_pdf(w->bomb ? EV_HOSTILE_TEXT_BOMB : EV_HOSTILE_HONEST, &p, &len);
    for (int i = 0; i < (w->bomb ? 2 : 15); i++) {
        ev_sandbox_pdf_t res;
        char *why = NULL;
        int rc = parse(w->sb, pdf, len, &res, &why);
        if (rc == 0 && res.pages == 2)
            w->ok++;
        else if (rc == EV_ELIMIT)
            w->refused++;
        else
            w->other++;
        free(why);
        ev_sandbox_pdf_clear(&res);
    }
    free(pdf);
    return NULL;
}

static void test_concurrent_callers(void)
{
    ev_sandbox_t *sb = make(1000, 256, 20000);
    worker_arg_t args[5];
    pthread_t th[5];
    for (int i = 0; i < 5; i++) {
        args[i] = (worker_arg_t){.sb = sb, .bomb = i == 0};
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, worker, &args[i]) == 0);
    }
    for (int i = 0; i < 5; i++)
        pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(args[0].refused, 2);
    for (int i = 1; i < 5; i++) {
        CU_ASSERT_EQUAL(args[i].ok, 15);
        CU_ASSERT_EQUAL(args[i].other, 0);
    }
    ev_sandbox_free(sb);
}

static const ev_test_t sandbox_tests[] = {
    {"honest PDF passes", test_honest_pdf_passes},
    {"honest 100 pages with the defaults", test_honest_hundred_pages_with_defaults},
    {"text bomb", test_text_bomb},
    {"string bomb, memory limit", test_string_bomb_memory},
    {"zero-filled streams", test_zero_bomb},
    {"deep nesting", test_deep_nesting},
    {"truncated", test_truncated},
    {"page limit is the file's fault", test_page_limit_is_the_files_fault},
    {"text bounded per page and in total", test_text_bounds},
    {"concurrent callers", test_concurrent_callers},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"sandbox", NULL, NULL, sandbox_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
