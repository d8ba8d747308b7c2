/*
 * test_tokens.c - API tokens against a real Postgres: create shows the token
 * once and stores only its hash; verify accepts exactly the token it made
 * (with its scope) and refuses tampered, malformed, unknown and revoked
 * ones alike; list never shows a secret; HMAC-SHA256 and the constant-time
 * comparison against known answers.
 */
#include "ev/db.h"
#include "ev/error.h"
#include "ev/hash.h"
#include "ev/tokens.h"
#include "pgtest.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

static char *url;
static ev_db_t *db;
static int64_t event_id;

static int suite_init(void)
{
    if (ev_pgtest_create_db(&url) != 0 || ev_pgtest_connect(&db, url) != 0)
        return -1;
    if (ev_db_exec_script(db, "INSERT INTO events (name, theme) VALUES ('e1', 't1'), ('e2', 't2')"))
        return -1;
    return ev_pgtest_db_i64(db, "SELECT id FROM events WHERE name = 'e1'", &event_id);
}

static int suite_clean(void)
{
    ev_db_free(db);
    ev_pgtest_drop_db(url);
    return 0;
}

static void test_create_verify_scope(void)
{
    char *tok = NULL, *admin = NULL, err[256] = "";
    int64_t id = 0, aid = 0, stored = -1;
    ev_token_info_t info;

    CU_ASSERT_EQUAL_FATAL(ev_tokens_create(db, "site", false, event_id, &tok, &id, err, 256), 0);
    CU_ASSERT_EQUAL_FATAL(ev_tokens_create(db, "root", true, 0, &admin, &aid, err, 256), 0);
    CU_ASSERT_EQUAL(strncmp(tok, "ev_", 3), 0);
    /* Only the digest is stored: no column holds the token text. */
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM api_tokens WHERE token_hash = encode(sha256('%s'), 'hex')", tok);
    CU_ASSERT_EQUAL(ev_pgtest_db_i64(db, sql, &stored), 0);
    CU_ASSERT_EQUAL(stored, 1);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM api_tokens t WHERE t::text LIKE '%%%s%%'",
             strrchr(tok, '_') + 1);
    CU_ASSERT_EQUAL(ev_pgtest_db_i64(db, sql, &stored), 0);
    CU_ASSERT_EQUAL(stored, 0);

    CU_ASSERT_EQUAL(ev_tokens_verify(db, tok, &info), 0);
    CU_ASSERT_EQUAL(info.id, id);
    CU_ASSERT_EQUAL(info.scope, EV_TOKEN_SCOPE_EVENT);
    CU_ASSERT_EQUAL(info.event_id, event_id);
    CU_ASSERT_TRUE(ev_tokens_allows_event(&info, event_id));
    CU_ASSERT_FALSE(ev_tokens_allows_event(&info, event_id + 1));
    CU_ASSERT_EQUAL(ev_tokens_verify(db, admin, &info), 0);
    CU_ASSERT_EQUAL(info.scope, EV_TOKEN_SCOPE_ADMIN);
    CU_ASSERT_TRUE(ev_tokens_allows_event(&info, event_id + 1));

    /* One changed secret digit, another token's id, garbage: all refused. */
    char *bad = strdup(tok);
    char *last = bad + strlen(bad) - 1;
    *last = *last == '0' ? '1' : '0';
    CU_ASSERT_EQUAL(ev_tokens_verify(db, bad, &info), EV_ENOTFOUND);
    CU_ASSERT_EQUAL(info.scope, 0);
    char *swapped = NULL;
    swapped = strdup(admin);
    memcpy(strrchr(swapped, '_') + 1, strrchr(tok, '_') + 1, 64);
    CU_ASSERT_EQUAL(ev_tokens_verify(db, swapped, &info), EV_ENOTFOUND);
    CU_ASSERT_EQUAL(ev_tokens_verify(db, "", &info), EV_ENOTFOUND);
    CU_ASSERT_EQUAL(ev_tokens_verify(db, NULL, &info), EV_ENOTFOUND);
    CU_ASSERT_EQUAL(ev_tokens_verify(db, "ev_1_xyz", &info), EV_ENOTFOUND);
    CU_ASSERT_EQUAL(ev_tokens_verify(db, "Bearer", &info), EV_ENOTFOUND);

    /* Revoked: refused; revoking twice is fine; an unknown id is not found. */
    CU_ASSERT_EQUAL(ev_tokens_revoke(db, id), 0);
    CU_ASSERT_EQUAL(ev_tokens_revoke(db, id), 0);
    CU_ASSERT_EQUAL(ev_tokens_revoke(db, 999999), EV_ENOTFOUND);
    CU_ASSERT_EQUAL(ev_tokens_verify(db, tok, &info), EV_ENOTFOUND);

    /* The listing names tokens but never shows a secret. */
    char *list = NULL;
    CU_ASSERT_EQUAL(ev_tokens_list(db, &list), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(list, "site"));
    CU_ASSERT_PTR_NOT_NULL(strstr(list, "admin"));
    CU_ASSERT_PTR_NULL(strstr(list, strrchr(tok, '_') + 1));
    free(list);
    free(bad);
    free(swapped);
    free(tok);
    free(admin);
}

static void test_create_refuses_bad_input(void)
{
    char *tok = NULL, err[256] = "";
    int64_t id = 0;

    CU_ASSERT_EQUAL(ev_tokens_create(db, "", false, event_id, &tok, &id, err, 256), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_tokens_create(db, "x", true, event_id, &tok, &id, err, 256), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_tokens_create(db, "x", false, 0, &tok, &id, err, 256), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_tokens_create(db, "x", false, 424242, &tok, &id, err, 256), EV_ENOTFOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "424242"));
    CU_ASSERT_PTR_NULL(tok);
    int64_t n = -1;
    CU_ASSERT_EQUAL(ev_pgtest_db_i64(db, "SELECT count(*) FROM api_tokens WHERE name = 'x'", &n),
                    0);
    CU_ASSERT_EQUAL(n, 0);
}

/* RFC 4231 test case 2 and a key longer than the block (test case 6). */
static void test_hmac_known_answers(void)
{
    uint8_t mac[EV_HASH_SHA256_LEN];
    char hex[EV_HASH_SHA256_HEX_LEN];
    const char *data = "what do ya want for nothing?";

    ev_hash_hmac_sha256(mac, "Jefe", 4, data, strlen(data));
    ev_hash_to_hex(hex, mac, sizeof(mac));
    CU_ASSERT_STRING_EQUAL(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    uint8_t key[131];
    memset(key, 0xaa, sizeof(key));
    const char *big = "Test Using Larger Than Block-Size Key - Hash Key First";
    ev_hash_hmac_sha256(mac, key, sizeof(key), big, strlen(big));
    ev_hash_to_hex(hex, mac, sizeof(mac));
    CU_ASSERT_STRING_EQUAL(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    CU_ASSERT_TRUE(ev_hash_equal_ct("abc", "abc", 3));
    CU_ASSERT_FALSE(ev_hash_equal_ct("abc", "abd", 3));
    CU_ASSERT_FALSE(ev_hash_equal_ct("xbc", "abc", 3));
}

static const ev_test_t token_tests[] = {
    {"create, verify, scope, revoke, list", test_create_verify_scope},
    {"create refuses bad input", test_create_refuses_bad_input},
    {"HMAC-SHA256 known answers", test_hmac_known_answers},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"tokens", suite_init, suite_clean, token_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
