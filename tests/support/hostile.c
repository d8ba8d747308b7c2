/*
 * hostile.c - hostile and honest test files (see hostile.h).
 *
 * A bomb's deflate stream is one block of compressed data ending in a full
 * flush (byte-aligned, no reference to earlier data), repeated as often as
 * needed, then an empty final block and the zlib trailer. Repeating a
 * self-contained block is valid deflate, so the inflated size is the block's
 * times the count, at no cost to build.
 */
#include "hostile.h"

#include "ev/util.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

void ev_hbuf_add(ev_hbuf_t *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = ev_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void ev_hbuf_printf(ev_hbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    EV_ASSERT(n >= 0);
    ev_hbuf_add(b, s, (size_t)n);
    free(s);
}

/* One self-contained, byte-aligned deflate block of `data` (full flush). */
static void deflate_block(z_stream *z, ev_hbuf_t *out, const char *data, size_t n, bool header)
{
    if (n == 0 && !header)
        return;
    size_t cap = deflateBound(z, n) + 64;
    unsigned char *blk = ev_malloc(cap);
    z->next_in = (unsigned char *)data;
    z->avail_in = (uInt)n;
    z->next_out = blk;
    z->avail_out = (uInt)cap;
    EV_ASSERT(deflate(z, Z_FULL_FLUSH) == Z_OK && z->avail_in == 0);
    size_t got = cap - z->avail_out;
    /* Only the stream's first deflate call emits the 2-byte zlib header. */
    ev_hbuf_add(out, blk, got);
    free(blk);
}

/* zlib data inflating to prefix, then `unit` `count` times, then suffix. */
static void bomb_stream(ev_hbuf_t *out, const char *prefix, const char *unit, size_t unit_len,
                        size_t count, const char *suffix)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    EV_ASSERT(deflateInit(&z, 9) == Z_OK);
    deflate_block(&z, out, prefix, strlen(prefix), true);
    ev_hbuf_t one = {0};
    deflate_block(&z, &one, unit, unit_len, false);
    for (size_t i = 0; i < count; i++)
        ev_hbuf_add(out, one.p, one.len);
    free(one.p);
    deflate_block(&z, out, suffix, strlen(suffix), false);
    /* Empty final block, then the Adler-32 of everything. */
    static const unsigned char fin[] = {0x03, 0x00};
    ev_hbuf_add(out, fin, sizeof(fin));
    uLong a = adler32(0L, (const Bytef *)prefix, (uInt)strlen(prefix));
    uLong a1 = adler32(0L, (const Bytef *)unit, (uInt)unit_len);
    for (size_t i = 0; i < count; i++)
        a = adler32_combine(a, a1, (z_off_t)unit_len);
    a = adler32_combine(a, adler32(0L, (const Bytef *)suffix, (uInt)strlen(suffix)),
                        (z_off_t)strlen(suffix));
    unsigned char tr[4] = {(unsigned char)(a >> 24), (unsigned char)(a >> 16),
                           (unsigned char)(a >> 8), (unsigned char)a};
    ev_hbuf_add(out, tr, 4);
    deflateEnd(&z);
}

/* Writes objects 1.. (bodies given, each may contain a stream) with an exact xref. */
static char *assemble(char **bodies, size_t *blen, int n, size_t pad, size_t *len)
{
    ev_hbuf_t b = {0};
    long *off = ev_calloc((size_t)n + 1, sizeof(long));
    ev_hbuf_add(&b, "%PDF-1.5\n%\xe2\xe3\xcf\xd3\n", 15);
    for (int i = 1; i <= n; i++) {
        off[i] = (long)b.len;
        ev_hbuf_printf(&b, "%d 0 obj\n", i);
        ev_hbuf_add(&b, bodies[i - 1], blen[i - 1]);
        ev_hbuf_printf(&b, "\nendobj\n");
    }
    if (b.len < pad) {
        /* An unreferenced comment block: honest padding the parser skips. */
        size_t need = pad - b.len;
        char *fill = ev_malloc(need + 1);
        fill[0] = '%';
        for (size_t i = 1; i < need; i++)
            fill[i] = (i % 80 == 0) ? '\n' : (i % 80 == 1 ? '%' : (char)('a' + i % 26));
        ev_hbuf_add(&b, fill, need);
        ev_hbuf_add(&b, "\n", 1);
        free(fill);
    }
    long xref = (long)b.len;
    ev_hbuf_printf(&b, "xref\n0 %d\n0000000000 65535 f \n", n + 1);
    for (int i = 1; i <= n; i++)
        ev_hbuf_printf(&b, "%010ld 00000 n \n", off[i]);
    ev_hbuf_printf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%ld\n%%%%EOF\n", n + 1,
                   xref);
    free(off);
    *len = b.len;
    return b.p;
}

