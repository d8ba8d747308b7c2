/*
 * pdf.c - local PDF checks and bounded text extraction with poppler-glib.
 *
 * What: opens a submitted PDF from memory, refuses password-protected,
 * damaged or truncated documents and documents over the page limit, and
 * extracts a bounded, normalised UTF-8 text of the first pages.
 *
 * How: the caller's bytes are wrapped without copying in a static GBytes and
 * opened with poppler_document_new_from_bytes(). Poppler repairs many broken
 * cross-reference tables silently, so on top of its own errors we require
 * the "%%EOF" marker within the last 1024 bytes (the rule Acrobat applies;
 * a PDF cut short loses it), at least one page, and that every page object
 * loads. Text comes from poppler_page_get_text() page by page and is
 * streamed through one normaliser that enforces the byte bound as it goes.
 *
 * Poppler creates its global tables (GlobalParams: font and encoding tables,
 * about 1 ms of CPU) when the first document of the process opens and
 * destroys them when the last one closes, so a service that handles one PDF
 * at a time would rebuild them for every PDF. ev_pdf_global_init() opens one
 * tiny built-in document and keeps it open for the life of the process,
 * which keeps those tables alive; ev_pdf_open() calls it first.
 *
 * Threads: each ev_pdf_t is used by one thread at a time; separate documents
 * may be used concurrently (see pdf.h for what that relies on in poppler and
 * GLib). The only shared state is the kept document, created once under
 * pthread_once and never touched again. No locks. Never logs.
 *
 * Ownership: every GObject is released with g_object_unref, every string
 * from poppler with g_free, the GBytes with g_bytes_unref, every GError with
 * g_error_free. The kept document is a deliberate process-lifetime
 * allocation: a static pointer holds it, so valgrind reports it (and
 * poppler's tables) as "still reachable" and LeakSanitizer not at all.
 */
#include "ev/pdf.h"

#include "ev/error.h"
#include "ev/utf8.h"
#include "ev/util.h"

#include <glib.h>
#include <poppler.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Acrobat accepts "%%EOF" anywhere in the last 1024 bytes; so do we. */
#define EOF_WINDOW 1024

struct ev_pdf {
    GBytes *bytes; /* borrows the caller's data */
    PopplerDocument *doc;
    int pages;
};

/* ---- text normaliser ---------------------------------------------------- */

typedef struct textbuf {
    char *buf;
    size_t len, cap, max;
    size_t limit;         /* max, or lower while one page's share is fed */
    bool page_full;       /* the current page reached its share */
    bool pending_space;   /* whitespace seen since the last character */
    bool pending_newline; /* ... and it contained a line or page break */
    bool full;            /* a character did not fit: output is truncated */
} textbuf_t;

static void tb_init(textbuf_t *tb, size_t max)
{
    memset(tb, 0, sizeof(*tb));
    tb->max = max;
    tb->limit = max;
    tb->cap = max < 4096 ? max : 4096;
    tb->buf = ev_malloc(tb->cap + 1);
    tb->buf[0] = '\0';
}

static bool is_break(uint32_t cp)
{
    return cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f' || cp == 0x85 || cp == 0x2028 ||
           cp == 0x2029;
}

static bool is_space(uint32_t cp)
{
    return cp == ' ' || cp == '\t' || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* Characters with no place in a prompt or a text column. */
static bool is_dropped(uint32_t cp)
{
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0) || cp == 0x200b || cp == 0xfeff ||
           cp == 0xfffe || cp == 0xffff;
}

/* Appends bytes that are known to fit (len + n <= max). */
static void tb_append(textbuf_t *tb, const char *s, size_t n)
{
    if (tb->len + n > tb->cap) {
        size_t cap = tb->cap ? tb->cap : 64;
        while (cap < tb->len + n)
            cap *= 2;
        if (cap > tb->max)
            cap = tb->max;
        tb->buf = ev_realloc(tb->buf, cap + 1);
        tb->cap = cap;
    }
    memcpy(tb->buf + tb->len, s, n);
    tb->len += n;
    tb->buf[tb->len] = '\0';
}

