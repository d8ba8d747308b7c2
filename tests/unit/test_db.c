/*
 * test_db.c - the connection wrapper: error classification, password
 * redaction, LISTEN/NOTIFY, reconnect after the server drops the session,
 * and text clipping for the database.
 *
 * Needs Postgres (DATABASE_URL) except for the redaction and clipping tests.
 */
#include "ev/db.h"
#include "ev/error.h"
#include "pgtest.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

static char *url;

/* Connection attempts that fail must never echo the password, whatever the
 * shape of the URL (libpq quotes malformed connection strings back). */
static void test_connect_error_hides_password(void)
{
    const char *const bad[] = {
        "postgresql://alice:Sup3rSecretPw@127.0.0.1:1/db",
        "postgresql://alice:Sup3rSecretPw@127.0.0.1:notaport/db",
        "postgresql://alice:Sup3rS%ZZecretPw@127.0.0.1:1/db",
        "postgresql://alice:Sup3rSecretPw@127.0.0.1:1/db?bogus_option=1",
        "postgres://alice:Sup3r%53ecretPw@127.0.0.1:1/db",
        "host=127.0.0.1 port=1 user=alice password=Sup3rSecretPw dbname=db",
        "host=127.0.0.1 port=1 password='Sup3rSecretPw' dbname",
        "host=127.0.0.1 port=1 password=Sup3rSecretPw bogus_key=1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ev_db_t *db = (ev_db_t *)1;
        char err[512] = "";
        CU_ASSERT_EQUAL(ev_db_connect(&db, bad[i], err, sizeof(err)), EV_EDBCONN);
        CU_ASSERT_PTR_NULL(db);
        CU_ASSERT(strlen(err) > 10);
        CU_ASSERT_PTR_NULL(strstr(err, "Sup3r"));
        CU_ASSERT_PTR_NULL(strstr(err, "ecretPw"));
        CU_ASSERT_PTR_NULL(strchr(err, '\n'));
        if (strstr(err, "Sup3r") || strstr(err, "ecretPw"))
            fprintf(stderr, "leaked in: %s\n", err);
    }
    ev_db_t *db = (ev_db_t *)1;
    char err[64] = "";
    CU_ASSERT_EQUAL(ev_db_connect(&db, "", err, sizeof(err)), EV_EDBCONN);
    CU_ASSERT_PTR_NULL(db);
    CU_ASSERT(err[0] != '\0');
}

static void test_exec_and_errors(void)
{
    ev_db_t *db = NULL;
    CU_ASSERT_FATAL(ev_pgtest_connect(&db, url) == 0);

    PGresult *res = NULL;
    const char *params[] = {"20", "22"};
    CU_ASSERT_EQUAL(ev_db_exec(db, &res, "SELECT $1::int + $2::int", 2, params), 0);
    CU_ASSERT_FATAL(res != NULL);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(res, 0, 0), "42");
    PQclear(res);

    /* A bad statement is EV_EDB with its SQLSTATE; the connection survives. */
    res = (PGresult *)1;
    CU_ASSERT_EQUAL(ev_db_exec(db, &res, "SELEC 1", 0, NULL), EV_EDB);
    CU_ASSERT_PTR_NULL(res);
    CU_ASSERT_STRING_EQUAL(ev_db_sqlstate(db), "42601");
    CU_ASSERT_PTR_NOT_NULL(strstr(ev_db_error(db), "syntax error"));
    CU_ASSERT_EQUAL(ev_db_exec(db, NULL, "SELECT 1", 0, NULL), 0);
    CU_ASSERT_STRING_EQUAL(ev_db_sqlstate(db), "");

    /* A transaction left failed is rolled back by ensure. */
    CU_ASSERT_EQUAL(ev_db_exec(db, NULL, "BEGIN", 0, NULL), 0);
    CU_ASSERT_EQUAL(ev_db_exec(db, NULL, "SELECT 1/0", 0, NULL), EV_EDB);
    CU_ASSERT_EQUAL(ev_db_exec(db, NULL, "SELECT 1", 0, NULL), EV_EDB); /* aborted tx */
    CU_ASSERT_EQUAL(ev_db_ensure(db), 0);
    CU_ASSERT_EQUAL(ev_db_exec(db, NULL, "SELECT 1", 0, NULL), 0);

    /* Scripts run several statements; notices stay quiet. */
    CU_ASSERT_EQUAL(ev_db_exec_script(db, "CREATE TEMP TABLE t (x int);"
                                          " CREATE TEMP TABLE IF NOT EXISTS t (x int);"
                                          " INSERT INTO t VALUES (1), (2);"),
                    0);
    int64_t n = 0;
    CU_ASSERT_EQUAL(ev_pgtest_db_i64(db, "SELECT sum(x) FROM t", &n), 0);
    CU_ASSERT_EQUAL(n, 3);
    ev_db_free(db);
    ev_db_free(NULL);
}

