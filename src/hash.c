/*
 * hash.c - SHA-256 (FIPS 180-4): portable C, plus the x86-64 SHA extensions
 * (SHA-NI) when the CPU has them.
 *
 * How: the textbook compression function over 64-byte blocks with a
 * big-endian length trailer; no table beyond the 64 round constants, no
 * dependence on host byte order (words are assembled byte by byte). On
 * x86-64 a second compression function uses the SHA-NI instructions
 * (sha256rnds2/msg1/msg2), compiled for them with a target attribute so the
 * build needs no global -m flags, and chosen once per process by asking the
 * CPU (cpuid) under pthread_once; each context records the function it was
 * initialised with. The SHA-NI code hashes about 8 times as fast (1.8
 * against 0.22 GB/s in bench/results/micro.txt), which matters because every
 * uploaded file is hashed. Tests can start a context on the portable code
 * (ev_hash_sha256_init_portable) so both paths are checked on a CPU that has
 * SHA-NI. Under valgrind, whose virtual CPU hides SHA-NI, the portable code
 * runs.
 *
 * Threads: any thread. The only shared state is the chosen function,
 * written once inside pthread_once and only read after it; everything else
 * lives in the caller's context. No locks.
 */
#include "ev/hash.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_SHANI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

static void compress(uint32_t state[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }

    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = h + S1 + ch + K[i] + w[i];
        uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

/* Portable: `blocks` consecutive 64-byte blocks. */
static void compress_portable(uint32_t state[8], const uint8_t *p, size_t blocks)
{
    for (; blocks > 0; blocks--, p += 64)
        compress(state, p);
}

#ifdef HAVE_SHANI
/*
 * SHA-NI: the same function with the SHA extensions, following Intel's
 * reference ("Intel SHA Extensions", 2013). The state lives in two registers
 * as ABEF and CDGH; each group g of four rounds adds K[4g..4g+3] to message
 * words W[4g..4g+3] (kept four at a time in msg[g % 4]), runs two
 * sha256rnds2, and extends the schedule with sha256msg1/msg2 four words
 * ahead.
 */
__attribute__((target("sha,sse4.1"))) static void compress_shani(uint32_t state[8],
                                                                 const uint8_t *p, size_t blocks)
{
    /* Byte order of each 32-bit word: the message is big-endian. */
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    /* From A..H in order to the ABEF / CDGH layout the instructions use. */
    __m128i tmp = _mm_loadu_si128((const __m128i *)&state[0]); /* ABCD */
    __m128i s1 = _mm_loadu_si128((const __m128i *)&state[4]);  /* EFGH */
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                        /* CDAB */
    s1 = _mm_shuffle_epi32(s1, 0x1B);                          /* EFGH -> HGFE */
    __m128i s0 = _mm_alignr_epi8(tmp, s1, 8);                  /* ABEF */
    s1 = _mm_blend_epi16(s1, tmp, 0xF0);                       /* CDGH */

    for (; blocks > 0; blocks--, p += 64) {
        __m128i abef = s0, cdgh = s1, msg[4], m;
#pragma GCC unroll 16
        for (int g = 0; g < 16; g++) {
            if (g < 4)
                msg[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), bswap);
            m = _mm_add_epi32(msg[g % 4], _mm_loadu_si128((const __m128i *)&K[4 * g]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            if (g >= 3 && g < 15) {
                /* The next four schedule words W[t..t+3]: msg1 already
                 * gave W[t-16] + s0(W[t-15]); add W[t-7], then msg2 adds
                 * s1(W[t-2]). */
                __m128i t = _mm_alignr_epi8(msg[g % 4], msg[(g + 3) % 4], 4);
                msg[(g + 1) % 4] = _mm_add_epi32(msg[(g + 1) % 4], t);
                msg[(g + 1) % 4] = _mm_sha256msg2_epu32(msg[(g + 1) % 4], msg[g % 4]);
            }
            m = _mm_shuffle_epi32(m, 0x0E);
            s0 = _mm_sha256rnds2_epu32(s0, s1, m);
            if (g >= 1 && g < 13)
                msg[(g + 3) % 4] = _mm_sha256msg1_epu32(msg[(g + 3) % 4], msg[g % 4]);
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
    }

    /* Back from ABEF / CDGH to A..H. */
    tmp = _mm_shuffle_epi32(s0, 0x1B);   /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);    /* DCHG */
    s0 = _mm_blend_epi16(tmp, s1, 0xF0); /* DCBA */
    s1 = _mm_alignr_epi8(s1, tmp, 8);    /* HGFE */
    _mm_storeu_si128((__m128i *)&state[0], s0);
    _mm_storeu_si128((__m128i *)&state[4], s1);
}

/* SHA extensions (CPUID.7.0:EBX bit 29) plus the SSSE3 and SSE4.1 the
 * surrounding shuffles and blends need (CPUID.1:ECX bits 9 and 19). */
static bool cpu_has_shani(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 9)) || !(c & (1u << 19)))
        return false;
    if (__get_cpuid_max(0, NULL) < 7)
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & (1u << 29)) != 0;
}
#endif

/* The compression function of this process: written once under pick_once,
 * only read after pthread_once has returned (which orders the write before
 * every read). */
