/*
 * test_queue.c - the Postgres queue against a real server.
 *
 * Claims under contention (6 threads, own connections, 2,000 submissions:
 * each processed exactly once), claim order, run_after, heartbeats, lease
 * rescue and the stale worker's guarded writes, requeue backoff and
 * needs_review, release, rescue past max attempts, LISTEN/NOTIFY wake-ups for
 * rows inserted by plain SQL, counts.
 *
 * Needs Postgres (DATABASE_URL). One throwaway database for the file; every
 * test starts from empty tables.
 */
#include "ev/db.h"
#include "ev/error.h"
#include "ev/queue.h"
#include "pgtest.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

static char *url;
static ev_db_t *db; /* the main thread's connection */

static void sql(const char *script)
{
    CU_ASSERT_EQUAL(ev_db_exec_script(db, script), 0);
}

static int64_t event_id(void)
{
    return ev_pgtest_q64(db, "SELECT id FROM events WHERE name = 'ev1'");
}

/* Inserts n submissions of the event with the given priority; returns the first id. */
static int64_t add_subs(int n, int priority)
{
    return ev_pgtest_q64(db,
                         "WITH ins AS (INSERT INTO submissions (event_id, title, priority)"
                         " SELECT (SELECT id FROM events WHERE name = 'ev1'), 'sub ' || g, %d"
                         " FROM generate_series(1, %d) g RETURNING id) SELECT min(id) FROM ins",
                         priority, n);
}

/* Every test starts from empty tables and one event. */
static void fresh(void)
{
    CU_ASSERT_EQUAL_FATAL(
        ev_db_exec_script(db, "TRUNCATE events, submissions RESTART IDENTITY CASCADE;"
                              " INSERT INTO events (name, theme) VALUES ('ev1', 'robots');"),
        0);
}

/* ---- many workers, one queue -------------------------------------------- */

enum { N_SUBS = 2000, N_WORKERS = 6 };

static _Atomic int claimed[N_SUBS];
static _Atomic int64_t first_id;
static _Atomic int doubles, bad_attempts, complete_errors, claim_errors, total_claims;

typedef struct worker {
    int index;
    pthread_barrier_t *barrier;
    int claims;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    ev_db_t *mine = NULL;
    char owner[32], err[256];
    snprintf(owner, sizeof(owner), "test-worker-%d", w->index);
    int rc = ev_db_connect(&mine, url, err, sizeof(err));
    pthread_barrier_wait(w->barrier);
    if (rc < 0) {
        atomic_fetch_add(&claim_errors, 1);
        return NULL;
    }
    for (;;) {
        ev_job_t job;
        rc = ev_queue_claim(mine, owner, &job);
        if (rc == EV_EEMPTY)
            break;
        if (rc < 0) {
            atomic_fetch_add(&claim_errors, 1);
            break;
        }
        w->claims++;
        atomic_fetch_add(&total_claims, 1);
        int64_t idx = job.submission_id - atomic_load(&first_id);
        if (idx < 0 || idx >= N_SUBS || atomic_fetch_add(&claimed[idx], 1) != 0)
            atomic_fetch_add(&doubles, 1);
        if (job.attempt != 1 || strcmp(job.lease_owner, owner) != 0)
            atomic_fetch_add(&bad_attempts, 1);
        if (ev_queue_complete(mine, &job, "validated", NULL) != 0)
            atomic_fetch_add(&complete_errors, 1);
    }
    ev_db_free(mine);
    return NULL;
}

