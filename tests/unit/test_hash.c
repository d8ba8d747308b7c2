/*
 * test_hash.c - SHA-256 against the FIPS 180-2 / NIST vectors, the padding
 * boundaries, and streaming in arbitrary pieces.
 */
#include "ev/hash.h"

#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

static void hex_of(char out[EV_HASH_SHA256_HEX_LEN], const void *data, size_t n)
{
    ev_hash_sha256_hex(out, data, n);
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
    ev_hash_sha256_init(&ctx);
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
            ev_hash_sha256_init(&ctx);
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

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("hash", NULL, NULL);
    if (!s || !CU_add_test(s, "NIST vectors", test_nist_vectors) ||
        !CU_add_test(s, "one million 'a' streamed", test_million_a) ||
        !CU_add_test(s, "padding boundaries, every split",
                     test_padding_boundaries_and_every_split) ||
        !CU_add_test(s, "hex encoding", test_hex_is_lowercase_and_terminated)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = CU_get_number_of_failures() != 0;
    CU_cleanup_registry();
    return failed;
}