static char *stream_obj(const char *dict_extra, const char *data, size_t dlen, size_t *olen)
{
    ev_hbuf_t b = {0};
    ev_hbuf_printf(&b, "<< /Length %zu %s>>\nstream\n", dlen, dict_extra);
    ev_hbuf_add(&b, data, dlen);
    ev_hbuf_printf(&b, "\nendstream");
    *olen = b.len;
    return b.p;
}

#define FONT "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"

static char *honest(const ev_hostile_params_t *p, size_t *len)
{
    int pages = p->pages > 0 ? p->pages : 1;
    int n = 3 + 2 * pages;
    char **bodies = ev_calloc((size_t)n, sizeof(char *));
    size_t *bl = ev_calloc((size_t)n, sizeof(size_t));
    ev_hbuf_t kids = {0};
    for (int i = 0; i < pages; i++)
        ev_hbuf_printf(&kids, "%s%d 0 R", i ? " " : "", 4 + 2 * i);
    bodies[0] = ev_strdup("<< /Type /Catalog /Pages 2 0 R >>");
    bodies[1] = ev_asprintf("<< /Type /Pages /Count %d /Kids [%s] >>", pages, kids.p);
    bodies[2] = ev_strdup(FONT);
    for (int i = 0; i < pages; i++) {
        bodies[3 + 2 * i] =
            ev_asprintf("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                        "/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>",
                        5 + 2 * i);
        char *c = ev_asprintf("BT /F1 11 Tf 72 700 Td (Solar powered bus stops, page %d: "
                              "shelters with panels that light the street at night.) Tj ET",
                              i + 1);
        bodies[4 + 2 * i] = stream_obj("", c, strlen(c), &bl[4 + 2 * i]);
        free(c);
    }
    for (int i = 0; i < n; i++)
        if (!bl[i])
            bl[i] = strlen(bodies[i]);
    char *out = assemble(bodies, bl, n, p->pad, len);
    for (int i = 0; i < n; i++)
        free(bodies[i]);
    free(bodies);
    free(bl);
    free(kids.p);
    return out;
}

/* One page whose contents are the given (already encoded) stream objects 4.. */
static char *one_page(char **streams, size_t *slen, int ns, size_t *len)
{
    int n = 3 + ns;
    char **bodies = ev_calloc((size_t)n, sizeof(char *));
    size_t *bl = ev_calloc((size_t)n, sizeof(size_t));
    ev_hbuf_t refs = {0};
    for (int i = 0; i < ns; i++)
        ev_hbuf_printf(&refs, "%s%d 0 R", i ? " " : "", 4 + i);
    bodies[0] = ev_strdup("<< /Type /Catalog /Pages 2 0 R >>");
    bodies[1] = ev_strdup("<< /Type /Pages /Count 1 /Kids [3 0 R] >>");
    bodies[2] = ev_asprintf("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
                            "<< /Font << /F1 %s >> >> /Contents [%s] >>",
                            FONT, refs.p);
    for (int i = 0; i < 3; i++)
        bl[i] = strlen(bodies[i]);
    for (int i = 0; i < ns; i++) {
        bodies[3 + i] = streams[i];
        bl[3 + i] = slen[i];
    }
    char *out = assemble(bodies, bl, n, 0, len);
    for (int i = 0; i < n; i++)
        free(bodies[i]);
    free(bodies);
    free(bl);
    free(refs.p);
    return out;
}

static char *bomb(const char *prefix, const char *unit, size_t unit_len, const char *suffix,
                  size_t mib, int ns, size_t *len)
{
    char *streams[4];
    size_t sl[4];
    size_t count = mib * 1024 * 1024 / unit_len;
    for (int i = 0; i < ns; i++) {
        ev_hbuf_t z = {0};
        bomb_stream(&z, prefix, unit, unit_len, count ? count : 1, suffix);
        streams[i] = stream_obj("/Filter /FlateDecode ", z.p, z.len, &sl[i]);
        free(z.p);
    }
    return one_page(streams, sl, ns, len);
}