static ev_hash_compress_fn chosen;
static pthread_once_t pick_once = PTHREAD_ONCE_INIT;

static void pick(void)
{
    chosen = compress_portable;
#ifdef HAVE_SHANI
    if (cpu_has_shani())
        chosen = compress_shani;
#endif
}

bool ev_hash_sha256_accelerated(void)
{
    pthread_once(&pick_once, pick);
    return chosen != compress_portable;
}

static void start(ev_hash_sha256_t *ctx, ev_hash_compress_fn fn)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(ctx->state, iv, sizeof(iv));
    ctx->total = 0;
    ctx->used = 0;
    ctx->compress = fn;
}

void ev_hash_sha256_init(ev_hash_sha256_t *ctx)
{
    pthread_once(&pick_once, pick);
    start(ctx, chosen);
}

void ev_hash_sha256_init_portable(ev_hash_sha256_t *ctx)
{
    start(ctx, compress_portable);
}

void ev_hash_sha256_update(ev_hash_sha256_t *ctx, const void *data, size_t n)
{
    const uint8_t *p = data;
    if (n == 0)
        return; /* data may be NULL; memcpy must never see it. */
    ctx->total += n;

    /* Top up a pending partial block first, then hash whole blocks straight
     * from the caller's buffer, then keep the tail for next time. */
    if (ctx->used > 0) {
        size_t take = 64 - ctx->used;
        if (take > n)
            take = n;
        memcpy(ctx->block + ctx->used, p, take);
        ctx->used += take;
        p += take;
        n -= take;
        if (ctx->used < 64)
            return;
        ctx->compress(ctx->state, ctx->block, 1);
        ctx->used = 0;
    }
    if (n >= 64) {
        ctx->compress(ctx->state, p, n / 64);
        p += n / 64 * 64;
        n %= 64;
    }
    if (n > 0) {
        memcpy(ctx->block, p, n);
        ctx->used = n;
    }
}

void ev_hash_sha256_final(ev_hash_sha256_t *ctx, uint8_t out[EV_HASH_SHA256_LEN])
{
    uint64_t bits = ctx->total * 8;

    /* Padding: a single 0x80, zeros up to 56 mod 64, then the bit length. */
    ctx->block[ctx->used++] = 0x80;
    if (ctx->used > 56) {
        memset(ctx->block + ctx->used, 0, 64 - ctx->used);
        ctx->compress(ctx->state, ctx->block, 1);
        ctx->used = 0;
    }
    memset(ctx->block + ctx->used, 0, 56 - ctx->used);
    for (int i = 0; i < 8; i++)
        ctx->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    ctx->compress(ctx->state, ctx->block, 1);

    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(ctx->state[i] >> 24);
        out[4 * i + 1] = (uint8_t)(ctx->state[i] >> 16);
        out[4 * i + 2] = (uint8_t)(ctx->state[i] >> 8);
        out[4 * i + 3] = (uint8_t)ctx->state[i];
    }
    /* Leave no trace of the input behind in the caller's context. */
    memset(ctx->block, 0, sizeof(ctx->block));
    ctx->used = 0;
}

void ev_hash_sha256(uint8_t out[EV_HASH_SHA256_LEN], const void *data, size_t n)
{
    ev_hash_sha256_t ctx;
    ev_hash_sha256_init(&ctx);
    ev_hash_sha256_update(&ctx, data, n);
    ev_hash_sha256_final(&ctx, out);
}

void ev_hash_to_hex(char *out, const uint8_t *bytes, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

void ev_hash_sha256_hex(char out[EV_HASH_SHA256_HEX_LEN], const void *data, size_t n)
{
    uint8_t digest[EV_HASH_SHA256_LEN];
    ev_hash_sha256(digest, data, n);
    ev_hash_to_hex(out, digest, sizeof(digest));
}

void ev_hash_hmac_sha256(uint8_t out[EV_HASH_SHA256_LEN], const void *key, size_t keylen,
                         const void *data, size_t n)
{
    uint8_t k[64] = {0}, pad[64], inner[EV_HASH_SHA256_LEN];
    ev_hash_sha256_t ctx;

    /* A key longer than the block is replaced by its digest (RFC 2104 §2). */
    if (keylen > sizeof(k))
        ev_hash_sha256(k, key, keylen);
    else if (keylen > 0)
        memcpy(k, key, keylen);
    for (size_t i = 0; i < sizeof(k); i++)
        pad[i] = k[i] ^ 0x36;
    ev_hash_sha256_init(&ctx);
    ev_hash_sha256_update(&ctx, pad, sizeof(pad));
    ev_hash_sha256_update(&ctx, data, n);
    ev_hash_sha256_final(&ctx, inner);
    for (size_t i = 0; i < sizeof(k); i++)
        pad[i] = k[i] ^ 0x5c;
    ev_hash_sha256_init(&ctx);
    ev_hash_sha256_update(&ctx, pad, sizeof(pad));
    ev_hash_sha256_update(&ctx, inner, sizeof(inner));
    ev_hash_sha256_final(&ctx, out);
}

bool ev_hash_equal_ct(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t diff = 0;

    for (size_t i = 0; i < n; i++)
        diff |= (uint8_t)(x[i] ^ y[i]);
    return diff == 0;
}