static void test_listen_notify(void)
{
    ev_db_t *listener = NULL, *sender = NULL;
    CU_ASSERT_FATAL(ev_pgtest_connect(&listener, url) == 0);
    CU_ASSERT_FATAL(ev_pgtest_connect(&sender, url) == 0);
    CU_ASSERT_EQUAL(ev_db_listen(listener, "ev_test_chan"), 0);
    CU_ASSERT_EQUAL(ev_db_listen(listener, "ev_test_chan"), 0); /* remembered once */

    CU_ASSERT_EQUAL(ev_db_wait_notify(listener, 50), 0);
    CU_ASSERT_EQUAL(ev_db_exec(sender, NULL, "NOTIFY ev_test_chan", 0, NULL), 0);
    CU_ASSERT_EQUAL(ev_db_wait_notify(listener, 5000), 1);
    /* Several notifications before a wait are reported by one wake-up. */
    CU_ASSERT_EQUAL(ev_db_exec_script(sender, "SELECT pg_notify('ev_test_chan', 'a');"
                                              " SELECT pg_notify('ev_test_chan', 'b');"),
                    0);
    CU_ASSERT_EQUAL(ev_db_wait_notify(listener, 5000), 1);
    /* Drained: nothing left (either both came at once or the second is
     * picked up here; in both cases the queue is empty afterwards). */
    int r = ev_db_wait_notify(listener, 200);
    CU_ASSERT(r == 0 || r == 1);
    CU_ASSERT_EQUAL(ev_db_wait_notify(listener, 50), 0);
    ev_db_free(listener);
    ev_db_free(sender);
}

/* The server kills our session: the next statement says EV_EDBCONN, ensure
 * reconnects, the LISTEN is re-issued, and the first wait after the
 * reconnect wakes the caller because notifications may have been missed. */
static void test_reconnect_relistens(void)
{
    ev_db_t *db = NULL, *admin = NULL;
    CU_ASSERT_FATAL(ev_pgtest_connect(&db, url) == 0);
    CU_ASSERT_FATAL(ev_pgtest_connect(&admin, url) == 0);
    CU_ASSERT_EQUAL(ev_db_listen(db, "ev_test_chan2"), 0);
    int64_t pid = 0;
    CU_ASSERT_EQUAL(ev_pgtest_db_i64(db, "SELECT pg_backend_pid()", &pid), 0);

    char p[24];
    snprintf(p, sizeof(p), "%lld", (long long)pid);
    const char *params[] = {p};
    /* With a timeout, pg_terminate_backend waits until the session is gone. */
    int64_t gone = 0;
    PGresult *res = NULL;
    CU_ASSERT_EQUAL(
        ev_db_exec(admin, &res, "SELECT pg_terminate_backend($1::int, 10000)", 1, params), 0);
    gone = res && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    CU_ASSERT_FATAL(gone == 1);

    CU_ASSERT_EQUAL(ev_db_exec(db, NULL, "SELECT 1", 0, NULL), EV_EDBCONN);
    CU_ASSERT_EQUAL(ev_db_ensure(db), 0);
    CU_ASSERT_EQUAL(ev_db_exec(db, NULL, "SELECT 1", 0, NULL), 0);
    CU_ASSERT_EQUAL(ev_db_wait_notify(db, 0), 1); /* "you may have missed some" */
    CU_ASSERT_EQUAL(ev_db_wait_notify(db, 50), 0);
    CU_ASSERT_EQUAL(ev_db_exec(admin, NULL, "NOTIFY ev_test_chan2", 0, NULL), 0);
    CU_ASSERT_EQUAL(ev_db_wait_notify(db, 5000), 1);
    ev_db_free(db);
    ev_db_free(admin);
}

/* How many statements this session has prepared (pg_prepared_statements is
 * per session, so it is read through the same connection). */
static int64_t prepared_count(ev_db_t *db)
{
    int64_t n = -1;
    CU_ASSERT_EQUAL(ev_pgtest_db_i64(db, "SELECT count(*) FROM pg_prepared_statements", &n), 0);
    return n;
}

/* A parameterised statement is parsed once per session: repeated calls reuse
 * it, a different text (even in a reused buffer) gets its own, and after a
 * reconnect it is prepared again on the new session. */