static void test_concurrent_claims_exactly_once(void)
{
    fresh();
    atomic_store(&first_id, add_subs(N_SUBS, 0));
    for (int i = 0; i < N_SUBS; i++)
        atomic_store(&claimed[i], 0);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, N_WORKERS);
    pthread_t th[N_WORKERS];
    worker_t w[N_WORKERS];
    for (int i = 0; i < N_WORKERS; i++) {
        w[i] = (worker_t){.index = i, .barrier = &barrier, .claims = 0};
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    int busy_workers = 0;
    for (int i = 0; i < N_WORKERS; i++) {
        pthread_join(th[i], NULL);
        busy_workers += w[i].claims > 0;
    }
    pthread_barrier_destroy(&barrier);

    CU_ASSERT_EQUAL(atomic_load(&claim_errors), 0);
    CU_ASSERT_EQUAL(atomic_load(&doubles), 0);
    CU_ASSERT_EQUAL(atomic_load(&bad_attempts), 0);
    CU_ASSERT_EQUAL(atomic_load(&complete_errors), 0);
    CU_ASSERT_EQUAL(atomic_load(&total_claims), N_SUBS);
    int missing = 0;
    for (int i = 0; i < N_SUBS; i++)
        missing += atomic_load(&claimed[i]) != 1;
    CU_ASSERT_EQUAL(missing, 0);
    CU_ASSERT(busy_workers >= 2); /* the work really was shared */

    ev_queue_counts_t c;
    CU_ASSERT_EQUAL(ev_queue_counts(db, &c), 0);
    CU_ASSERT_EQUAL(c.validated, N_SUBS);
    CU_ASSERT_EQUAL(c.pending + c.processing + c.rejected + c.needs_review + c.failed, 0);
    CU_ASSERT_EQUAL(ev_pgtest_q64(db, "SELECT count(*) FROM submissions WHERE attempts <> 1"
                                      " OR lease_owner IS NOT NULL"),
                    0);
    int64_t out = -1;
    CU_ASSERT_EQUAL(ev_queue_outstanding(db, &out), 0);
    CU_ASSERT_EQUAL(out, 0);
}

/* ---- order and run_after -------------------------------------------------- */

static void test_priority_then_oldest(void)
{
    fresh();
    int64_t ev = event_id();
    char script[1024];
    /* ids 1..6: (priority, age) */
    snprintf(script, sizeof(script),
             "INSERT INTO submissions (event_id, title, priority, created_at) VALUES"
             " (%lld, 'p0 old',    0, now() - interval '10 minutes'),"
             " (%lld, 'p5 new',    5, now() - interval '1 minute'),"
             " (%lld, 'p5 old',    5, now() - interval '5 minutes'),"
             " (%lld, 'p1',        1, now() - interval '20 minutes'),"
             " (%lld, 'p0 newest', 0, now());"
             "INSERT INTO submissions (event_id, title, priority, run_after) VALUES"
             " (%lld, 'p9 later',  9, now() + interval '1 hour');",
             (long long)ev, (long long)ev, (long long)ev, (long long)ev, (long long)ev,
             (long long)ev);
    sql(script);
    const int64_t expect[] = {3, 2, 4, 1, 5};
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        ev_job_t job;
        CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "order-test", &job), 0);
        CU_ASSERT_EQUAL(job.submission_id, expect[i]);
        CU_ASSERT_EQUAL(job.event_id, ev);
        CU_ASSERT_EQUAL(job.attempt, 1);
        CU_ASSERT_STRING_EQUAL(job.lease_owner, "order-test");
    }
    /* The high-priority row whose run_after is in the future is not runnable. */
    ev_job_t job;
    CU_ASSERT_EQUAL(ev_queue_claim(db, "order-test", &job), EV_EEMPTY);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, 6), "pending");
    sql("UPDATE submissions SET run_after = now() WHERE id = 6");
    CU_ASSERT_EQUAL(ev_queue_claim(db, "order-test", &job), 0);
    CU_ASSERT_EQUAL(job.submission_id, 6);
    CU_ASSERT_EQUAL(job.priority, 9);

    char longowner[200];
    memset(longowner, 'x', sizeof(longowner) - 1);
    longowner[sizeof(longowner) - 1] = '\0';
    CU_ASSERT_EQUAL(ev_queue_claim(db, longowner, &job), EV_EINVAL);
    CU_ASSERT_EQUAL(ev_queue_claim(db, "", &job), EV_EINVAL);
}

/* ---- leases --------------------------------------------------------------- */

