/*
 * imagehdr.c - image dimensions from the header (see imagehdr.h).
 *
 * How: one small reader per format over a bounded buffer; every offset is
 * checked against the length before it is read, box and segment lengths
 * included, and loops only move forward, so any input ends in at most `len`
 * steps. HEIF boxes are followed only along meta -> iprp -> ipco, a fixed
 * depth. Pure; any thread.
 */
#include "ev/imagehdr.h"

#include "ev/error.h"

#include <stdbool.h>
#include <string.h>

static uint32_t be16(const unsigned char *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le16(const unsigned char *p)
{
    return (uint32_t)p[1] << 8 | p[0];
}

static uint32_t le24(const unsigned char *p)
{
    return (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static int png_size(const unsigned char *d, size_t n, uint32_t *w, uint32_t *h)
{
    if (n < 24 || memcmp(d, "\x89PNG\r\n\x1a\n", 8) != 0 || be32(d + 8) != 13 ||
        memcmp(d + 12, "IHDR", 4) != 0)
        return EV_EPARSE;
    *w = be32(d + 16);
    *h = be32(d + 20);
    return 0;
}

/* SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC). */
static bool is_sof(unsigned char m)
{
    return m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
}

static int jpeg_size(const unsigned char *d, size_t n, uint32_t *w, uint32_t *h)
{
    if (n < 4 || d[0] != 0xff || d[1] != 0xd8)
        return EV_EPARSE;
    size_t i = 2;
    while (i + 1 < n) {
        if (d[i] != 0xff)
            return EV_EPARSE;
        unsigned char m = d[i + 1];
        if (m == 0xff) { /* fill byte */
            i++;
            continue;
        }
        i += 2;
        if (m == 0x01 || (m >= 0xd0 && m <= 0xd7))
            continue; /* markers without a length */
        if (m == 0xd9 || m == 0xda || i + 2 > n)
            return EV_EPARSE; /* image data or the end before any frame header */
        uint32_t seg = be16(d + i);
        if (seg < 2 || i + seg > n)
            return EV_EPARSE;
        if (is_sof(m)) {
            if (seg < 7)
                return EV_EPARSE;
            *h = be16(d + i + 3);
            *w = be16(d + i + 5);
            return 0;
        }
        i += seg;
    }
    return EV_EPARSE;
}

static int webp_size(const unsigned char *d, size_t n, uint32_t *w, uint32_t *h)
{
    if (n < 30 || memcmp(d, "RIFF", 4) != 0 || memcmp(d + 8, "WEBP", 4) != 0)
        return EV_EPARSE;
    const unsigned char *c = d + 12, *p = d + 20;
    if (memcmp(c, "VP8 ", 4) == 0) {
        if (p[3] != 0x9d || p[4] != 0x01 || p[5] != 0x2a)
            return EV_EPARSE;
        *w = le16(p + 6) & 0x3fff;
        *h = le16(p + 8) & 0x3fff;
    } else if (memcmp(c, "VP8L", 4) == 0) {
        if (p[0] != 0x2f)
            return EV_EPARSE;
        uint32_t bits =
            (uint32_t)p[1] | (uint32_t)p[2] << 8 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 24;
        *w = (bits & 0x3fff) + 1;
        *h = ((bits >> 14) & 0x3fff) + 1;
    } else if (memcmp(c, "VP8X", 4) == 0) {
        *w = le24(p + 4) + 1;
        *h = le24(p + 7) + 1;
    } else {
        return EV_EPARSE;
    }
    return 0;
}

/* One ISO BMFF box at d[*at..end): its type, body range. False at the end
 * or on a box that does not fit. */
static bool box_next(const unsigned char *d, size_t end, size_t *at, char type[5], size_t *body,
                     size_t *body_end)
{
    size_t i = *at;
    if (i + 8 > end)
        return false;
    uint64_t size = be32(d + i);
    size_t hdr = 8;
    if (size == 1) {
        if (i + 16 > end)
            return false;
        size = (uint64_t)be32(d + i + 8) << 32 | be32(d + i + 12);
        hdr = 16;
    } else if (size == 0) {
        size = end - i;
    }
    if (size < hdr || size > end - i)
        return false;
    memcpy(type, d + i + 4, 4);
    type[4] = '\0';
    *body = i + hdr;
    *body_end = i + (size_t)size;
    *at = *body_end;
    return true;
}

/* Finds the first box of `type` among d[from..end); its body range. */
static bool box_find(const unsigned char *d, size_t from, size_t end, const char *type,
                     size_t *body, size_t *body_end)
{
    char t[5];
    size_t at = from;
    while (box_next(d, end, &at, t, body, body_end))
        if (strcmp(t, type) == 0)
            return true;
    return false;
}

static int heif_size(const unsigned char *d, size_t n, uint32_t *w, uint32_t *h)
{
    size_t b, e, pb, pe, cb, ce;
    char t[5];
    if (n < 12 || memcmp(d + 4, "ftyp", 4) != 0)
        return EV_EPARSE;
    /* meta is a full box: 4 bytes of version and flags before its children. */
    if (!box_find(d, 0, n, "meta", &b, &e) || b + 4 > e ||
        !box_find(d, b + 4, e, "iprp", &pb, &pe) || !box_find(d, pb, pe, "ipco", &cb, &ce))
        return EV_EPARSE;
    uint32_t bw = 0, bh = 0;
    size_t at = cb;
    while (box_next(d, ce, &at, t, &b, &e)) {
        if (strcmp(t, "ispe") != 0 || b + 12 > e)
            continue;
        uint32_t iw = be32(d + b + 4), ih = be32(d + b + 8);
        if ((uint64_t)iw * ih > (uint64_t)bw * bh) {
            bw = iw;
            bh = ih;
        }
    }
    if (bw == 0 || bh == 0)
        return EV_EPARSE;
    *w = bw;
    *h = bh;
    return 0;
}

int ev_imagehdr_size(const unsigned char *data, size_t len, const char *mime, uint32_t *width,
                     uint32_t *height)
{
    uint32_t w = 0, h = 0;
    int rc;
    if (!mime)
        rc = EV_ETYPE;
    else if (strcmp(mime, "image/png") == 0)
        rc = png_size(data, len, &w, &h);
    else if (strcmp(mime, "image/jpeg") == 0)
        rc = jpeg_size(data, len, &w, &h);
    else if (strcmp(mime, "image/webp") == 0)
        rc = webp_size(data, len, &w, &h);
    else if (strcmp(mime, "image/heic") == 0 || strcmp(mime, "image/heif") == 0)
        rc = heif_size(data, len, &w, &h);
    else
        rc = EV_ETYPE;
    if (rc == 0 && (w == 0 || h == 0))
        rc = EV_EPARSE;
    *width = rc == 0 ? w : 0;
    *height = rc == 0 ? h : 0;
    return rc;
}
