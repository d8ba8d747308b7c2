/*
 * hostile.h - builders of hostile (and honest) files for tests.
 *
 * Every file is made in memory: PDFs with a correct cross-reference table
 * whose content streams are FlateDecode bombs, deeply nested objects or
 * plain text; image headers that declare enormous dimensions; truncated and
 * polyglot files. The bombs are small on disk (their deflate stream repeats
 * one byte-aligned block, so building a 500 MB bomb costs no CPU) and inflate
 * to what the caller asks for. Pure; any thread; callers free() the result.
 */
#ifndef EV_TEST_HOSTILE_H
#define EV_TEST_HOSTILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    EV_HOSTILE_HONEST,      /* `pages` pages of text, padded to at least `pad` bytes */
    EV_HOSTILE_TEXT_BOMB,   /* one page whose text stream inflates to `mib` MiB of Tj */
    EV_HOSTILE_STRING_BOMB, /* one page showing one string literal of `mib` MiB */
    EV_HOSTILE_ZERO_BOMB,   /* one page, three streams of `mib` MiB of zero bytes each */
    EV_HOSTILE_NESTED,      /* a content stream of `depth` nested arrays */
    EV_HOSTILE_DEEP_PAGES,  /* a page tree `depth` levels deep */
    EV_HOSTILE_TRUNCATED,   /* an honest PDF cut in the middle */
} ev_hostile_pdf_t;

typedef struct ev_hostile_params {
    int pages;    /* HONEST: pages (>= 1) */
    size_t pad;   /* HONEST: pad the file to at least this many bytes */
    size_t mib;   /* bombs: inflated size in MiB */
    size_t depth; /* NESTED, DEEP_PAGES */
} ev_hostile_params_t;

/* A growable byte buffer, kept NUL-terminated; start it as {0}, the caller
 * owns and free()s p. Aborts on out-of-memory. */
typedef struct ev_hbuf {
    char *p;
    size_t len, cap;
} ev_hbuf_t;

/* Appends n bytes of s. */
void ev_hbuf_add(ev_hbuf_t *b, const void *s, size_t n);
/* Appends the formatted text (any length). */
void ev_hbuf_printf(ev_hbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A PDF of the given shape; *len its size. */
char *ev_hostile_pdf(ev_hostile_pdf_t kind, const ev_hostile_params_t *p, size_t *len);

/* A PNG (signature + IHDR with a correct CRC + IDAT + IEND) declaring
 * width x height; tiny whatever the dimensions. */
unsigned char *ev_hostile_png(uint32_t width, uint32_t height, size_t *len);
/* A baseline JPEG header (SOI, APP0, SOF0 declaring width x height, EOI). */
unsigned char *ev_hostile_jpeg(uint16_t width, uint16_t height, size_t *len);
/* An honest PDF of `pages` pages of uncompressed Helvetica text: page i
 * shows "<text> i", or just `text` when there is one page and number_one is
 * false. kids_override (may be NULL) replaces the page tree's /Kids array,
 * to build broken trees. *len its size. */
char *ev_hostile_text_pdf(int pages, const char *text, bool number_one, const char *kids_override,
                          size_t *len);

/* A file that is a PDF to a naive check and a ZIP archive at its end. */
char *ev_hostile_polyglot(size_t *len);

#endif