/* Adds one code point; returns false once the output is full. */
static bool tb_put(textbuf_t *tb, uint32_t cp)
{
    if (tb->full || tb->page_full)
        return false;
    if (is_break(cp)) {
        tb->pending_space = tb->pending_newline = true;
        return true;
    }
    if (is_space(cp)) {
        tb->pending_space = true;
        return true;
    }
    if (is_dropped(cp))
        return true;

    char enc[4];
    size_t n = ev_utf8_encode(cp, enc);
    bool sep = tb->pending_space && tb->len > 0;
    if (tb->len + (sep ? 1 : 0) + n > tb->limit) {
        if (tb->limit < tb->max)
            tb->page_full = true;
        else
            tb->full = true;
        return false;
    }
    if (sep)
        tb_append(tb, tb->pending_newline ? "\n" : " ", 1);
    tb_append(tb, enc, n);
    tb->pending_space = tb->pending_newline = false;
    return true;
}

/* Feeds raw bytes; invalid UTF-8 becomes U+FFFD. Returns false once full. */
static bool tb_feed(textbuf_t *tb, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = ev_utf8_decode_lossy(p + i, n - i, &cp);
        if (!tb_put(tb, cp))
            return false;
        i += l;
    }
    return true;
}

char *ev_pdf_normalise_text(const char *in, size_t in_len, size_t max_bytes, size_t *out_len,
                            bool *truncated)
{
    textbuf_t tb;
    tb_init(&tb, max_bytes);
    tb_feed(&tb, in ? in : "", in ? in_len : 0);
    if (out_len)
        *out_len = tb.len;
    if (truncated)
        *truncated = tb.full;
    return tb.buf;
}

/* ---- documents ------------------------------------------------------------ */

static bool has_eof_marker(const unsigned char *data, size_t len)
{
    size_t from = len > EOF_WINDOW ? len - EOF_WINDOW : 0;
    return memmem(data + from, len - from, "%%EOF", 5) != NULL;
}

/* A short explanation for poppler's open error. */
static const char *damage_detail(const GError *err)
{
    if (err && err->domain == POPPLER_ERROR) {
        switch (err->code) {
        case POPPLER_ERROR_DAMAGED:
            return "its structure cannot be repaired";
        case POPPLER_ERROR_BAD_CATALOG:
            return "the document catalog cannot be read";
        default:
            break;
        }
    }
    return "it cannot be parsed";
}

/* ---- poppler's global state, kept for the process --------------------- */

/* A valid one-page PDF with an exact cross-reference table (no repair). */
static const char keep_pdf[] = "%PDF-1.4\n"
                               "1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
                               "2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
                               "3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 1 1]>>endobj\n"
                               "xref\n0 4\n"
                               "0000000000 65535 f \n"
                               "0000000009 00000 n \n"
                               "0000000052 00000 n \n"
                               "0000000101 00000 n \n"
                               "trailer<</Size 4/Root 1 0 R>>\n"
                               "startxref\n160\n%%EOF\n";

/* Written once inside keep_once, read only after pthread_once returned. */
static PopplerDocument *keep_doc;
static pthread_once_t keep_once = PTHREAD_ONCE_INIT;

static void keep_open(void)
{
    GBytes *b = g_bytes_new_static(keep_pdf, sizeof(keep_pdf) - 1);
    keep_doc = poppler_document_new_from_bytes(b, NULL, NULL);
    g_bytes_unref(b); /* the document holds its own reference */
}

int ev_pdf_global_init(void)
{
    pthread_once(&keep_once, keep_open);
    return keep_doc ? 0 : EV_EPARSE;
}

