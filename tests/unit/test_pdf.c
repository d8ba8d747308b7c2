/*
 * test_pdf.c - local PDF checks (encrypted, damaged, truncated, page limit)
 * and bounded, normalised text extraction.
 *
 * Fixtures are built in memory: build_pdf() (ev_hostile_text_pdf) writes a
 * minimal PDF with a correct xref table, one content stream per page and a
 * standard font. Only the encrypted PDFs (made once with qpdf) come from
 * tests/fixtures/.
 */
#include "ev/error.h"
#include "ev/pdf.h"
#include "ev/util.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hostile.h"
#include "runner.h"

/* ---- fixtures --------------------------------------------------------------- */

static char *build_pdf(size_t *len, int pages, const char *text)
{
    return ev_hostile_text_pdf(pages, text, false, NULL, len);
}

static char *read_fixture(const char *name, size_t *len)
{
    const char *dir = getenv("EV_SOURCE_DIR");
    if (!dir)
        dir = EV_SOURCE_DIR;
    char *path = ev_asprintf("%s/tests/fixtures/%s", dir, name);
    FILE *fp = fopen(path, "rb");
    free(path);
    CU_ASSERT_FATAL(fp != NULL);
    ev_hbuf_t b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        ev_hbuf_add(&b, chunk, n);
    fclose(fp);
    *len = b.len;
    return b.p;
}

static const ev_pdf_options_t default_opts = EV_PDF_OPTIONS_INIT;

/* Opens and expects failure with exactly `code` and `reason`. */
static void expect_refused(const void *data, size_t len, int max_pages, int code,
                           const char *reason)
{
    ev_pdf_options_t opts = default_opts;
    opts.max_pages = max_pages;
    ev_pdf_t *pdf = (ev_pdf_t *)0x1;
    char *why = NULL;
    int rc = ev_pdf_open(&pdf, data, len, &opts, &why);
    CU_ASSERT_EQUAL(rc, code);
    CU_ASSERT_PTR_NULL(pdf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(why);
    if (strcmp(why, reason) != 0)
        fprintf(stderr, "\n  reason: got \"%s\"\n     expected \"%s\"\n", why, reason);
    CU_ASSERT_STRING_EQUAL(why, reason);
    free(why);
    ev_pdf_free(pdf);
}

/* ---- tests -------------------------------------------------------------------- */

static void test_valid_pdf_text(void)
{
    size_t len;
    char *data = build_pdf(&len, 1, "Hello event");
    ev_pdf_t *pdf = NULL;
    char *why = (char *)"unset";
    CU_ASSERT_EQUAL_FATAL(ev_pdf_open(&pdf, data, len, &default_opts, &why), 0);
    CU_ASSERT_PTR_NULL(why);
    CU_ASSERT_EQUAL(ev_pdf_page_count(pdf), 1);

    char *text = NULL;
    size_t tlen = 99;
    bool cut = true;
    CU_ASSERT_EQUAL(ev_pdf_text(pdf, &text, &tlen, &cut, 0, 4096), 0);
    CU_ASSERT_STRING_EQUAL(text, "Hello event");
    CU_ASSERT_EQUAL(tlen, strlen("Hello event"));
    CU_ASSERT_FALSE(cut);
    free(text);
    ev_pdf_free(pdf);
    free(data);
}

static void test_non_ascii_text_is_utf8(void)
{
    /* WinAnsiEncoding 0xE9 is e-acute: the output must be UTF-8 "Café". */
    size_t len;
    char *data = build_pdf(&len, 1, "Caf\xe9 event");
    ev_pdf_t *pdf = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_pdf_open(&pdf, data, len, &default_opts, NULL), 0);
    char *text = NULL;
    size_t tlen;
    CU_ASSERT_EQUAL(ev_pdf_text(pdf, &text, &tlen, NULL, 0, 4096), 0);
    CU_ASSERT_STRING_EQUAL(text, "Caf\xc3\xa9 event");
    free(text);
    ev_pdf_free(pdf);
    free(data);
}

