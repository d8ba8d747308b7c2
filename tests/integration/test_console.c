/*
 * test_console.c - the operator's requeue and cancel against a real
 * Postgres: what they change, what they leave alone, what they record, and
 * that a requeue racing with workers never touches a submission being
 * processed (every worker's lease-guarded write still lands).
 *
 * Needs Postgres (DATABASE_URL). One throwaway database for the file; every
 * test starts from empty tables.
 */
#include "ev/console.h"
#include "ev/db.h"
#include "ev/error.h"
#include "ev/queue.h"
#include "pgtest.h"
#include "runner.h"

#include <CUnit/Basic.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *url;
static ev_db_t *db;

static void sql(const char *script)
{
    CU_ASSERT_EQUAL(ev_db_exec_script(db, script), 0);
}

/* Two events; submissions 1-3 of event 1 and 4-5 of event 2, in the given
 * statuses. */
static void fresh(void)
{
    CU_ASSERT_EQUAL_FATAL(
        ev_db_exec_script(db, "TRUNCATE events, submissions, control_actions RESTART IDENTITY "
                              "CASCADE;"
                              " INSERT INTO events (name, theme) VALUES ('e1', 't'), ('e2', 't');"
                              " INSERT INTO submissions (event_id, title, status, attempts,"
                              "   lease_owner, heartbeat_at) VALUES"
                              " (1, 'a', 'needs_review', 5, NULL, NULL),"
                              " (1, 'b', 'processing', 2, 'w1', now()),"
                              " (1, 'c', 'failed', 5, NULL, NULL),"
                              " (2, 'd', 'needs_review', 5, NULL, NULL),"
                              " (2, 'e', 'validated', 1, NULL, NULL);"),
        0);
}

static void test_requeue_by_status_and_event(void)
{
    fresh();
    char err[256] = "", *report = NULL;
    ev_queue_selector_t sel = {.status = "needs_review", .event_id = 1};
    CU_ASSERT_EQUAL(ev_console_requeue_db(db, &sel, false, "test", &report, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(report);
    CU_ASSERT_PTR_NOT_NULL(strstr(report, "requeued 1 submission(s): 1\n"));
    free(report);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, 1), "pending");
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, 4), "needs_review"); /* other event */
    CU_ASSERT_EQUAL(ev_pgtest_q64(db, "SELECT attempts FROM submissions WHERE id = 1"), 0);
    CU_ASSERT_EQUAL(
        ev_pgtest_q64(db, "SELECT count(*) FROM submissions WHERE id = 1 AND run_after <= now()"),
        1);
    CU_ASSERT_EQUAL(
        ev_pgtest_q64(db, "SELECT count(*) FROM control_actions WHERE action = 'requeue'"
                          " AND actor = 'test' AND result->'requeued' = '[1]'::jsonb"
                          " AND args->>'status' = 'needs_review' AND (args->>'event')::int = 1"),
        1);
}

static void test_requeue_never_touches_processing(void)
{
    fresh();
    char err[256] = "", *report = NULL;
    const int64_t ids[] = {1, 2, 42};
    ev_queue_selector_t sel = {.ids = ids, .nids = 3};
    CU_ASSERT_EQUAL(ev_console_requeue_db(db, &sel, false, "test", &report, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(report);
    CU_ASSERT_PTR_NOT_NULL(strstr(report, "left alone 2: 2 (processing), 42 (not found)"));
    free(report);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, 2), "processing");
    CU_ASSERT_EQUAL(ev_pgtest_q64(db, "SELECT attempts FROM submissions WHERE id = 2"), 2);
    /* --status processing matches nothing: processing rows are never eligible. */
    ev_queue_selector_t proc = {.status = "processing"};
    CU_ASSERT_EQUAL(ev_console_requeue_db(db, &proc, false, "test", &report, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(report, "requeued 0 submission(s)"));
    free(report);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, 2), "processing");
}