static void test_statements_prepared_once(void)
{
    ev_db_t *db = NULL, *admin = NULL;
    CU_ASSERT_FATAL(ev_pgtest_connect(&db, url) == 0);
    CU_ASSERT_FATAL(ev_pgtest_connect(&admin, url) == 0);
    const char *params[] = {"41"};
    for (int i = 0; i < 20; i++) {
        PGresult *res = NULL;
        CU_ASSERT_EQUAL(ev_db_exec(db, &res, "SELECT $1::int + 1", 1, params), 0);
        CU_ASSERT_STRING_EQUAL(res ? PQgetvalue(res, 0, 0) : "", "42");
        PQclear(res);
    }
    CU_ASSERT_EQUAL(prepared_count(db), 1);

    /* Same buffer, other text: not confused with the first statement. */
    char buf[64];
    snprintf(buf, sizeof(buf), "SELECT $1::int * 2");
    PGresult *res = NULL;
    CU_ASSERT_EQUAL(ev_db_exec(db, &res, buf, 1, params), 0);
    CU_ASSERT_STRING_EQUAL(res ? PQgetvalue(res, 0, 0) : "", "82");
    PQclear(res);
    snprintf(buf, sizeof(buf), "SELECT $1::int - 1");
    CU_ASSERT_EQUAL(ev_db_exec(db, &res, buf, 1, params), 0);
    CU_ASSERT_STRING_EQUAL(res ? PQgetvalue(res, 0, 0) : "", "40");
    PQclear(res);
    CU_ASSERT_EQUAL(prepared_count(db), 3);

    /* A new session has none; the statement is prepared again and works. */
    int64_t pid = 0;
    CU_ASSERT_EQUAL(ev_pgtest_db_i64(db, "SELECT pg_backend_pid()", &pid), 0);
    char p[24];
    snprintf(p, sizeof(p), "%lld", (long long)pid);
    const char *kp[] = {p};
    CU_ASSERT_EQUAL(ev_db_exec(admin, NULL, "SELECT pg_terminate_backend($1::int, 10000)", 1, kp),
                    0);
    CU_ASSERT_EQUAL(ev_db_exec(db, NULL, "SELECT $1::int + 1", 1, params), EV_EDBCONN);
    CU_ASSERT_EQUAL(ev_db_ensure(db), 0);
    CU_ASSERT_EQUAL(ev_db_exec(db, &res, "SELECT $1::int + 1", 1, params), 0);
    CU_ASSERT_STRING_EQUAL(res ? PQgetvalue(res, 0, 0) : "", "42");
    PQclear(res);
    CU_ASSERT_EQUAL(prepared_count(db), 1);
    ev_db_free(db);
    ev_db_free(admin);
}

static void test_clip_text(void)
{
    CU_ASSERT_PTR_NULL(ev_db_clip_text(NULL, 10));
    char *s = ev_db_clip_text("hello", 10);
    CU_ASSERT_STRING_EQUAL(s, "hello");
    free(s);
    s = ev_db_clip_text("hello", 3);
    CU_ASSERT_STRING_EQUAL(s, "hel");
    free(s);
    /* "é" is two bytes: never cut in the middle of a character. */
    s = ev_db_clip_text("ab\xc3\xa9", 3);
    CU_ASSERT_STRING_EQUAL(s, "ab");
    free(s);
    s = ev_db_clip_text("ab\xc3\xa9", 4);
    CU_ASSERT_STRING_EQUAL(s, "ab\xc3\xa9");
    free(s);
    /* Invalid bytes and control characters become harmless. */
    s = ev_db_clip_text("a\xff"
                        "b\x01"
                        "c\nd\te\xc3",
                        100);
    CU_ASSERT_STRING_EQUAL(s, "a?b c\nd\te?");
    free(s);
    s = ev_db_clip_text("\xed\xa0\x80x", 100); /* a UTF-16 surrogate, invalid in UTF-8 */
    CU_ASSERT_STRING_EQUAL(s, "???x");
    free(s);
    s = ev_db_clip_text("\xf0\x9f\x98\x80!", 100);
    CU_ASSERT_STRING_EQUAL(s, "\xf0\x9f\x98\x80!");
    free(s);
}

/* What clip produces is accepted by Postgres as text. */
static void test_clip_text_roundtrip(void)
{
    ev_db_t *db = NULL;
    CU_ASSERT_FATAL(ev_pgtest_connect(&db, url) == 0);
    const char *nasty = "ok \xff\xfe \xc3 \xe2\x82 \xf4\x90\x80\x80 \x1b[31m end \xe2\x82\xac";
    const char *raw[] = {nasty};
    CU_ASSERT_EQUAL(ev_db_exec(db, NULL, "SELECT $1::text", 1, raw), EV_EDB);
    char *clean = ev_db_clip_text(nasty, 1000);
    const char *params[] = {clean};
    PGresult *res = NULL;
    CU_ASSERT_EQUAL(ev_db_exec(db, &res, "SELECT $1::text", 1, params), 0);
    if (res)
        CU_ASSERT_STRING_EQUAL(PQgetvalue(res, 0, 0), clean);
    PQclear(res);
    free(clean);
    ev_db_free(db);
}

static int suite_init(void)
{
    return ev_pgtest_create_db(&url) != 0;
}

static int suite_clean(void)
{
    ev_pgtest_drop_db(url);
    return 0;
}

static const ev_test_t db_offline_tests[] = {
    {"connect error hides password", test_connect_error_hides_password},
    {"clip text", test_clip_text},
    EV_TEST_END,
};

static const ev_test_t db_tests[] = {
    {"exec and errors", test_exec_and_errors},
    {"listen notify", test_listen_notify},
    {"reconnect relistens", test_reconnect_relistens},
    {"statements prepared once per session", test_statements_prepared_once},
    {"clip text roundtrip", test_clip_text_roundtrip},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"db_offline", NULL, NULL, db_offline_tests, NULL, NULL},
    {"db", suite_init, suite_clean, db_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