static void test_page_limit(void)
{
    size_t len;
    char *data = build_pdf(&len, 150, "Page");
    expect_refused(data, len, 100, EV_ELIMIT, "PDF has 150 pages, limit is 100");

    /* Exactly at the limit is fine. */
    ev_pdf_options_t opts = default_opts;
    opts.max_pages = 150;
    ev_pdf_t *pdf = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_pdf_open(&pdf, data, len, &opts, NULL), 0);
    CU_ASSERT_EQUAL(ev_pdf_page_count(pdf), 150);
    ev_pdf_free(pdf);
    free(data);
}

static void test_text_bounded_by_pages_and_bytes(void)
{
    size_t len;
    char *data = build_pdf(&len, 12, "Page");
    ev_pdf_t *pdf = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_pdf_open(&pdf, data, len, &default_opts, NULL), 0);

    char *text;
    size_t tlen;
    bool cut;
    /* First three pages only: each page ends a line. */
    CU_ASSERT_EQUAL(ev_pdf_text(pdf, &text, &tlen, &cut, 3, 4096), 0);
    CU_ASSERT_STRING_EQUAL(text, "Page 1\nPage 2\nPage 3");
    CU_ASSERT_TRUE(cut);
    free(text);

    /* All pages, but at most 16 bytes: never a partial word boundary issue,
     * never more than the bound. */
    CU_ASSERT_EQUAL(ev_pdf_text(pdf, &text, &tlen, &cut, 0, 16), 0);
    CU_ASSERT_STRING_EQUAL(text, "Page 1\nPage 2\nPa");
    CU_ASSERT_EQUAL(tlen, 16);
    CU_ASSERT_TRUE(cut);
    free(text);

    /* Everything fits: not truncated. */
    CU_ASSERT_EQUAL(ev_pdf_text(pdf, &text, &tlen, &cut, 0, 1 << 20), 0);
    CU_ASSERT_FALSE(cut);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "Page 12"));
    CU_ASSERT_EQUAL(tlen, strlen(text));
    free(text);

    ev_pdf_free(pdf);
    free(data);
}

static void test_truncated_pdf(void)
{
    size_t len;
    char *data = build_pdf(&len, 1, "Hello event");
    /* Cut in half: poppler cannot rebuild it. */
    expect_refused(data, len / 2, 100, EV_EPARSE,
                   "PDF is damaged or truncated: its structure cannot be repaired");
    /* Cut just before the end: poppler would open it (xref intact), but a
     * PDF without its end-of-file marker was cut short. */
    CU_ASSERT_EQUAL_FATAL(memcmp(data + len - 6, "%%EOF\n", 6), 0);
    expect_refused(data, len - 6, 100, EV_EPARSE,
                   "PDF is damaged or truncated: the end-of-file marker is missing "
                   "(the file was cut short)");
    /* Every other cut point is refused too, one way or the other. */
    for (size_t cut = 1; cut < len - 6; cut += 7) {
        ev_pdf_t *pdf = NULL;
        char *why = NULL;
        int rc = ev_pdf_open(&pdf, data, cut, &default_opts, &why);
        CU_ASSERT_EQUAL(rc, EV_EPARSE);
        CU_ASSERT_PTR_NULL(pdf);
        CU_ASSERT(why && strncmp(why, "PDF is damaged or truncated: ", 29) == 0);
        free(why);
        ev_pdf_free(pdf);
    }
    free(data);
}

static void test_corrupt_pdf(void)
{
    char data[600];
    memcpy(data, "%PDF-1.4\n", 9);
    for (size_t i = 9; i < sizeof(data); i++)
        data[i] = (char)((i * 131 + 7) & 0xff);
    expect_refused(data, sizeof(data), 100, EV_EPARSE,
                   "PDF is damaged or truncated: its structure cannot be repaired");
}

static void test_empty_pdf(void)
{
    expect_refused("", 0, 100, EV_EPARSE, "PDF is damaged or truncated: the file is empty");
}

static void test_broken_page_tree(void)
{
    /* /Kids points at an object that does not exist. */
    size_t len;
    char *data = ev_hostile_text_pdf(1, "Hello event", false, "99 0 R", &len);
    expect_refused(data, len, 100, EV_EPARSE, "PDF is damaged or truncated: page 1 cannot be read");
    free(data);
}

