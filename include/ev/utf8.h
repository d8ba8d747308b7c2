/*
 * utf8.h - one UTF-8 sequence at a time, for the modules that clean untrusted
 * text (PDF text, file names in reasons, text bound for the database).
 * Pure functions; any thread.
 */
#ifndef EV_UTF8_H
#define EV_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Decodes the sequence at s[0..n) (n >= 1). Returns its length (1..4) with
 * the code point in *cp, or 0 when it is invalid (overlong, surrogate, out
 * of range, truncated by n). */
size_t ev_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* The same for cleaners that replace what is invalid: an invalid sequence
 * reads as one byte standing for U+FFFD. Returns 1..4, never 0. */
size_t ev_utf8_decode_lossy(const unsigned char *s, size_t n, uint32_t *cp);

/* Encodes a valid code point; returns the number of bytes written (1..4). */
size_t ev_utf8_encode(uint32_t cp, char out[4]);

#endif
