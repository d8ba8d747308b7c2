/*
 * test_hash.c - SHA-256 against the FIPS 180-2 / NIST vectors, the padding
 * boundaries, and streaming in arbitrary pieces, on BOTH compression paths:
 * the one ev_hash_sha256_init() picks for this CPU (SHA-NI when it has it)
 * and the portable C one (ev_hash_sha256_init_portable). The two must agree
 * on every length and split, and the first use from several threads at once
 * must be safe (run under TSan).
 */
#include "ev/hash.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include "runner.h"
#endif

/* Which path the vector tests use: false = chosen for this CPU, true = portable. */
static bool portable;

static void start(ev_hash_sha256_t *ctx)
{
    if (portable)
        ev_hash_sha256_init_portable(ctx);
    else
        ev_hash_sha256_init(ctx);
}

static void hex_of(char out[EV_HASH_SHA256_HEX_LEN], const void *data, size_t n)
{
    ev_hash_sha256_t ctx;
    uint8_t digest[EV_HASH_SHA256_LEN];
    start(&ctx);
    ev_hash_sha256_update(&ctx, data, n);
    ev_hash_sha256_final(&ctx, digest);
    ev_hash_to_hex(out, digest, sizeof(digest));
    if (!portable) {
        /* The one-shot helper uses the same path. */
        char one_shot[EV_HASH_SHA256_HEX_LEN];
        ev_hash_sha256_hex(one_shot, data, n);
        CU_ASSERT_STRING_EQUAL(one_shot, out);
    }
}