static void test_heartbeat_refreshes_own_leases(void)
{
    fresh();
    add_subs(3, 0);
    ev_job_t a1, a2, b1;
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "owner-a", &a1), 0);
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "owner-a", &a2), 0);
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "owner-b", &b1), 0);
    sql("UPDATE submissions SET heartbeat_at = now() - interval '1 hour'");

    int64_t n = -1;
    CU_ASSERT_EQUAL(ev_queue_heartbeat(db, "owner-a", &n), 0);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(ev_pgtest_q64(db,
                                  "SELECT count(*) FROM submissions WHERE lease_owner = 'owner-a'"
                                  " AND heartbeat_at > now() - interval '1 minute'"),
                    2);
    CU_ASSERT_EQUAL(ev_pgtest_q64(db,
                                  "SELECT count(*) FROM submissions WHERE lease_owner = 'owner-b'"
                                  " AND heartbeat_at < now() - interval '59 minutes'"),
                    1);
    CU_ASSERT_EQUAL(ev_queue_heartbeat(db, "owner-nobody", &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(ev_queue_heartbeat(db, "owner-a", NULL), 0);

    /* Only the lease that stopped heartbeating is rescued. */
    int64_t rescued = -1, failed = -1;
    CU_ASSERT_EQUAL(ev_queue_rescue(db, 120, 5, &rescued, &failed), 0);
    CU_ASSERT_EQUAL(rescued, 1);
    CU_ASSERT_EQUAL(failed, 0);
    CU_ASSERT_EQUAL(ev_queue_check_lease(db, &a1), 0);
    CU_ASSERT_EQUAL(ev_queue_check_lease(db, &a2), 0);
    CU_ASSERT_EQUAL(ev_queue_check_lease(db, &b1), EV_ELEASE);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, b1.submission_id), "pending");
}

static void test_expired_lease_rescued_stale_writes_refused(void)
{
    fresh();
    int64_t id = add_subs(1, 0);
    ev_job_t stale, fresh;
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "dead-worker", &stale), 0);
    CU_ASSERT_EQUAL(ev_queue_check_lease(db, &stale), 0);
    sql("UPDATE submissions SET heartbeat_at = now() - interval '10 minutes'");

    int64_t rescued = -1, failed = -1;
    CU_ASSERT_EQUAL(ev_queue_rescue(db, 120, 5, &rescued, &failed), 0);
    CU_ASSERT_EQUAL(rescued, 1);
    CU_ASSERT_EQUAL(failed, 0);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, id), "pending");
    CU_ASSERT_EQUAL(
        ev_pgtest_q64(db,
                      "SELECT count(*) FROM submissions WHERE id = %lld AND attempts = 1"
                      " AND lease_owner IS NULL AND run_after <= now()"
                      " AND last_error LIKE 'lease expired on attempt 1 (held by dead-worker%%'",
                      (long long)id),
        1);

    /* The stale worker wakes up: none of its writes land. */
    CU_ASSERT_EQUAL(ev_queue_check_lease(db, &stale), EV_ELEASE);
    CU_ASSERT_EQUAL(ev_queue_complete(db, &stale, "validated", NULL), EV_ELEASE);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, id), "pending");

    /* Another worker takes it over; the stale one still cannot interfere,
     * even under the same owner name (the attempt differs). */
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "dead-worker", &fresh), 0);
    CU_ASSERT_EQUAL(fresh.submission_id, id);
    CU_ASSERT_EQUAL(fresh.attempt, 2);
    CU_ASSERT_EQUAL(ev_queue_complete(db, &stale, "rejected", "stale"), EV_ELEASE);
    CU_ASSERT_EQUAL(ev_queue_requeue(db, &stale, 5, 1000, 60000, "stale", NULL), EV_ELEASE);
    CU_ASSERT_EQUAL(ev_queue_release(db, &stale), EV_ELEASE);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, id), "processing");
    CU_ASSERT_EQUAL(ev_queue_complete(db, &fresh, "validated", NULL), 0);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, id), "validated");
    CU_ASSERT_EQUAL(
        ev_pgtest_q64(db,
                      "SELECT count(*) FROM submissions WHERE id = %lld AND last_error IS NULL"
                      " AND heartbeat_at IS NULL AND lease_owner IS NULL",
                      (long long)id),
        1);
    /* Finished is final: a second completion is refused. */
    CU_ASSERT_EQUAL(ev_queue_complete(db, &fresh, "rejected", NULL), EV_ELEASE);
    CU_ASSERT_EQUAL(ev_queue_complete(db, &fresh, "pending", NULL), EV_EINVAL);
}