static void test_dry_run_changes_and_records_nothing(void)
{
    fresh();
    char err[256] = "", *report = NULL;
    ev_queue_selector_t sel = {.status = "needs_review"};
    CU_ASSERT_EQUAL(ev_console_requeue_db(db, &sel, true, "test", &report, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(report);
    CU_ASSERT_PTR_NOT_NULL(strstr(report, "would requeue 2 submission(s): 1 4\n"));
    free(report);
    CU_ASSERT_EQUAL(
        ev_pgtest_q64(db, "SELECT count(*) FROM submissions WHERE status = 'needs_review'"), 2);
    CU_ASSERT_EQUAL(ev_pgtest_q64(db, "SELECT count(*) FROM control_actions"), 0);
}

static void test_bad_selector_refused(void)
{
    fresh();
    char err[256] = "", *report = NULL;
    ev_queue_selector_t none = {0};
    CU_ASSERT_EQUAL(ev_console_requeue_db(db, &none, false, "test", &report, err, sizeof(err)),
                    EV_EINVAL);
    CU_ASSERT_PTR_NULL(report);
    ev_queue_selector_t bad = {.status = "sleeping"};
    CU_ASSERT_EQUAL(ev_console_requeue_db(db, &bad, false, "test", &report, err, sizeof(err)),
                    EV_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "sleeping"));
    CU_ASSERT_EQUAL(ev_pgtest_q64(db, "SELECT count(*) FROM control_actions"), 0);
}

static void test_cancel(void)
{
    fresh();
    char err[256] = "", *report = NULL;
    const int64_t ids[] = {1, 2, 3, 5};
    CU_ASSERT_EQUAL(ev_console_cancel_db(db, ids, 4, "test", &report, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(report);
    CU_ASSERT_PTR_NOT_NULL(strstr(report, "cancelled 2 submission(s): 1 3\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(report, "2 (processing), 5 (validated)"));
    free(report);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, 1), "cancelled");
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, 2), "processing");
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, 5), "validated");
    ev_queue_counts_t c;
    CU_ASSERT_EQUAL(ev_queue_counts(db, &c), 0);
    CU_ASSERT_EQUAL(c.cancelled, 2);
    CU_ASSERT_EQUAL(ev_pgtest_q64(db, "SELECT count(*) FROM control_actions WHERE action = 'cancel'"
                                      " AND result->'cancelled' = '[1, 3]'::jsonb"),
                    1);
    /* A cancelled submission comes back with requeue --status cancelled. */
    ev_queue_selector_t sel = {.status = "cancelled"};
    CU_ASSERT_EQUAL(ev_console_requeue_db(db, &sel, false, "test", &report, err, sizeof(err)), 0);
    free(report);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, 3), "pending");
}

/* What `status` shows of money: per provider today and in total, the limit
 * in force (set for the cluster wins over the configured one), the events
 * that cost most with their budgets. */
static void test_spend_report(void)
{
    fresh();
    sql("TRUNCATE spend_daily, console_settings;"
        " UPDATE events SET budget_usd = 0.5 WHERE id = 2;"
        " INSERT INTO spend_daily (day, provider, model, event_id, calls, usd) VALUES"
        " ((now() AT TIME ZONE 'America/Los_Angeles')::date, 'gemini', 'm', 1, 3, 1.25),"
        " ((now() AT TIME ZONE 'America/Los_Angeles')::date - 1, 'gemini', 'm', 1, 1, 2),"
        " ((now() AT TIME ZONE 'America/Los_Angeles')::date, 'groq', 'q', 2, 2, 0.5);");
    ev_stats_buf_t b = {0};
    CU_ASSERT_EQUAL(ev_console_spend_report(db, 1.0, &b), 0);
    CU_ASSERT_FATAL(b.data != NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "daily limit 1.0000 USD per provider\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "gemini         today     1.2500 USD   total     3.2500 "
                                          "USD   4 calls   LIMIT REACHED"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "budget 0.5000 (spent: calls held)"));
    ev_stats_buf_free(&b);
    sql("INSERT INTO console_settings (key, value) VALUES ('daily_spend_limit_usd', '5')");
    CU_ASSERT_EQUAL(ev_console_spend_report(db, 1.0, &b), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "5.0000 USD per provider (set with 'spend limit')"));
    CU_ASSERT_PTR_NULL(strstr(b.data, "LIMIT REACHED"));
    ev_stats_buf_free(&b);

    json_object *o = NULL, *v = NULL;
    CU_ASSERT_EQUAL_FATAL(ev_console_spend_json(db, 1.0, &o), 0);
    CU_ASSERT(json_object_object_get_ex(o, "daily_limit_usd", &v) &&
              json_object_get_double(v) == 5.0);
    json_object *prov = NULL, *g = NULL, *evs = NULL;
    CU_ASSERT(json_object_object_get_ex(o, "providers", &prov) &&
              json_object_object_get_ex(prov, "gemini", &g));
    CU_ASSERT(json_object_object_get_ex(g, "total_usd", &v) && json_object_get_double(v) == 3.25);
    CU_ASSERT(json_object_object_get_ex(o, "events", &evs) && json_object_array_length(evs) == 2);
    json_object_put(o);
}