static void test_encrypted_pdf(void)
{
    size_t len;
    char *data = read_fixture("encrypted.pdf", &len);
    expect_refused(data, len, 100, EV_ETYPE, "PDF is encrypted (password protected)");
    free(data);
}

static void test_owner_password_only_opens(void)
{
    /* No password is needed to read it, so it is not "password protected". */
    size_t len;
    char *data = read_fixture("owner-password-only.pdf", &len);
    ev_pdf_t *pdf = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_pdf_open(&pdf, data, len, &default_opts, NULL), 0);
    char *text;
    size_t tlen;
    CU_ASSERT_EQUAL(ev_pdf_text(pdf, &text, &tlen, NULL, 0, 4096), 0);
    CU_ASSERT_STRING_EQUAL(text, "Hello event");
    free(text);
    ev_pdf_free(pdf);
    free(data);
}

static void test_page_without_text(void)
{
    size_t len;
    char *data = build_pdf(&len, 1, "");
    ev_pdf_t *pdf = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_pdf_open(&pdf, data, len, &default_opts, NULL), 0);
    char *text;
    size_t tlen = 9;
    bool cut = true;
    CU_ASSERT_EQUAL(ev_pdf_text(pdf, &text, &tlen, &cut, 0, 4096), 0);
    CU_ASSERT_STRING_EQUAL(text, "");
    CU_ASSERT_EQUAL(tlen, 0);
    CU_ASSERT_FALSE(cut);
    free(text);
    ev_pdf_free(pdf);
    free(data);
}