static void test_rescue_past_max_attempts_fails(void)
{
    fresh();
    int64_t id = add_subs(1, 0);
    for (int attempt = 1; attempt <= 3; attempt++) {
        ev_job_t job;
        CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "crashy", &job), 0);
        CU_ASSERT_EQUAL(job.attempt, attempt);
        sql("UPDATE submissions SET heartbeat_at = now() - interval '1 hour'");
        int64_t rescued = -1, failed = -1;
        CU_ASSERT_EQUAL(ev_queue_rescue(db, 60, 3, &rescued, &failed), 0);
        CU_ASSERT_EQUAL(rescued, attempt < 3 ? 1 : 0);
        CU_ASSERT_EQUAL(failed, attempt < 3 ? 0 : 1);
    }
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, id), "failed");
    CU_ASSERT_EQUAL(ev_pgtest_q64(db,
                                  "SELECT count(*) FROM submissions WHERE id = %lld AND"
                                  " last_error LIKE 'processing died 3 times (lease expired)%%'",
                                  (long long)id),
                    1);
    ev_job_t job;
    CU_ASSERT_EQUAL(ev_queue_claim(db, "crashy", &job), EV_EEMPTY);
    CU_ASSERT_EQUAL(ev_queue_rescue(db, 0, 3, NULL, NULL), EV_EINVAL);
}

/* ---- retry paths ------------------------------------------------------------ */

/* Seconds from now until the row's run_after. */
static double delay_s(int64_t id)
{
    PGresult *res = NULL;
    char p[24];
    snprintf(p, sizeof(p), "%lld", (long long)id);
    const char *params[] = {p};
    double d = -1;
    if (ev_db_exec(db, &res,
                   "SELECT extract(epoch FROM run_after - clock_timestamp())"
                   " FROM submissions WHERE id = $1::bigint",
                   1, params) == 0)
        d = strtod(PQgetvalue(res, 0, 0), NULL);
    PQclear(res);
    return d;
}

static void test_requeue_backoff_then_needs_review(void)
{
    fresh();
    int64_t id = add_subs(1, 0);
    const char *st = NULL;
    ev_job_t job;

    /* attempt 1: ceiling 60 s, equal jitter -> [30 s, 60 s) */
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "w", &job), 0);
    CU_ASSERT_EQUAL(ev_queue_requeue(db, &job, 3, 60000, 600000, "gemini: HTTP 503", &st), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_STRING_EQUAL(st, "pending");
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, id), "pending");
    double d = delay_s(id);
    CU_ASSERT(d > 25 && d <= 60);
    CU_ASSERT_EQUAL(
        ev_pgtest_q64(db,
                      "SELECT count(*) FROM submissions WHERE id = %lld AND attempts = 1"
                      " AND last_error = 'gemini: HTTP 503' AND lease_owner IS NULL",
                      (long long)id),
        1);
    /* Backed off: not claimable until run_after. */
    CU_ASSERT_EQUAL(ev_queue_claim(db, "w", &job), EV_EEMPTY);
    CU_ASSERT_EQUAL(ev_queue_requeue(db, &job, 3, 60000, 600000, "x", NULL), EV_ELEASE);

    /* attempt 2: ceiling 120 s -> [60 s, 120 s) */
    sql("UPDATE submissions SET run_after = now()");
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "w", &job), 0);
    CU_ASSERT_EQUAL(job.attempt, 2);
    CU_ASSERT_EQUAL(ev_queue_requeue(db, &job, 3, 60000, 600000, NULL, &st), 0);
    CU_ASSERT_STRING_EQUAL(st, "pending");
    d = delay_s(id);
    CU_ASSERT(d > 55 && d <= 120);

    /* attempt 3 = max: needs a human. */
    sql("UPDATE submissions SET run_after = now()");
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "w", &job), 0);
    CU_ASSERT_EQUAL(job.attempt, 3);
    CU_ASSERT_EQUAL(ev_queue_requeue(db, &job, 3, 60000, 600000, "still 503", &st), 0);
    CU_ASSERT_STRING_EQUAL(st, "needs_review");
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, id), "needs_review");
    CU_ASSERT_EQUAL(ev_queue_claim(db, "w", &job), EV_EEMPTY);
}