static char *nested(size_t depth, size_t *len)
{
    ev_hbuf_t c = {0};
    ev_hbuf_add(&c, "BT /F1 12 Tf 72 700 Td ", 23);
    for (size_t i = 0; i < depth; i++)
        ev_hbuf_add(&c, "[", 1);
    ev_hbuf_add(&c, "(deep)", 6);
    for (size_t i = 0; i < depth; i++)
        ev_hbuf_add(&c, "]", 1);
    ev_hbuf_add(&c, " TJ ET", 6);
    size_t sl;
    char *s = stream_obj("", c.p, c.len, &sl);
    free(c.p);
    return one_page(&s, &sl, 1, len);
}

/* Pages nodes 2 .. depth+1 each the only kid of the one before; the last kid is the page. */
static char *deep_pages(size_t depth, size_t *len)
{
    int n = (int)depth + 3;
    char **bodies = ev_calloc((size_t)n, sizeof(char *));
    size_t *bl = ev_calloc((size_t)n, sizeof(size_t));
    bodies[0] = ev_strdup("<< /Type /Catalog /Pages 2 0 R >>");
    for (int i = 0; i < (int)depth; i++)
        bodies[1 + i] = ev_asprintf("<< /Type /Pages /Count 1 /Kids [%d 0 R] >>", 3 + i);
    bodies[n - 2] = ev_asprintf("<< /Type /Page /MediaBox [0 0 612 792] /Contents %d 0 R >>", n);
    bodies[n - 1] = stream_obj("", "BT ET", 5, &bl[n - 1]);
    for (int i = 0; i < n - 1; i++)
        bl[i] = strlen(bodies[i]);
    char *out = assemble(bodies, bl, n, 0, len);
    for (int i = 0; i < n; i++)
        free(bodies[i]);
    free(bodies);
    free(bl);
    return out;
}

char *ev_hostile_pdf(ev_hostile_pdf_t kind, const ev_hostile_params_t *p, size_t *len)
{
    static const char text_unit[] = "BT /F1 1 Tf 0 0 Td (bomb bomb bomb bomb) Tj ET\n";
    static char zeros[64 * 1024];
    switch (kind) {
    case EV_HOSTILE_TEXT_BOMB: {
        /* Many text-show operators: every one becomes words the extractor keeps. */
        size_t reps = 16 * 1024 / (sizeof(text_unit) - 1);
        ev_hbuf_t u = {0};
        for (size_t i = 0; i < reps; i++)
            ev_hbuf_add(&u, text_unit, sizeof(text_unit) - 1);
        char *out = bomb("", u.p, u.len, "", p->mib, 1, len);
        free(u.p);
        return out;
    }
    case EV_HOSTILE_ZERO_BOMB:
        return bomb("", zeros, sizeof(zeros), "", p->mib, 3, len);
    case EV_HOSTILE_STRING_BOMB: {
        /* The lexer holds a whole string literal in memory before Tj sees it. */
        char *unit = ev_malloc(64 * 1024);
        memset(unit, 'A', 64 * 1024);
        char *out = bomb("BT /F1 12 Tf 72 700 Td (", unit, 64 * 1024, ") Tj ET", p->mib, 1, len);
        free(unit);
        return out;
    }
    case EV_HOSTILE_NESTED:
        return nested(p->depth, len);
    case EV_HOSTILE_DEEP_PAGES:
        return deep_pages(p->depth, len);
    case EV_HOSTILE_TRUNCATED: {
        ev_hostile_params_t h = {.pages = 3};
        char *out = honest(&h, len);
        *len /= 2;
        return out;
    }
    case EV_HOSTILE_HONEST:
    default:
        return honest(p, len);
    }
}

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void png_chunk(ev_hbuf_t *b, const char *type, const unsigned char *data, uint32_t n)
{
    unsigned char hdr[8];
    be32(hdr, n);
    memcpy(hdr + 4, type, 4);
    ev_hbuf_add(b, hdr, 8);
    if (n)
        ev_hbuf_add(b, data, n);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (n)
        crc = crc32(crc, data, n);
    unsigned char c[4];
    be32(c, (uint32_t)crc);
    ev_hbuf_add(b, c, 4);
}

unsigned char *ev_hostile_png(uint32_t width, uint32_t height, size_t *len)
{
    ev_hbuf_t b = {0};
    ev_hbuf_add(&b, "\x89PNG\r\n\x1a\n", 8);
    unsigned char ihdr[13] = {0};
    be32(ihdr, width);
    be32(ihdr + 4, height);
    ihdr[8] = 8; /* bit depth */
    ihdr[9] = 2; /* truecolour */
    png_chunk(&b, "IHDR", ihdr, 13);
    /* One scanline's worth of compressed zeros; enough for a header check. */
    static const unsigned char idat[] = {0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01};
    png_chunk(&b, "IDAT", idat, sizeof(idat));
    png_chunk(&b, "IEND", NULL, 0);
    *len = b.len;
    return (unsigned char *)b.p;
}

