/*
 * hash.h - SHA-256 content hashes (FIPS 180-4), no OpenSSL: portable C, or
 * the x86-64 SHA extensions (SHA-NI) when the CPU has them, chosen once per
 * process at run time.
 *
 * Used for the verdict cache key (issue 4, "content hashes"): the same bytes
 * always give the same 64-character lowercase hex digest, whatever the file
 * is called or where it is stored.
 *
 * The context is a plain value the caller owns (usually on the stack); it
 * holds no resources, so there is nothing to free. A context must not be used
 * by two threads at once; separate contexts are independent, and every
 * function here is reentrant.
 */
#ifndef EV_HASH_H
#define EV_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Compresses `blocks` consecutive 64-byte blocks into `state` (internal). */
typedef void (*ev_hash_compress_fn)(uint32_t state[8], const uint8_t *p, size_t blocks);

#define EV_HASH_SHA256_LEN 32     /* digest bytes */
#define EV_HASH_SHA256_HEX_LEN 65 /* 64 hex digits plus the terminating NUL */

typedef struct ev_hash_sha256 {
    uint32_t state[8];
    uint64_t total;               /* bytes hashed so far */
    uint8_t block[64];            /* pending partial block */
    size_t used;                  /* bytes of `block` in use, always < 64 */
    ev_hash_compress_fn compress; /* set by init: portable or SHA-NI */
} ev_hash_sha256_t;

/* Starts a new hash. */
void ev_hash_sha256_init(ev_hash_sha256_t *ctx);
/* Adds n bytes (data may be NULL when n is 0). Can be called any number of times. */
void ev_hash_sha256_update(ev_hash_sha256_t *ctx, const void *data, size_t n);
/* Writes the 32-byte digest. The context must be re-initialised before reuse. */
void ev_hash_sha256_final(ev_hash_sha256_t *ctx, uint8_t out[EV_HASH_SHA256_LEN]);

/* One-shot digest of n bytes. */
void ev_hash_sha256(uint8_t out[EV_HASH_SHA256_LEN], const void *data, size_t n);
/* One-shot digest of n bytes as 64 lowercase hex digits plus NUL. */
void ev_hash_sha256_hex(char out[EV_HASH_SHA256_HEX_LEN], const void *data, size_t n);

/* Writes n bytes as 2n lowercase hex digits plus NUL into out (size 2n+1). */
void ev_hash_to_hex(char *out, const uint8_t *bytes, size_t n);

/* HMAC-SHA256 (RFC 2104) of n bytes under a key of keylen bytes: webhook
 * signatures. */
void ev_hash_hmac_sha256(uint8_t out[EV_HASH_SHA256_LEN], const void *key, size_t keylen,
                         const void *data, size_t n);

/* True when the n bytes at a and b are equal. Takes the same time whatever
 * the bytes are (no early exit), so comparing a secret leaks nothing about
 * how much of it was right. */
bool ev_hash_equal_ct(const void *a, const void *b, size_t n);

/* True when ev_hash_sha256_init() picks the SHA-NI code on this CPU. */
bool ev_hash_sha256_accelerated(void);

/* TEST ONLY: like ev_hash_sha256_init(), but this context always uses the
 * portable C code, so tests check it on CPUs that have SHA-NI too. */
void ev_hash_sha256_init_portable(ev_hash_sha256_t *ctx);

#endif
