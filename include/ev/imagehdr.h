/*
 * imagehdr.h - an image's dimensions from its header, without decoding it.
 *
 * A 200-byte PNG can declare 60,000 x 60,000 pixels; a provider then refuses
 * it or a decoder needs gigabytes. The dimensions are in the first bytes of
 * every format the providers accept, so they are read there: PNG (IHDR),
 * JPEG (the first SOFn frame header), WebP (VP8, VP8L or VP8X), HEIC/HEIF
 * (the largest 'ispe' property under meta/iprp/ipco). Nothing is decoded and
 * nothing allocated; reads never leave the buffer. Pure; any thread; never
 * logs.
 */
#ifndef EV_IMAGEHDR_H
#define EV_IMAGEHDR_H

#include <stddef.h>
#include <stdint.h>

/*
 * Reads width and height for an image of MIME type `mime` ("image/png",
 * "image/jpeg", "image/webp", "image/heic", "image/heif") from its first
 * `len` bytes. Returns 0 with both > 0, EV_EPARSE when the header is missing,
 * cut short or inconsistent, or EV_ETYPE for any other mime.
 */
int ev_imagehdr_size(const unsigned char *data, size_t len, const char *mime, uint32_t *width,
                     uint32_t *height);

#endif
