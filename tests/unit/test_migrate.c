/*
 * test_migrate.c - schema migrations and the constraints of 0001_init.
 *
 * Needs Postgres (DATABASE_URL); each test works in its own throwaway
 * database from tests/support/pgtest.c.
 */
#include "ev/db.h"
#include "ev/error.h"
#include "ev/migrate.h"
#include "pgtest.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

static char *shared_url; /* migrated database for the constraint tests */
static ev_db_t *shared_db;

static int64_t q64(ev_db_t *db, const char *sql)
{
    int64_t v = -1;
    CU_ASSERT_EQUAL(ev_pgtest_db_i64(db, sql, &v), 0);
    return v;
}

static const char *const tables[] = {"events",           "submissions",
                                     "submission_files", "validation_results",
                                     "verdict_cache",    "schema_migrations"};

static void test_fresh_then_idempotent(void)
{
    char *url = NULL;
    ev_db_t *db = NULL;
    char err[512] = "";
    int applied = -1;
    CU_ASSERT_FATAL(ev_pgtest_create_empty_db(&url) == 0);
    CU_ASSERT_FATAL(ev_pgtest_connect(&db, url) == 0);

    CU_ASSERT_FATAL(ev_migrations_count >= 1);
    CU_ASSERT_EQUAL(ev_migrate_run(db, &applied, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(applied, (int)ev_migrations_count);
    CU_ASSERT_STRING_EQUAL(err, "");
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "SELECT to_regclass('%s') IS NOT NULL", tables[i]);
        CU_ASSERT_EQUAL(q64(db, sql), 1);
    }
    CU_ASSERT_EQUAL(q64(db, "SELECT count(*) FROM schema_migrations"),
                    (int64_t)ev_migrations_count);
    CU_ASSERT_EQUAL(q64(db, "SELECT count(*) FROM schema_migrations WHERE version = 1"
                            " AND name = '0001_init' AND applied_at <= now()"),
                    1);

    /* A second run finds everything recorded and changes nothing. */
    applied = -1;
    CU_ASSERT_EQUAL(ev_migrate_run(db, &applied, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(applied, 0);
    CU_ASSERT_EQUAL(q64(db, "SELECT count(*) FROM schema_migrations"),
                    (int64_t)ev_migrations_count);

    /* The migration lock is released: another session can take it at once. */
    CU_ASSERT_EQUAL(
        q64(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
        0);

    ev_db_free(db);
    ev_pgtest_drop_db(url);
}

typedef struct racer {
    const char *url;
    pthread_barrier_t *barrier;
    int rc;
    int applied;
    char err[512];
} racer_t;

static void *race_migrate(void *arg)
{
    racer_t *r = arg;
    ev_db_t *db = NULL;
    r->rc = ev_db_connect(&db, r->url, r->err, sizeof(r->err));
    pthread_barrier_wait(r->barrier);
    if (r->rc == 0)
        r->rc = ev_migrate_run(db, &r->applied, r->err, sizeof(r->err));
    ev_db_free(db);
    return NULL;
}

/* Several replicas starting at once: all succeed, the schema exists once. */
static void test_concurrent_migrate(void)
{
    enum { THREADS = 4, ROUNDS = 3 };
    for (int round = 0; round < ROUNDS; round++) {
        char *url = NULL;
        CU_ASSERT_FATAL(ev_pgtest_create_empty_db(&url) == 0);
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, THREADS);
        racer_t r[THREADS];
        pthread_t th[THREADS];
        for (int i = 0; i < THREADS; i++) {
            memset(&r[i], 0, sizeof(r[i]));
            r[i].url = url;
            r[i].barrier = &barrier;
            CU_ASSERT_FATAL(pthread_create(&th[i], NULL, race_migrate, &r[i]) == 0);
        }
        int total = 0;
        for (int i = 0; i < THREADS; i++) {
            pthread_join(th[i], NULL);
            CU_ASSERT_EQUAL(r[i].rc, 0);
            if (r[i].rc != 0)
                fprintf(stderr, "racer %d: %s\n", i, r[i].err);
            total += r[i].applied;
        }
        pthread_barrier_destroy(&barrier);
        CU_ASSERT_EQUAL(total, (int)ev_migrations_count);

        ev_db_t *db = NULL;
        CU_ASSERT_FATAL(ev_pgtest_connect(&db, url) == 0);
        CU_ASSERT_EQUAL(q64(db, "SELECT count(*) FROM schema_migrations"),
                        (int64_t)ev_migrations_count);
        CU_ASSERT_EQUAL(q64(db, "SELECT count(*) FROM pg_class WHERE relname = 'submissions'"
                                " AND relkind = 'r'"),
                        1);
        CU_ASSERT_EQUAL(q64(db, "SELECT count(*) FROM pg_trigger WHERE tgname ="
                                " 'submissions_notify_insert'"),
                        1);
        ev_db_free(db);
        ev_pgtest_drop_db(url);
    }
}

/* A database migrated by a newer binary is refused, with a message saying so. */
static void test_unknown_version_refused(void)
{
    char *url = NULL;
    ev_db_t *db = NULL;
    char err[512] = "";
    int applied = -1;
    CU_ASSERT_FATAL(ev_pgtest_create_db(&url) == 0);
    CU_ASSERT_FATAL(ev_pgtest_connect(&db, url) == 0);
    CU_ASSERT_EQUAL(ev_db_exec_script(db, "INSERT INTO schema_migrations (version, name)"
                                          " VALUES (9999, '9999_from_the_future')"),
                    0);
    CU_ASSERT_EQUAL(ev_migrate_run(db, &applied, err, sizeof(err)), EV_EVERSION);
    CU_ASSERT_EQUAL(applied, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "9999"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "upgrade"));
    /* The refusal left the lock free and the connection usable. */
    CU_ASSERT_EQUAL(
        q64(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
        0);
    ev_db_free(db);
    ev_pgtest_drop_db(url);
}

/* A migration that fails half-way leaves nothing behind and is not recorded;
 * the ones before it stay applied, and a fixed version applies later. */
static void test_failed_migration_is_atomic(void)
{
    char *url = NULL;
    ev_db_t *db = NULL;
    char err[512] = "";
    int applied = -1;
    CU_ASSERT_FATAL(ev_pgtest_create_empty_db(&url) == 0);
    CU_ASSERT_FATAL(ev_pgtest_connect(&db, url) == 0);

    ev_migration_t broken[] = {
        ev_migrations[0],
        {2, "0002_broken", "CREATE TABLE half_done (x int); SELECT no_such_function();"},
    };
    CU_ASSERT_EQUAL(ev_migrate_apply(db, broken, 2, &applied, err, sizeof(err)), EV_EDB);
    CU_ASSERT_EQUAL(applied, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "0002_broken"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no_such_function"));
    CU_ASSERT_EQUAL(q64(db, "SELECT count(*) FROM schema_migrations"), 1);
    CU_ASSERT_EQUAL(q64(db, "SELECT to_regclass('half_done') IS NULL"), 1);
    CU_ASSERT_EQUAL(q64(db, "SELECT to_regclass('submissions') IS NOT NULL"), 1);

    ev_migration_t fixed[] = {
        ev_migrations[0],
        {2, "0002_fixed", "CREATE TABLE half_done (x int);"},
    };
    CU_ASSERT_EQUAL(ev_migrate_apply(db, fixed, 2, &applied, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(applied, 1);
    CU_ASSERT_EQUAL(q64(db, "SELECT count(*) FROM schema_migrations"), 2);
    CU_ASSERT_EQUAL(q64(db, "SELECT to_regclass('half_done') IS NOT NULL"), 1);

    ev_db_free(db);
    ev_pgtest_drop_db(url);
}

/* ---- constraints of 0001_init ------------------------------------------ */

static int64_t insert_submission(const char *extra_cols, const char *extra_vals)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO submissions (event_id, title%s) VALUES ((SELECT id FROM events"
             " WHERE name = 'constraints'), 'a title'%s) RETURNING id",
             extra_cols, extra_vals);
    int64_t id = -1;
    CU_ASSERT_EQUAL(ev_pgtest_db_i64(shared_db, sql, &id), 0);
    return id;
}

/* Runs sql with one bigint parameter; returns the code. */
static int exec1(const char *sql, int64_t id)
{
    char p[24];
    snprintf(p, sizeof(p), "%lld", (long long)id);
    const char *params[] = {p};
    return ev_db_exec(shared_db, NULL, sql, 1, params);
}

static void test_submission_defaults(void)
{
    int64_t id = insert_submission("", "");
    CU_ASSERT_FATAL(id > 0);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM submissions WHERE id = %lld AND status = 'pending'"
             " AND attempts = 0 AND priority = 0 AND run_after <= now() AND lease_owner IS NULL"
             " AND heartbeat_at IS NULL AND created_at IS NOT NULL AND updated_at IS NOT NULL",
             (long long)id);
    CU_ASSERT_EQUAL(q64(shared_db, sql), 1);

    /* updated_at is maintained by the trigger, whatever the writer says. */
    CU_ASSERT_EQUAL(exec1("UPDATE submissions SET title = 'renamed',"
                          " updated_at = '2000-01-01' WHERE id = $1",
                          id),
                    0);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM submissions WHERE id = %lld AND updated_at > '2001-01-01'",
             (long long)id);
    CU_ASSERT_EQUAL(q64(shared_db, sql), 1);
}

static void test_bad_values_rejected(void)
{
    int64_t id = insert_submission("", "");
    CU_ASSERT_FATAL(id > 0);

    CU_ASSERT_EQUAL(exec1("UPDATE submissions SET status = 'done' WHERE id = $1", id), EV_EDB);
    CU_ASSERT_STRING_EQUAL(ev_db_sqlstate(shared_db), "23514"); /* check_violation */
    CU_ASSERT_EQUAL(exec1("UPDATE submissions SET attempts = -1 WHERE id = $1", id), EV_EDB);
    CU_ASSERT_STRING_EQUAL(ev_db_sqlstate(shared_db), "23514");

    /* Exactly one of content / storage_path. */
    CU_ASSERT_EQUAL(exec1("INSERT INTO submission_files (submission_id, kind, filename, content,"
                          " storage_path) VALUES ($1, 'pdf', 'a.pdf', '\\x25504446', 'a.pdf')",
                          id),
                    EV_EDB);
    CU_ASSERT_STRING_EQUAL(ev_db_sqlstate(shared_db), "23514");
    CU_ASSERT_EQUAL(exec1("INSERT INTO submission_files (submission_id, kind, filename)"
                          " VALUES ($1, 'pdf', 'a.pdf')",
                          id),
                    EV_EDB);
    CU_ASSERT_STRING_EQUAL(ev_db_sqlstate(shared_db), "23514");
    CU_ASSERT_EQUAL(exec1("INSERT INTO submission_files (submission_id, kind, filename, content)"
                          " VALUES ($1, 'pdf', 'a.pdf', '\\x25504446')",
                          id),
                    0);
    CU_ASSERT_EQUAL(exec1("INSERT INTO submission_files (submission_id, kind, storage_path)"
                          " VALUES ($1, 'image', 'img/a.png')",
                          id),
                    0);
    CU_ASSERT_EQUAL(exec1("INSERT INTO submission_files (submission_id, kind, content)"
                          " VALUES ($1, 'zip', '\\x00')",
                          id),
                    EV_EDB);
    CU_ASSERT_STRING_EQUAL(ev_db_sqlstate(shared_db), "23514");

    /* Results: known checks and verdicts only, one current row per check. */
    CU_ASSERT_EQUAL(exec1("INSERT INTO validation_results (submission_id, check_name, verdict)"
                          " VALUES ($1, 'theme', 'pass')",
                          id),
                    0);
    CU_ASSERT_EQUAL(exec1("INSERT INTO validation_results (submission_id, check_name, verdict)"
                          " VALUES ($1, 'theme', 'fail')",
                          id),
                    EV_EDB);
    CU_ASSERT_STRING_EQUAL(ev_db_sqlstate(shared_db), "23505"); /* unique_violation */
    CU_ASSERT_EQUAL(exec1("INSERT INTO validation_results (submission_id, check_name, verdict)"
                          " VALUES ($1, 'audio', 'pass')",
                          id),
                    EV_EDB);
    CU_ASSERT_EQUAL(exec1("INSERT INTO validation_results (submission_id, check_name, verdict)"
                          " VALUES ($1, 'pdf', 'maybe')",
                          id),
                    EV_EDB);
    CU_ASSERT_STRING_EQUAL(ev_db_sqlstate(shared_db), "23514");
    CU_ASSERT_EQUAL(ev_db_exec_script(shared_db, "INSERT INTO verdict_cache (cache_key, verdict)"
                                                 " VALUES ('k1', 'error')"),
                    EV_EDB);

    /* Deleting a submission takes its files and results with it. */
    CU_ASSERT_EQUAL(exec1("DELETE FROM submissions WHERE id = $1", id), 0);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT (SELECT count(*) FROM submission_files WHERE submission_id = %lld)"
             " + (SELECT count(*) FROM validation_results WHERE submission_id = %lld)",
             (long long)id, (long long)id);
    CU_ASSERT_EQUAL(q64(shared_db, sql), 0);

    /* Unknown event: refused. */
    CU_ASSERT_EQUAL(ev_db_exec_script(shared_db, "INSERT INTO submissions (event_id, title)"
                                                 " VALUES (987654321, 'orphan')"),
                    EV_EDB);
    CU_ASSERT_STRING_EQUAL(ev_db_sqlstate(shared_db), "23503"); /* foreign_key_violation */
}

static int constraints_init(void)
{
    if (ev_pgtest_create_db(&shared_url) != 0 || ev_pgtest_connect(&shared_db, shared_url) != 0)
        return 1;
    return ev_db_exec_script(shared_db, "INSERT INTO events (name, theme)"
                                        " VALUES ('constraints', 'anything')") != 0;
}

static int constraints_clean(void)
{
    ev_db_free(shared_db);
    ev_pgtest_drop_db(shared_url);
    return 0;
}

static const ev_test_t migrate_tests[] = {
    {"fresh then idempotent", test_fresh_then_idempotent},
    {"concurrent migrate", test_concurrent_migrate},
    {"unknown version refused", test_unknown_version_refused},
    {"failed migration is atomic", test_failed_migration_is_atomic},
    EV_TEST_END,
};

static const ev_test_t schema_constraints_tests[] = {
    {"submission defaults", test_submission_defaults},
    {"bad values rejected", test_bad_values_rejected},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"migrate", NULL, NULL, migrate_tests, NULL, NULL},
    {"schema_constraints", constraints_init, constraints_clean, schema_constraints_tests, NULL,
     NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