/* ---- requeue racing with workers ---------------------------------------- */

enum { RACE_SUBS = 600, RACE_WORKERS = 3 };

static _Atomic int lease_lost, race_errors, race_completed;

static void *race_worker(void *arg)
{
    ev_db_t *mine = NULL;
    char owner[32], err[256];
    snprintf(owner, sizeof(owner), "race-%d", (int)(intptr_t)arg);
    if (ev_db_connect(&mine, url, err, sizeof(err)) < 0) {
        atomic_fetch_add(&race_errors, 1);
        return NULL;
    }
    while (atomic_load(&race_completed) < RACE_SUBS) {
        ev_job_t job;
        int rc = ev_queue_claim(mine, owner, &job);
        if (rc == EV_EEMPTY)
            continue;
        if (rc < 0) {
            atomic_fetch_add(&race_errors, 1);
            break;
        }
        /* Held for a moment, as a real check would be. */
        rc = ev_queue_check_lease(mine, &job);
        if (rc == 0)
            rc = ev_queue_complete(mine, &job, "needs_review", "x");
        if (rc == EV_ELEASE)
            atomic_fetch_add(&lease_lost, 1);
        else if (rc < 0)
            atomic_fetch_add(&race_errors, 1);
    }
    ev_db_free(mine);
    return NULL;
}

/* Workers finish submissions as needs_review while the operator keeps
 * requeueing needs_review: work cycles, but no worker ever loses its lease,
 * because a processing row is never requeued. */
static void test_requeue_races_with_workers(void)
{
    fresh();
    sql("TRUNCATE submissions RESTART IDENTITY CASCADE;"
        " INSERT INTO submissions (event_id, title) SELECT 1, 'r' || g"
        " FROM generate_series(1, 600) g;");
    pthread_t th[RACE_WORKERS];
    atomic_store(&race_completed, 0);
    for (int i = 0; i < RACE_WORKERS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, race_worker, (void *)(intptr_t)i), 0);
    int requeues = 0;
    char err[256] = "", *report = NULL;
    ev_queue_selector_t sel = {.status = "needs_review"};
    for (int round = 0; round < 200; round++) {
        CU_ASSERT_EQUAL(ev_console_requeue_db(db, &sel, false, "race", &report, err, sizeof(err)),
                        0);
        free(report);
        requeues++;
    }
    /* Let the workers finish what is left. */
    atomic_store(&race_completed, RACE_SUBS);
    for (int i = 0; i < RACE_WORKERS; i++)
        pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(atomic_load(&lease_lost), 0);
    CU_ASSERT_EQUAL(atomic_load(&race_errors), 0);
    CU_ASSERT_EQUAL(ev_pgtest_q64(db, "SELECT count(*) FROM control_actions WHERE actor = 'race'"),
                    requeues);
    /* Some requeues really did bring work back while workers were busy. */
    CU_ASSERT(ev_pgtest_q64(db, "SELECT count(*) FROM control_actions WHERE actor = 'race'"
                                " AND jsonb_array_length(result->'requeued') > 0") > 0);
}

static int suite_init(void)
{
    return ev_pgtest_open(&url, &db) != 0;
}

static int suite_clean(void)
{
    ev_pgtest_close(url, db);
    return 0;
}

static const ev_test_t console_tests[] = {
    {"requeue by status and event, recorded", test_requeue_by_status_and_event},
    {"requeue never touches processing", test_requeue_never_touches_processing},
    {"dry run changes and records nothing", test_dry_run_changes_and_records_nothing},
    {"bad selector refused", test_bad_selector_refused},
    {"cancel", test_cancel},
    {"spend report for status", test_spend_report},
    {"requeue racing with 3 workers", test_requeue_races_with_workers},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"console", suite_init, suite_clean, console_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