static void test_normalise_whitespace_and_controls(void)
{
    size_t n;
    bool cut;
    const char in[] =
        "  \t Hello \xc2\xa0  big\tworld \r\n\n\f  next\x01 line\x7f\xe2\x80\x8b  \n ";
    char *out = ev_pdf_normalise_text(in, sizeof(in) - 1, 1024, &n, &cut);
    CU_ASSERT_STRING_EQUAL(out, "Hello big world\nnext line");
    CU_ASSERT_EQUAL(n, strlen(out));
    CU_ASSERT_FALSE(cut);
    free(out);

    /* NUL bytes inside the input vanish; invalid UTF-8 becomes U+FFFD. */
    const char bad[] = "a\0b\xff"
                       "c\xc0\xaf"
                       "d\xed\xa0\x80"
                       "e";
    out = ev_pdf_normalise_text(bad, sizeof(bad) - 1, 1024, &n, &cut);
    CU_ASSERT_STRING_EQUAL(out, "ab\xef\xbf\xbd"
                                "c\xef\xbf\xbd\xef\xbf\xbd"
                                "d"
                                "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                                "e");
    free(out);
}

static void test_normalise_never_splits_a_character(void)
{
    /* "é" is two bytes, "€" three, "😀" four: every bound gives a prefix that
     * is whole characters and never more than the bound. */
    const char in[] = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80x";
    const size_t cuts[][2] = {{0, 0}, {1, 0}, {2, 2}, {4, 2}, {5, 5}, {8, 5}, {9, 9}, {10, 10}};
    for (size_t i = 0; i < EV_ARRAY_LEN(cuts); i++) {
        size_t n;
        bool cut;
        char *out = ev_pdf_normalise_text(in, sizeof(in) - 1, cuts[i][0], &n, &cut);
        CU_ASSERT_EQUAL(n, cuts[i][1]);
        CU_ASSERT_EQUAL(memcmp(out, in, n), 0);
        CU_ASSERT_EQUAL(out[n], '\0');
        CU_ASSERT_EQUAL(cut, cuts[i][0] < 10);
        free(out);
    }
}

/* ---- concurrency ------------------------------------------------------------ */

#define THREADS 4
#define ROUNDS 12

typedef struct worker_arg {
    const char *data;
    size_t len;
    const char *enc;
    size_t enc_len;
    int ok;
} worker_arg_t;

static void *pdf_worker(void *p)
{
    worker_arg_t *a = p;
    for (int r = 0; r < ROUNDS; r++) {
        ev_pdf_t *pdf = NULL;
        char *why = NULL;
        if (ev_pdf_open(&pdf, a->data, a->len, &default_opts, &why) == 0) {
            char *text = NULL;
            size_t n;
            if (ev_pdf_text(pdf, &text, &n, NULL, 0, 4096) == 0 &&
                strcmp(text, "Page 1\nPage 2\nPage 3") == 0)
                a->ok++;
            free(text);
        }
        ev_pdf_free(pdf);
        free(why);
        /* Interleave refusals too: the error paths share poppler's globals. */
        if (ev_pdf_open(&pdf, a->enc, a->enc_len, &default_opts, &why) == EV_ETYPE)
            a->ok++;
        ev_pdf_free(pdf);
        free(why);
    }
    return NULL;
}

static void test_concurrent_documents(void)
{
    size_t len, enc_len;
    char *data = build_pdf(&len, 3, "Page");
    char *enc = read_fixture("encrypted.pdf", &enc_len);
    pthread_t th[THREADS];
    worker_arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (worker_arg_t){data, len, enc, enc_len, 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, pdf_worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(args[i].ok, 2 * ROUNDS);
    }
    free(enc);
    free(data);
}

typedef struct first_arg {
    const char *data;
    size_t len;
    int init_rc;
    int open_rc;
} first_arg_t;

static void *first_use_worker(void *p)
{
    first_arg_t *a = p;
    a->init_rc = ev_pdf_global_init();
    ev_pdf_t *pdf = NULL;
    a->open_rc = ev_pdf_open(&pdf, a->data, a->len, &default_opts, NULL);
    ev_pdf_free(pdf);
    return NULL;
}

/*
 * Runs first, so the threads race to be the process's first PDF user: the
 * built-in document that keeps poppler's global state alive is opened once
 * (pthread_once), every caller sees that it opened (a broken built-in PDF
 * would silently cost 1 ms per PDF), and the documents opened meanwhile
 * are fine. Under TSan this is the data-race check; under ASan/valgrind the
 * kept document is a process-lifetime allocation that must not show up as a
 * leak.
 */
static void test_first_use_from_threads(void)
{
    size_t len;
    char *data = build_pdf(&len, 2, "First");
    pthread_t th[THREADS];
    first_arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (first_arg_t){data, len, -1, -1};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, first_use_worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(args[i].init_rc, 0);
        CU_ASSERT_EQUAL(args[i].open_rc, 0);
    }
    CU_ASSERT_EQUAL(ev_pdf_global_init(), 0);
    free(data);
}

/*
 * GLib 2.74's slice allocator (used for every GObject and GBytes) moves
 * blocks between threads through futex-based locks ThreadSanitizer cannot
 * see, so TSan reports races inside uninstrumented GLib that are not races.
 * Setting G_SLICE in main is too late (GLib reads it in a constructor), and
 * re-exec would escape valgrind, so TSan is told about this one allocator
 * here; running with G_SLICE=always-malloc avoids it as well. Harmless in
 * builds without TSan.
 */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:g_slice_\n";
}

static const ev_test_t pdf_tests[] = {
    {"first use from several threads keeps poppler's globals", test_first_use_from_threads},
    {"valid PDF: one page, text 'Hello event'", test_valid_pdf_text},
    {"non-ASCII text comes out as UTF-8", test_non_ascii_text_is_utf8},
    {"page limit", test_page_limit},
    {"text bounded by pages and bytes", test_text_bounded_by_pages_and_bytes},
    {"truncated PDF", test_truncated_pdf},
    {"corrupt PDF", test_corrupt_pdf},
    {"empty PDF", test_empty_pdf},
    {"broken page tree", test_broken_page_tree},
    {"encrypted PDF", test_encrypted_pdf},
    {"owner-password-only PDF opens", test_owner_password_only_opens},
    {"page without text", test_page_without_text},
    {"normalise whitespace and controls", test_normalise_whitespace_and_controls},
    {"normalise never splits a character", test_normalise_never_splits_a_character},
    {"separate documents on several threads", test_concurrent_documents},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"pdf", NULL, NULL, pdf_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