static void test_nist_vectors(void)
{
    char hex[EV_HASH_SHA256_HEX_LEN];

    hex_of(hex, "", 0);
    CU_ASSERT_STRING_EQUAL(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of(hex, NULL, 0);
    CU_ASSERT_STRING_EQUAL(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of(hex, "abc", 3);
    CU_ASSERT_STRING_EQUAL(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(hex, m448, strlen(m448));
    CU_ASSERT_STRING_EQUAL(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

    const char *m896 =
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
        "klmnopqrlmnopqrsmnopqrstnopqrstu";
    hex_of(hex, m896, strlen(m896));
    CU_ASSERT_STRING_EQUAL(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a(void)
{
    /* Fed in uneven pieces so the block-straddling path is exercised too. */
    char chunk[997];
    memset(chunk, 'a', sizeof(chunk));
    ev_hash_sha256_t ctx;
    start(&ctx);
    size_t left = 1000000;
    while (left > 0) {
        size_t n = left < sizeof(chunk) ? left : sizeof(chunk);
        ev_hash_sha256_update(&ctx, chunk, n);
        left -= n;
    }
    uint8_t digest[EV_HASH_SHA256_LEN];
    ev_hash_sha256_final(&ctx, digest);
    char hex[EV_HASH_SHA256_HEX_LEN];
    ev_hash_to_hex(hex, digest, sizeof(digest));
    CU_ASSERT_STRING_EQUAL(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Expected values computed with Python's hashlib for bytes (i*7+3) & 0xff. */
static const struct {
    size_t n;
    const char *hex;
} boundary[] = {
    {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
    {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
    {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
    {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
    {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
    {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
    {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
    {128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6"},
};

static void test_padding_boundaries_and_every_split(void)
{
    uint8_t data[128];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)((i * 7 + 3) & 0xff);

    for (size_t v = 0; v < sizeof(boundary) / sizeof(boundary[0]); v++) {
        char hex[EV_HASH_SHA256_HEX_LEN];
        hex_of(hex, data, boundary[v].n);
        CU_ASSERT_STRING_EQUAL(hex, boundary[v].hex);

        /* Any split into two updates gives the same digest. */
        for (size_t cut = 0; cut <= boundary[v].n; cut++) {
            ev_hash_sha256_t ctx;
            uint8_t digest[EV_HASH_SHA256_LEN];
            start(&ctx);
            ev_hash_sha256_update(&ctx, data, cut);
            ev_hash_sha256_update(&ctx, data + cut, boundary[v].n - cut);
            ev_hash_sha256_final(&ctx, digest);
            ev_hash_to_hex(hex, digest, sizeof(digest));
            CU_ASSERT_STRING_EQUAL(hex, boundary[v].hex);
        }
    }
}

static void test_hex_is_lowercase_and_terminated(void)
{
    const uint8_t bytes[] = {0x00, 0x0f, 0xa5, 0xff};
    char out[2 * sizeof(bytes) + 1];
    memset(out, 'X', sizeof(out));
    ev_hash_to_hex(out, bytes, sizeof(bytes));
    CU_ASSERT_STRING_EQUAL(out, "000fa5ff");
}

/* The three tests above, on the portable path. */
static void test_nist_vectors_portable(void)
{
    portable = true;
    test_nist_vectors();
    portable = false;
}

static void test_million_a_portable(void)
{
    portable = true;
    test_million_a();
    portable = false;
}

static void test_padding_boundaries_portable(void)
{
    portable = true;
    test_padding_boundaries_and_every_split();
    portable = false;
}

/* Both paths agree on every length up to 20 blocks, fed in uneven pieces so
 * runs of several whole blocks reach the compression function at once. */
static void test_paths_agree(void)
{
    enum { MAX = 64 * 20 + 1 };
    uint8_t *data = malloc(MAX);
    uint32_t x = 12345;
    for (size_t i = 0; i < MAX; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (uint8_t)(x >> 16);
    }
    size_t disagree = 0;
    for (size_t n = 0; n <= MAX; n++) {
        ev_hash_sha256_t a, b;
        uint8_t da[EV_HASH_SHA256_LEN], db[EV_HASH_SHA256_LEN];
        ev_hash_sha256_init(&a);
        ev_hash_sha256_init_portable(&b);
        /* a gets it whole; b in pieces of 1, 2, ... 200 bytes, repeating. */
        ev_hash_sha256_update(&a, data, n);
        for (size_t off = 0, piece = 1; off < n; off += piece, piece = piece % 200 + 1)
            ev_hash_sha256_update(&b, data + off, piece < n - off ? piece : n - off);
        ev_hash_sha256_final(&a, da);
        ev_hash_sha256_final(&b, db);
        if (memcmp(da, db, sizeof(da)) != 0)
            disagree++;
    }
    CU_ASSERT_EQUAL(disagree, 0);
    free(data);
}

/* On x86-64: a CPU that reports the SHA extensions (CPUID.7.0:EBX bit 29,
 * with SSSE3 and SSE4.1) gets the SHA-NI code. Asked through CPUID, not
 * /proc/cpuinfo, because valgrind's virtual CPU hides SHA-NI (it cannot run
 * those instructions) and the hash must then use the portable code. */
static void test_uses_shani_when_present(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    unsigned a, b, c, d;
    bool sha_ni = false;
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 9)) && (c & (1u << 19)) &&
        __get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        sha_ni = (b & (1u << 29)) != 0;
    }
    CU_ASSERT_EQUAL(ev_hash_sha256_accelerated(), sha_ni);
#else
    CU_ASSERT_FALSE(ev_hash_sha256_accelerated());
#endif
}

#define THREADS 4

static void *hash_worker(void *arg)
{
    int *ok = arg;
    char hex[EV_HASH_SHA256_HEX_LEN];
    for (int r = 0; r < 200; r++) {
        ev_hash_sha256_hex(hex, "abc", 3);
        if (strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0)
            (*ok)++;
    }
    return NULL;
}

/* Runs first, so the threads race to be the first user of the hash and the
 * one-time choice of the compression function happens under contention. */
static void test_first_use_from_threads(void)
{
    pthread_t th[THREADS];
    int ok[THREADS] = {0};
    for (int i = 0; i < THREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, hash_worker, &ok[i]), 0);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(ok[i], 200);
    }
}

static const ev_test_t hash_tests[] = {
    {"first use from several threads", test_first_use_from_threads},
    {"NIST vectors", test_nist_vectors},
    {"one million 'a' streamed", test_million_a},
    {"padding boundaries, every split", test_padding_boundaries_and_every_split},
    {"portable: NIST vectors", test_nist_vectors_portable},
    {"portable: one million 'a' streamed", test_million_a_portable},
    {"portable: padding boundaries, every split", test_padding_boundaries_portable},
    {"both paths agree on every length and split", test_paths_agree},
    {"SHA-NI used when the CPU has it", test_uses_shani_when_present},
    {"hex encoding", test_hex_is_lowercase_and_terminated},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"hash", NULL, NULL, hash_tests, NULL, NULL},
    EV_SUITE_END,
};

int main(int argc, char **argv)
{
    int rc = ev_test_run(argc, argv, suites);
    /* After the run: the threads test must be the first user. */
    printf("\nSHA-256 path on this CPU: %s\n",
           ev_hash_sha256_accelerated() ? "SHA-NI" : "portable");
    return rc;
}