int ev_pdf_open(ev_pdf_t **out, const void *data, size_t len, const ev_pdf_options_t *opts,
                char **reason)
{
    int rc = 0;
    char *r = NULL;
    GError *err = NULL;
    ev_pdf_t *pdf = ev_calloc(1, sizeof(*pdf));

    if (len == 0) {
        r = ev_strdup("PDF is damaged or truncated: the file is empty");
        rc = EV_EPARSE;
        goto out;
    }

    /* Without the kept document this one would rebuild poppler's globals;
     * if it could not be opened, PDFs still work, only slower. */
    (void)ev_pdf_global_init();
    pdf->bytes = g_bytes_new_static(data, len);
    pdf->doc = poppler_document_new_from_bytes(pdf->bytes, NULL, &err);
    if (!pdf->doc) {
        if (err && err->domain == POPPLER_ERROR && err->code == POPPLER_ERROR_ENCRYPTED) {
            r = ev_strdup("PDF is encrypted (password protected)");
            rc = EV_ETYPE;
        } else {
            r = ev_asprintf("PDF is damaged or truncated: %s", damage_detail(err));
            rc = EV_EPARSE;
        }
        goto out;
    }
    if (!has_eof_marker(data, len)) {
        r = ev_strdup("PDF is damaged or truncated: the end-of-file marker is missing "
                      "(the file was cut short)");
        rc = EV_EPARSE;
        goto out;
    }

    pdf->pages = poppler_document_get_n_pages(pdf->doc);
    if (pdf->pages <= 0) {
        r = ev_strdup("PDF is damaged or truncated: it has no pages");
        rc = EV_EPARSE;
        goto out;
    }
    if (pdf->pages > opts->max_pages) {
        r = ev_asprintf("PDF has %d pages, limit is %d", pdf->pages, opts->max_pages);
        rc = EV_ELIMIT;
        goto out;
    }
    /* A page tree that points at missing or broken objects opens fine and
     * fails later; find out now, while it is still a local check. */
    for (int i = 0; i < pdf->pages; i++) {
        PopplerPage *page = poppler_document_get_page(pdf->doc, i);
        if (!page) {
            r = ev_asprintf("PDF is damaged or truncated: page %d cannot be read", i + 1);
            rc = EV_EPARSE;
            goto out;
        }
        g_object_unref(page);
    }

out:
    if (err)
        g_error_free(err);
    if (rc < 0) {
        ev_pdf_free(pdf);
        pdf = NULL;
    }
    if (reason)
        *reason = r;
    else
        free(r);
    *out = pdf;
    return rc;
}

void ev_pdf_free(ev_pdf_t *pdf)
{
    if (!pdf)
        return;
    if (pdf->doc)
        g_object_unref(pdf->doc);
    if (pdf->bytes)
        g_bytes_unref(pdf->bytes);
    free(pdf);
}

int ev_pdf_page_count(const ev_pdf_t *pdf)
{
    return pdf->pages;
}

int ev_pdf_text(ev_pdf_t *pdf, char **text, size_t *len, bool *truncated, int max_pages,
                size_t max_bytes)
{
    return ev_pdf_text_paged(pdf, text, len, truncated, max_pages, max_bytes, max_bytes);
}

int ev_pdf_text_paged(ev_pdf_t *pdf, char **text, size_t *len, bool *truncated, int max_pages,
                      size_t max_bytes, size_t max_page_bytes)
{
    int rc = 0;
    textbuf_t tb;
    EV_ASSERT(max_bytes > 0 && max_page_bytes > 0);
    tb_init(&tb, max_bytes);

    int n = pdf->pages;
    bool cut = false;
    if (max_pages > 0 && max_pages < n) {
        n = max_pages;
        cut = true;
    }
    for (int i = 0; i < n && !tb.full; i++) {
        PopplerPage *page = poppler_document_get_page(pdf->doc, i);
        if (!page) {
            rc = EV_EPARSE;
            goto out;
        }
        char *t = poppler_page_get_text(page);
        g_object_unref(page);
        /* One page may fill only its share, so a single huge page cannot
         * crowd out the others; the text is cut as it is fed. */
        tb.limit = EV_MIN(tb.max, tb.len + max_page_bytes);
        tb.page_full = false;
        if (t) {
            tb_feed(&tb, t, strlen(t));
            g_free(t);
        }
        cut = cut || tb.page_full;
        tb.page_full = false;
        tb.limit = tb.max;
        /* A page ends a line. */
        tb_put(&tb, '\n');
    }

out:
    if (rc < 0) {
        free(tb.buf);
        *text = NULL;
        *len = 0;
        if (truncated)
            *truncated = false;
        return rc;
    }
    *text = tb.buf;
    *len = tb.len;
    if (truncated)
        *truncated = tb.full || cut;
    return 0;
}