static void test_requeue_cap_and_long_error(void)
{
    fresh();
    int64_t id = add_subs(1, 0);
    sql("UPDATE submissions SET attempts = 19"); /* the claim makes it attempt 20 */
    ev_job_t job;
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "w", &job), 0);
    CU_ASSERT_EQUAL(job.attempt, 20);

    /* A huge, partly invalid error text is clipped, not refused. */
    size_t n = 10000;
    char *big = malloc(n + 1);
    CU_ASSERT_FATAL(big != NULL);
    for (size_t i = 0; i < n; i++)
        big[i] = (i % 97 == 0) ? (char)0xff : (char)('a' + i % 26);
    big[n] = '\0';
    CU_ASSERT_EQUAL(ev_queue_requeue(db, &job, 100, 1000, 5000, big, NULL), 0);
    free(big);
    double d = delay_s(id);
    CU_ASSERT(d > 1 && d <= 5); /* 2^19 s capped at 5 s: [2.5 s, 5 s) */
    CU_ASSERT_EQUAL(
        ev_pgtest_q64(db, "SELECT octet_length(last_error) FROM submissions WHERE id = %lld",
                      (long long)id),
        EV_QUEUE_LAST_ERROR_MAX);
}

static void test_release_keeps_attempt(void)
{
    fresh();
    int64_t id = add_subs(1, 0);
    ev_job_t job, again;
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "w", &job), 0);
    CU_ASSERT_EQUAL(job.attempt, 1);
    CU_ASSERT_EQUAL(ev_queue_release(db, &job), 0);
    CU_ASSERT_STRING_EQUAL(ev_pgtest_status_of(db, id), "pending");
    CU_ASSERT_EQUAL(
        ev_pgtest_q64(db,
                      "SELECT count(*) FROM submissions WHERE id = %lld AND attempts = 0"
                      " AND run_after <= now() AND lease_owner IS NULL",
                      (long long)id),
        1);
    CU_ASSERT_EQUAL(ev_queue_release(db, &job), EV_ELEASE);
    /* Runnable at once, and the next claim is attempt 1 again. */
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "w2", &again), 0);
    CU_ASSERT_EQUAL(again.submission_id, id);
    CU_ASSERT_EQUAL(again.attempt, 1);
    /* The released claim's guard (owner w, attempt 1) does not match w2's. */
    CU_ASSERT_EQUAL(ev_queue_complete(db, &job, "validated", NULL), EV_ELEASE);
    CU_ASSERT_EQUAL(ev_queue_complete(db, &again, "rejected", "off-topic"), 0);
}

/* ---- notifications -------------------------------------------------------- */