unsigned char *ev_hostile_jpeg(uint16_t width, uint16_t height, size_t *len)
{
    static const unsigned char head[] = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J',
                                         'F',  'I',  'F',  0x00, 0x01, 0x01, 0x00,
                                         0x00, 0x01, 0x00, 0x01, 0x00, 0x00};
    ev_hbuf_t b = {0};
    ev_hbuf_add(&b, head, sizeof(head));
    unsigned char sof[] = {0xff,
                           0xc0,
                           0x00,
                           0x11,
                           0x08,
                           (unsigned char)(height >> 8),
                           (unsigned char)height,
                           (unsigned char)(width >> 8),
                           (unsigned char)width,
                           0x03,
                           0x01,
                           0x22,
                           0x00,
                           0x02,
                           0x11,
                           0x01,
                           0x03,
                           0x11,
                           0x01};
    ev_hbuf_add(&b, sof, sizeof(sof));
    static const unsigned char eoi[] = {0xff, 0xd9};
    ev_hbuf_add(&b, eoi, sizeof(eoi));
    *len = b.len;
    return (unsigned char *)b.p;
}

/* Objects: 1 catalog, 2 page tree, 3 font, then a page and its content
 * stream per page. */
char *ev_hostile_text_pdf(int pages, const char *text, bool number_one, const char *kids_override,
                          size_t *len)
{
    ev_hbuf_t b = {0};
    int nobj = 3 + 2 * pages;
    long *off = ev_calloc((size_t)nobj + 1, sizeof(long));

    ev_hbuf_add(&b, "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", 15);
    off[1] = (long)b.len;
    ev_hbuf_printf(&b, "1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n");
    off[2] = (long)b.len;
    ev_hbuf_printf(&b, "2 0 obj\n<< /Type /Pages /Count %d /Kids [", pages);
    if (kids_override) {
        ev_hbuf_printf(&b, "%s", kids_override);
    } else {
        for (int i = 0; i < pages; i++)
            ev_hbuf_printf(&b, "%s%d 0 R", i ? " " : "", 4 + 2 * i);
    }
    ev_hbuf_printf(&b, "] >>\nendobj\n");
    off[3] = (long)b.len;
    ev_hbuf_printf(&b, "3 0 obj\n<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
                       "/Encoding /WinAnsiEncoding >>\nendobj\n");
    for (int i = 0; i < pages; i++) {
        char content[256];
        int n;
        if (pages == 1 && !number_one)
            n = snprintf(content, sizeof(content), "BT /F1 12 Tf 20 100 Td (%s) Tj ET", text);
        else
            n = snprintf(content, sizeof(content), "BT /F1 12 Tf 20 100 Td (%s %d) Tj ET", text,
                         i + 1);
        off[4 + 2 * i] = (long)b.len;
        ev_hbuf_printf(&b,
                       "%d 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] "
                       "/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>\nendobj\n",
                       4 + 2 * i, 5 + 2 * i);
        off[5 + 2 * i] = (long)b.len;
        ev_hbuf_printf(&b, "%d 0 obj\n<< /Length %d >>\nstream\n%s\nendstream\nendobj\n", 5 + 2 * i,
                       n, content);
    }
    long xref = (long)b.len;
    ev_hbuf_printf(&b, "xref\n0 %d\n0000000000 65535 f \n", nobj + 1);
    for (int i = 1; i <= nobj; i++)
        ev_hbuf_printf(&b, "%010ld 00000 n \n", off[i]);
    ev_hbuf_printf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%ld\n%%%%EOF\n", nobj + 1,
                   xref);
    free(off);
    *len = b.len;
    return b.p;
}

char *ev_hostile_polyglot(size_t *len)
{
    ev_hostile_params_t p = {.pages = 1};
    size_t plen;
    char *pdf = ev_hostile_pdf(EV_HOSTILE_HONEST, &p, &plen);
    ev_hbuf_t b = {0};
    /* A ZIP local header first: libmagic and unzip see an archive. */
    static const char zip[] = "PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00"
                              "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00"
                              "a.txt";
    ev_hbuf_add(&b, zip, sizeof(zip) - 1);
    ev_hbuf_add(&b, pdf, plen);
    free(pdf);
    *len = b.len;
    return b.p;
}