static void test_plain_insert_notifies(void)
{
    fresh();
    ev_db_t *listener = NULL;
    CU_ASSERT_FATAL(ev_pgtest_connect(&listener, url) == 0);
    CU_ASSERT_EQUAL_FATAL(ev_db_listen(listener, EV_QUEUE_CHANNEL), 0);
    while (ev_db_wait_notify(listener, 0) == 1) /* drain leftovers */
        ;

    /* What an upload front end does: only event_id and title. */
    sql("INSERT INTO submissions (event_id, title)"
        " VALUES ((SELECT id FROM events WHERE name = 'ev1'), 'from the front end')");
    CU_ASSERT_EQUAL(ev_db_wait_notify(listener, 5000), 1);
    CU_ASSERT_EQUAL(ev_pgtest_q64(db, "SELECT count(*) FROM submissions WHERE status = 'pending'"),
                    1);

    /* Claiming (-> processing) does not wake anyone. */
    ev_job_t job;
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "w", &job), 0);
    CU_ASSERT_EQUAL(ev_db_wait_notify(listener, 300), 0);

    /* A released job is runnable again: the other workers hear about it. */
    CU_ASSERT_EQUAL(ev_queue_release(db, &job), 0);
    CU_ASSERT_EQUAL(ev_db_wait_notify(listener, 5000), 1);

    /* A row that only becomes runnable later does not notify (polling
     * picks it up), and a bulk insert wakes the listener once. */
    sql("INSERT INTO submissions (event_id, title, run_after)"
        " VALUES ((SELECT id FROM events WHERE name = 'ev1'), 'later', now() + interval '1 day')");
    CU_ASSERT_EQUAL(ev_db_wait_notify(listener, 300), 0);
    add_subs(100, 0);
    CU_ASSERT_EQUAL(ev_db_wait_notify(listener, 5000), 1);
    CU_ASSERT_EQUAL(ev_db_wait_notify(listener, 300), 0);
    ev_db_free(listener);
}

/* ---- counts ------------------------------------------------------------------ */

static void test_counts_and_outstanding(void)
{
    fresh();
    add_subs(7, 0);
    ev_job_t j;
    const char *finals[] = {"validated", "rejected", "failed", "needs_review"};
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "w", &j), 0);
        CU_ASSERT_EQUAL(ev_queue_complete(db, &j, finals[i], NULL), 0);
    }
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "w", &j), 0); /* stays processing */
    CU_ASSERT_EQUAL_FATAL(ev_queue_claim(db, "w", &j), 0);
    CU_ASSERT_EQUAL(ev_queue_requeue(db, &j, 1, 1000, 1000, "x", NULL), 0); /* needs_review */
    /* one left pending */

    ev_queue_counts_t c;
    CU_ASSERT_EQUAL(ev_queue_counts(db, &c), 0);
    CU_ASSERT_EQUAL(c.pending, 1);
    CU_ASSERT_EQUAL(c.processing, 1);
    CU_ASSERT_EQUAL(c.validated, 1);
    CU_ASSERT_EQUAL(c.rejected, 1);
    CU_ASSERT_EQUAL(c.needs_review, 2);
    CU_ASSERT_EQUAL(c.failed, 1);
    int64_t out = -1;
    CU_ASSERT_EQUAL(ev_queue_outstanding(db, &out), 0);
    CU_ASSERT_EQUAL(out, 2);
    /* A pending row waiting for its backoff still counts as outstanding. */
    sql("UPDATE submissions SET run_after = now() + interval '1 hour' WHERE status = 'pending'");
    CU_ASSERT_EQUAL(ev_queue_outstanding(db, &out), 0);
    CU_ASSERT_EQUAL(out, 2);
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

static const ev_test_t queue_tests[] = {
    {"6 workers, 2000 submissions, each once", test_concurrent_claims_exactly_once},
    {"priority then oldest, run_after", test_priority_then_oldest},
    {"heartbeat refreshes own leases", test_heartbeat_refreshes_own_leases},
    {"expired lease rescued, stale writes refused",
     test_expired_lease_rescued_stale_writes_refused},
    {"rescue past max attempts fails", test_rescue_past_max_attempts_fails},
    {"requeue backoff then needs_review", test_requeue_backoff_then_needs_review},
    {"requeue cap and long error", test_requeue_cap_and_long_error},
    {"release keeps attempt", test_release_keeps_attempt},
    {"plain insert notifies", test_plain_insert_notifies},
    {"counts and outstanding", test_counts_and_outstanding},
    EV_TEST_END,
};

static const ev_test_suite_t suites[] = {
    {"queue", suite_init, suite_clean, queue_tests, NULL, NULL},
    EV_SUITE_END,
};

EV_TEST_MAIN(suites)
