/*
 * queue.c - the Postgres-backed submission queue (SPEC §4, §5).
 *
 * What: claim, heartbeat, finish, retry, release and rescue submissions, so
 * that several workers in several processes share one table without ever
 * working on one submission at the same time, and a crash loses nothing.
 *
 * How: one statement claims: a sub-select picks the best runnable row with
 * FOR UPDATE SKIP LOCKED (rows another transaction is claiming are skipped,
 * not waited for) and the surrounding UPDATE marks it processing, spends an
 * attempt and stamps the lease, all in one round trip. Every later write is
 * guarded by (id, status = 'processing', lease_owner, attempts): if the lease
 * was rescued, or rescued and claimed again (attempts moved on), the guard
 * matches no row and the caller gets EV_ELEASE instead of overwriting newer
 * work. All times are the database's now(), so clocks of different hosts
 * never disagree about a lease. Every value travels as a parameter
 * (PQexecParams); no SQL is built from values.
 *
 * Threads: each function runs on the caller's thread with the caller's own
 * ev_db_t; there is no shared state and no lock in this file. Nothing logs.
 */
#include "ev/queue.h"

#include "ev/error.h"
#include "ev/util.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct guard {
    char id[24];
    char attempts[16];
    const char *owner;
} guard_t;

static void guard_init(guard_t *g, const ev_job_t *job)
{
    snprintf(g->id, sizeof(g->id), "%" PRId64, job->submission_id);
    snprintf(g->attempts, sizeof(g->attempts), "%d", job->attempt);
    g->owner = job->lease_owner;
}

/* The guard every post-claim statement ends with: $1 id, $2 owner, $3 attempts. */
#define GUARD                                                                                      \
    "id = $1::bigint AND status = 'processing' AND lease_owner = $2 AND attempts = $3::int"

static int64_t parse_i64(const char *s)
{
    return (int64_t)strtoll(s, NULL, 10);
}

/* Runs a guarded UPDATE: EV_ELEASE when it matched no row. */
static int guarded_update(ev_db_t *db, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = NULL;
    int rc = ev_db_exec(db, &res, sql, nparams, params);
    if (rc < 0)
        return rc;
    rc = parse_i64(PQcmdTuples(res)) == 1 ? 0 : EV_ELEASE;
    PQclear(res);
    return rc;
}

int ev_queue_claim(ev_db_t *db, const char *owner, ev_job_t *job)
{
    int rc = 0;
    PGresult *res = NULL;
    memset(job, 0, sizeof(*job));
    if (!owner || !*owner || strlen(owner) >= sizeof(job->lease_owner))
        return EV_EINVAL;
    const char *params[] = {owner};
    rc = ev_db_exec(db, &res,
                    "UPDATE submissions s"
                    "   SET status = 'processing', attempts = s.attempts + 1,"
                    "       lease_owner = $1, heartbeat_at = now()"
                    " WHERE s.id = (SELECT c.id FROM submissions c"
                    "                WHERE c.status = 'pending' AND c.run_after <= now()"
                    "                ORDER BY c.priority DESC, c.created_at, c.id"
                    "                LIMIT 1"
                    "                FOR UPDATE SKIP LOCKED)"
                    " RETURNING s.id, s.event_id, s.attempts, s.priority",
                    1, params);
    if (rc < 0)
        goto out;
    if (PQntuples(res) != 1) {
        rc = EV_EEMPTY;
        goto out;
    }
    job->submission_id = parse_i64(PQgetvalue(res, 0, 0));
    job->event_id = parse_i64(PQgetvalue(res, 0, 1));
    job->attempt = (int)parse_i64(PQgetvalue(res, 0, 2));
    job->priority = (int)parse_i64(PQgetvalue(res, 0, 3));
    snprintf(job->lease_owner, sizeof(job->lease_owner), "%s", owner);
out:
    PQclear(res);
    return rc;
}

int ev_queue_heartbeat(ev_db_t *db, const char *owner, int64_t *count)
{
    PGresult *res = NULL;
    if (count)
        *count = 0;
    if (!owner || !*owner)
        return EV_EINVAL;
    const char *params[] = {owner};
    int rc = ev_db_exec(db, &res,
                        "UPDATE submissions SET heartbeat_at = now()"
                        " WHERE status = 'processing' AND lease_owner = $1",
                        1, params);
    if (rc < 0)
        return rc;
    if (count)
        *count = parse_i64(PQcmdTuples(res));
    PQclear(res);
    return 0;
}

int ev_queue_check_lease(ev_db_t *db, const ev_job_t *job)
{
    guard_t g;
    guard_init(&g, job);
    const char *params[] = {g.id, g.owner, g.attempts};
    PGresult *res = NULL;
    int rc = ev_db_exec(db, &res, "SELECT 1 FROM submissions WHERE " GUARD, 3, params);
    if (rc < 0)
        return rc;
    rc = PQntuples(res) == 1 ? 0 : EV_ELEASE;
    PQclear(res);
    return rc;
}

int ev_queue_complete(ev_db_t *db, const ev_job_t *job, const char *status, const char *last_error)
{
    static const char *const finals[] = {"validated", "rejected", "needs_review", "failed"};
    const char *st = NULL;
    for (size_t i = 0; i < EV_ARRAY_LEN(finals); i++)
        if (status && strcmp(status, finals[i]) == 0)
            st = finals[i];
    if (!st)
        return EV_EINVAL;
    guard_t g;
    guard_init(&g, job);
    char *err = ev_db_clip_text(last_error, EV_QUEUE_LAST_ERROR_MAX);
    const char *params[] = {g.id, g.owner, g.attempts, st, err};
    int rc = guarded_update(db,
                            "UPDATE submissions"
                            "   SET status = $4, last_error = $5,"
                            "       lease_owner = NULL, heartbeat_at = NULL"
                            " WHERE " GUARD,
                            5, params);
    free(err);
    return rc;
}

/*
 * Exponential backoff with "equal jitter": the ceiling doubles per attempt up
 * to max_ms, and the delay is drawn from [ceiling/2, ceiling), so retries of
 * submissions that failed together (a provider outage) spread out instead of
 * returning in one wave, while each still waits at least half the ceiling.
 */
static int64_t backoff_ms(int attempt, int base_ms, int max_ms)
{
    double ceiling = base_ms > 0 ? base_ms : 0;
    double cap = max_ms > base_ms ? max_ms : ceiling;
    for (int i = 1; i < attempt && ceiling < cap; i++)
        ceiling *= 2;
    if (ceiling > cap)
        ceiling = cap;
    return (int64_t)(ceiling / 2 + ev_rand01() * (ceiling / 2));
}

int ev_queue_requeue(ev_db_t *db, const ev_job_t *job, int max_attempts, int base_ms, int max_ms,
                     const char *last_error, const char **out_status)
{
    int rc;
    guard_t g;
    guard_init(&g, job);
    char *err = ev_db_clip_text(last_error, EV_QUEUE_LAST_ERROR_MAX);
    if (out_status)
        *out_status = NULL;
    if (job->attempt >= max_attempts) {
        const char *params[] = {g.id, g.owner, g.attempts, err};
        rc = guarded_update(db,
                            "UPDATE submissions"
                            "   SET status = 'needs_review', last_error = $4,"
                            "       lease_owner = NULL, heartbeat_at = NULL"
                            " WHERE " GUARD,
                            4, params);
        if (rc == 0 && out_status)
            *out_status = "needs_review";
    } else {
        char delay[24];
        snprintf(delay, sizeof(delay), "%" PRId64, backoff_ms(job->attempt, base_ms, max_ms));
        const char *params[] = {g.id, g.owner, g.attempts, err, delay};
        rc = guarded_update(db,
                            "UPDATE submissions"
                            "   SET status = 'pending', last_error = $4,"
                            "       run_after = now() + $5::bigint * interval '1 millisecond',"
                            "       lease_owner = NULL, heartbeat_at = NULL"
                            " WHERE " GUARD,
                            5, params);
        if (rc == 0 && out_status)
            *out_status = "pending";
    }
    free(err);
    return rc;
}

int ev_queue_defer(ev_db_t *db, const ev_job_t *job, int delay_ms, const char *reason)
{
    guard_t g;
    guard_init(&g, job);
    char delay[24];
    snprintf(delay, sizeof(delay), "%d", delay_ms > 0 ? delay_ms : 0);
    char *why = ev_db_clip_text(reason, EV_QUEUE_LAST_ERROR_MAX);
    const char *params[] = {g.id, g.owner, g.attempts, delay, why};
    int rc = guarded_update(db,
                            "UPDATE submissions"
                            "   SET status = 'pending', attempts = greatest(attempts - 1, 0),"
                            "       run_after = now() + $4::bigint * interval '1 millisecond',"
                            "       last_error = coalesce($5, last_error),"
                            "       lease_owner = NULL, heartbeat_at = NULL"
                            " WHERE " GUARD,
                            5, params);
    free(why);
    return rc;
}

int ev_queue_release(ev_db_t *db, const ev_job_t *job)
{
    guard_t g;
    guard_init(&g, job);
    const char *params[] = {g.id, g.owner, g.attempts};
    return guarded_update(db,
                          "UPDATE submissions"
                          "   SET status = 'pending', attempts = greatest(attempts - 1, 0),"
                          "       run_after = now(), lease_owner = NULL, heartbeat_at = NULL"
                          " WHERE " GUARD,
                          3, params);
}

int ev_queue_rescue(ev_db_t *db, int lease_seconds, int max_attempts, int64_t *rescued,
                    int64_t *failed)
{
    PGresult *res = NULL;
    int64_t nr = 0, nf = 0;
    if (rescued)
        *rescued = 0;
    if (failed)
        *failed = 0;
    if (lease_seconds <= 0 || max_attempts <= 0)
        return EV_EINVAL;
    char secs[16], maxa[16], maxlen[16];
    snprintf(secs, sizeof(secs), "%d", lease_seconds);
    snprintf(maxa, sizeof(maxa), "%d", max_attempts);
    snprintf(maxlen, sizeof(maxlen), "%d", EV_QUEUE_LAST_ERROR_MAX);
    const char *params[] = {secs, maxa, maxlen};
    /* SKIP LOCKED: a row some worker is finishing right now is left alone;
     * if its lease really expired, the next rescue round takes it. */
    int rc = ev_db_exec(
        db, &res,
        "WITH stale AS ("
        "  SELECT id FROM submissions"
        "   WHERE status = 'processing'"
        "     AND (heartbeat_at IS NULL"
        "          OR heartbeat_at < now() - $1::int * interval '1 second')"
        "   FOR UPDATE SKIP LOCKED)"
        " UPDATE submissions s"
        "    SET status = CASE WHEN s.attempts >= $2::int THEN 'failed' ELSE 'pending' END,"
        "        lease_expiries = s.lease_expiries + 1,"
        "        last_error = left(CASE WHEN s.attempts >= $2::int"
        "          THEN format('processing died %s times (lease expired); %s of %s attempts used,"
        " last lease held by %s', s.lease_expiries + 1, s.attempts, $2::int,"
        " coalesce(s.lease_owner, 'nobody'))"
        "          ELSE format('lease expired on attempt %s (held by %s, no heartbeat for %s s);"
        " requeued', s.attempts, coalesce(s.lease_owner, 'nobody'), $1::int)"
        "          END, $3::int),"
        "        lease_owner = NULL, heartbeat_at = NULL, run_after = now()"
        "   FROM stale WHERE s.id = stale.id"
        " RETURNING s.status",
        3, params);
    if (rc < 0)
        return rc;
    for (int r = 0; r < PQntuples(res); r++) {
        if (strcmp(PQgetvalue(res, r, 0), "failed") == 0)
            nf++;
        else
            nr++;
    }
    PQclear(res);
    if (rescued)
        *rescued = nr;
    if (failed)
        *failed = nf;
    return 0;
}

int ev_queue_counts(ev_db_t *db, ev_queue_counts_t *out)
{
    PGresult *res = NULL;
    memset(out, 0, sizeof(*out));
    int rc = ev_db_exec(db, &res,
                        "SELECT status, count(*),"
                        " extract(epoch FROM now() - min(created_at))::float8"
                        " FROM submissions GROUP BY status",
                        0, NULL);
    if (rc < 0)
        return rc;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *st = PQgetvalue(res, r, 0);
        int64_t n = parse_i64(PQgetvalue(res, r, 1));
        if (strcmp(st, "pending") == 0) {
            out->pending = n;
            out->oldest_pending_age_s = EV_MAX(0.0, strtod(PQgetvalue(res, r, 2), NULL));
        } else if (strcmp(st, "processing") == 0)
            out->processing = n;
        else if (strcmp(st, "validated") == 0)
            out->validated = n;
        else if (strcmp(st, "rejected") == 0)
            out->rejected = n;
        else if (strcmp(st, "needs_review") == 0)
            out->needs_review = n;
        else if (strcmp(st, "failed") == 0)
            out->failed = n;
        else if (strcmp(st, "cancelled") == 0)
            out->cancelled = n;
    }
    PQclear(res);
    return 0;
}

int ev_queue_outstanding(ev_db_t *db, int64_t *out)
{
    PGresult *res = NULL;
    *out = 0;
    int rc = ev_db_exec(
        db, &res, "SELECT count(*) FROM submissions WHERE status IN ('pending', 'processing')", 0,
        NULL);
    if (rc < 0)
        return rc;
    *out = parse_i64(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

/* ---- Operator actions. ---- */

bool ev_queue_status_valid(const char *s)
{
    static const char *const all[] = {"pending",      "processing", "validated", "rejected",
                                      "needs_review", "failed",     "cancelled"};
    for (size_t i = 0; s && i < EV_ARRAY_LEN(all); i++)
        if (strcmp(s, all[i]) == 0)
            return true;
    return false;
}

/* A Postgres array literal of ids ("{1,2,3}"), or NULL when there are none. */
static char *id_array(const int64_t *ids, size_t n)
{
    if (!ids || n == 0)
        return NULL;
    size_t cap = n * 21 + 3, len = 0;
    char *s = ev_malloc(cap);
    s[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%" PRId64, i ? "," : "", ids[i]);
    snprintf(s + len, cap - len, "}");
    return s;
}

/* Rows of (id, status) into a new change list. */
static void read_changes(PGresult *res, ev_queue_change_t **out, size_t *n)
{
    size_t rows = (size_t)PQntuples(res);
    *out = ev_calloc(rows ? rows : 1, sizeof(**out));
    for (size_t r = 0; r < rows; r++) {
        (*out)[r].id = parse_i64(PQgetvalue(res, (int)r, 0));
        snprintf((*out)[r].status, sizeof((*out)[r].status), "%s", PQgetvalue(res, (int)r, 1));
    }
    *n = rows;
}

/* The selector's filters as parameters $1 status, $2 ids, $3 event (NULL
 * when not given, which the statements read as "any"). */
#define SELECTOR_WHERE                                                                             \
    "status <> 'processing' AND ($1::text IS NULL OR status = $1)"                                 \
    " AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))"                                        \
    " AND ($3::bigint IS NULL OR event_id = $3::bigint)"

int ev_queue_operator_requeue(ev_db_t *db, const ev_queue_selector_t *sel, bool dry_run,
                              ev_queue_change_t **out, size_t *n)
{
    PGresult *res = NULL;
    char event[24];
    int rc;
    *out = NULL;
    *n = 0;
    if (!sel || (!sel->status && sel->nids == 0) ||
        (sel->status && !ev_queue_status_valid(sel->status)))
        return EV_EINVAL;
    char *ids = id_array(sel->ids, sel->nids);
    snprintf(event, sizeof(event), "%" PRId64, sel->event_id);
    const char *params[] = {sel->status, ids, sel->event_id > 0 ? event : NULL};
    if (dry_run)
        rc = ev_db_exec(db, &res,
                        "SELECT id, status FROM submissions WHERE " SELECTOR_WHERE " ORDER BY id",
                        3, params);
    else
        rc = ev_db_exec(db, &res,
                        "WITH target AS (SELECT id, status FROM submissions"
                        "                 WHERE " SELECTOR_WHERE
                        "                 FOR UPDATE SKIP LOCKED)"
                        " UPDATE submissions s"
                        "    SET status = 'pending', attempts = 0, lease_expiries = 0,"
                        "        run_after = now(), lease_owner = NULL, heartbeat_at = NULL"
                        "   FROM target WHERE s.id = target.id"
                        " RETURNING s.id, target.status",
                        3, params);
    free(ids);
    if (rc < 0)
        return rc;
    read_changes(res, out, n);
    PQclear(res);
    /* UPDATE ... RETURNING gives no order; reports read better sorted. */
    for (size_t i = 1; i < *n; i++)
        for (size_t j = i; j > 0 && (*out)[j - 1].id > (*out)[j].id; j--) {
            ev_queue_change_t t = (*out)[j];
            (*out)[j] = (*out)[j - 1];
            (*out)[j - 1] = t;
        }
    return 0;
}

int ev_queue_operator_cancel(ev_db_t *db, const int64_t *ids, size_t nids, const char *reason,
                             ev_queue_change_t **out, size_t *n)
{
    PGresult *res = NULL;
    *out = NULL;
    *n = 0;
    if (!ids || nids == 0)
        return EV_EINVAL;
    char *arr = id_array(ids, nids);
    char *why =
        ev_db_clip_text(reason ? reason : "cancelled by an operator", EV_QUEUE_LAST_ERROR_MAX);
    const char *params[] = {arr, why};
    int rc = ev_db_exec(db, &res,
                        "WITH target AS (SELECT id, status FROM submissions"
                        "                 WHERE id = ANY($1::bigint[])"
                        "                   AND status IN ('pending', 'needs_review', 'failed')"
                        "                 FOR UPDATE SKIP LOCKED)"
                        " UPDATE submissions s"
                        "    SET status = 'cancelled', last_error = $2,"
                        "        lease_owner = NULL, heartbeat_at = NULL"
                        "   FROM target WHERE s.id = target.id"
                        " RETURNING s.id, target.status",
                        2, params);
    free(arr);
    free(why);
    if (rc < 0)
        return rc;
    read_changes(res, out, n);
    PQclear(res);
    return 0;
}

int ev_queue_statuses(ev_db_t *db, const int64_t *ids, size_t nids, ev_queue_change_t **out,
                      size_t *n)
{
    PGresult *res = NULL;
    *out = NULL;
    *n = 0;
    char *arr = id_array(ids, nids);
    const char *params[] = {arr};
    int rc = ev_db_exec(
        db, &res, "SELECT id, status FROM submissions WHERE id = ANY($1::bigint[]) ORDER BY id", 1,
        params);
    free(arr);
    if (rc < 0)
        return rc;
    read_changes(res, out, n);
    PQclear(res);
    return 0;
}

/* ---- The organisers' API. ---- */

/* Runs a query whose one row and first column is a text value; *out gets a
 * copy. EV_ENOTFOUND when there is no row. */
static int query_text(ev_db_t *db, const char *sql, int nparams, const char *const *params,
                      char **out, int64_t *second)
{
    PGresult *res = NULL;
    *out = NULL;
    int rc = ev_db_exec(db, &res, sql, nparams, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) != 1) {
        rc = EV_ENOTFOUND;
    } else {
        *out = ev_strdup(PQgetvalue(res, 0, 0));
        if (second)
            *second = parse_i64(PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    return rc;
}

/* Postgres renders json with spaces around ':'; answers and webhooks are
 * compact (as `show` always printed them). */
static int compact_json(int rc, char **json)
{
    if (rc < 0 || !*json)
        return rc;
    json_object *o = json_tokener_parse(*json);
    EV_ASSERT(o != NULL);
    free(*json);
    *json = ev_strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return rc;
}

int ev_queue_event_create(ev_db_t *db, const ev_queue_event_t *ev, int64_t *id)
{
    PGresult *res = NULL;
    const char *params[] = {ev->name,
                            ev->theme,
                            ev->rules,
                            ev->require_pdf ? "true" : "false",
                            ev->require_image ? "true" : "false",
                            ev->webhook_url,
                            ev->webhook_url ? ev->webhook_secret : NULL};
    *id = 0;
    /* ON CONFLICT tells a taken name apart from any other failure. */
    int rc = ev_db_exec(db, &res,
                        "INSERT INTO events (name, theme, rules, require_pdf, require_image,"
                        " webhook_url, webhook_secret)"
                        " VALUES ($1, $2, $3, $4::boolean, $5::boolean, $6, $7)"
                        " ON CONFLICT (name) DO NOTHING RETURNING id",
                        7, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 1)
        *id = parse_i64(PQgetvalue(res, 0, 0));
    else
        rc = EV_EEXIST;
    PQclear(res);
    return rc;
}

int ev_queue_event_json(ev_db_t *db, int64_t id, char **json)
{
    char id_s[24];
    snprintf(id_s, sizeof(id_s), "%" PRId64, id);
    const char *params[] = {id_s};
    int rc =
        query_text(db,
                   "SELECT json_build_object('id', id, 'name', name, 'theme', theme,"
                   " 'rules', rules, 'require_pdf', require_pdf, 'require_image', require_image,"
                   " 'webhook_url', webhook_url, 'created_at', created_at)::text"
                   " FROM events WHERE id = $1::bigint",
                   1, params, json, NULL);
    return compact_json(rc, json);
}

int ev_queue_submission_json(ev_db_t *db, int64_t id, char **json, int64_t *event_id)
{
    char id_s[24];
    snprintf(id_s, sizeof(id_s), "%" PRId64, id);
    const char *params[] = {id_s};
    int64_t ev = 0;
    int rc = query_text(
        db,
        "SELECT json_build_object('id', s.id, 'event_id', s.event_id, 'title', s.title,"
        " 'description', s.description, 'priority', s.priority, 'status', s.status,"
        " 'attempts', s.attempts, 'last_error', s.last_error, 'created_at', s.created_at,"
        " 'updated_at', s.updated_at, 'checks', coalesce((SELECT json_object_agg(v.check_name,"
        "   json_build_object('verdict', v.verdict, 'score', v.score, 'reason', v.reason,"
        "   'provider', v.provider, 'model', v.model, 'http_attempts', v.http_attempts,"
        "   'latency_ms', v.latency_ms, 'tokens_in', v.tokens_in, 'tokens_out', v.tokens_out,"
        "   'cached', v.cached) ORDER BY v.check_name)"
        "   FROM validation_results v WHERE v.submission_id = s.id), '{}'::json))::text,"
        " s.event_id FROM submissions s WHERE s.id = $1::bigint",
        1, params, json, &ev);
    if (event_id)
        *event_id = ev;
    return compact_json(rc, json);
}

int ev_queue_submission_list(ev_db_t *db, int64_t event_id, const char *status, int64_t after,
                             int limit, char **json)
{
    char ev_s[24], after_s[24], limit_s[16];
    snprintf(ev_s, sizeof(ev_s), "%" PRId64, event_id);
    snprintf(after_s, sizeof(after_s), "%" PRId64, after);
    snprintf(limit_s, sizeof(limit_s), "%d", limit);
    const char *params[] = {ev_s, status, after_s, limit_s};
    /* The (event_id) index plus the primary key make each page an index
     * range read, however deep the page. */
    int rc = query_text(
        db,
        "WITH page AS (SELECT id, status, title, priority, attempts, created_at, updated_at"
        "   FROM submissions WHERE event_id = $1::bigint AND id > $3::bigint"
        "    AND ($2::text IS NULL OR status = $2::text) ORDER BY id LIMIT $4::int)"
        " SELECT json_build_object('submissions', coalesce((SELECT json_agg(p ORDER BY p.id)"
        "   FROM page p), '[]'::json), 'next_after', CASE WHEN (SELECT count(*) FROM page)"
        "   = $4::int THEN (SELECT max(id) FROM page) END)::text",
        4, params, json, NULL);
    return compact_json(rc, json);
}

/* The idempotency row of (event, key): 0 with *hash and *sid, or EV_ENOTFOUND. */
static int idempotency_lookup(ev_db_t *db, const char *event_s, const char *key, char **hash,
                              int64_t *sid)
{
    const char *params[] = {event_s, key};
    return query_text(db,
                      "SELECT request_hash, submission_id FROM api_idempotency"
                      " WHERE event_id = $1::bigint AND key = $2",
                      2, params, hash, sid);
}

/* Inside the caller's transaction: the submission and its files. */
static int insert_rows(ev_db_t *db, const ev_queue_new_submission_t *sub, const char *event_s,
                       char *sid_s, size_t sid_len)
{
    PGresult *res = NULL;
    char prio_s[16];
    snprintf(prio_s, sizeof(prio_s), "%d", sub->priority);
    const char *params[] = {event_s, sub->title, sub->description, prio_s};
    int rc = ev_db_exec(db, &res,
                        "INSERT INTO submissions (event_id, title, description, priority)"
                        " SELECT $1::bigint, $2, $3, $4::int WHERE EXISTS"
                        " (SELECT 1 FROM events WHERE id = $1::bigint FOR KEY SHARE) RETURNING id",
                        4, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return EV_ENOTFOUND;
    }
    snprintf(sid_s, sid_len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    for (size_t i = 0; i < sub->nfiles && rc == 0; i++) {
        const ev_queue_new_file_t *f = &sub->files[i];
        const char *fp[] = {sid_s, f->kind, f->filename, f->storage_path};
        rc = ev_db_exec(db, NULL,
                        "INSERT INTO submission_files (submission_id, kind, filename, storage_path)"
                        " VALUES ($1::bigint, $2, $3, $4)",
                        4, fp);
    }
    return rc;
}

int ev_queue_submission_insert(ev_db_t *db, const ev_queue_new_submission_t *sub, int64_t *id,
                               bool *replayed)
{
    char event_s[24], sid_s[24];
    char *hash = NULL;
    int64_t earlier = 0;
    PGresult *res = NULL;
    int rc;

    *id = 0;
    *replayed = false;
    snprintf(event_s, sizeof(event_s), "%" PRId64, sub->event_id);
    if (sub->idempotency_key) {
        rc = idempotency_lookup(db, event_s, sub->idempotency_key, &hash, &earlier);
        if (rc != EV_ENOTFOUND)
            goto decided;
    }
    rc = ev_db_exec(db, NULL, "BEGIN", 0, NULL);
    if (rc < 0)
        goto out;
    rc = insert_rows(db, sub, event_s, sid_s, sizeof(sid_s));
    if (rc == 0 && sub->idempotency_key) {
        /* A concurrent request with the same key waits here for the other
         * transaction; if that one committed, ours adds nothing. */
        const char *params[] = {event_s, sub->idempotency_key, sub->request_hash, sid_s};
        rc = ev_db_exec(db, &res,
                        "INSERT INTO api_idempotency (event_id, key, request_hash, submission_id)"
                        " VALUES ($1::bigint, $2, $3, $4::bigint) ON CONFLICT DO NOTHING"
                        " RETURNING 1",
                        4, params);
        if (rc == 0 && PQntuples(res) == 0)
            rc = EV_EEXIST;
    }
    if (rc == 0)
        rc = ev_db_exec(db, NULL, "COMMIT", 0, NULL);
    if (rc == 0) {
        *id = parse_i64(sid_s);
        goto out;
    }
    if (PQtransactionStatus(ev_db_conn(db)) != PQTRANS_IDLE)
        (void)ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
    if (rc != EV_EEXIST)
        goto out;
    rc = idempotency_lookup(db, event_s, sub->idempotency_key, &hash, &earlier);
decided:
    if (rc == 0 && strcmp(hash, sub->request_hash ? sub->request_hash : "") == 0) {
        *id = earlier;
        *replayed = true;
    } else if (rc == 0) {
        rc = EV_EEXIST;
    }
out:
    PQclear(res);
    free(hash);
    return rc;
}

int ev_queue_latest_failures(ev_db_t *db, int limit, struct json_object **out)
{
    PGresult *res = NULL;
    char lim[16];
    *out = NULL;
    snprintf(lim, sizeof(lim), "%d", limit > 0 ? limit : 20);
    const char *params[] = {lim};
    int rc = ev_db_exec(db, &res,
                        "SELECT coalesce(json_agg(f)::text, '[]') FROM ("
                        " SELECT id, event_id, status, attempts,"
                        "  round(extract(epoch FROM now() - updated_at)::numeric, 1) AS age_s,"
                        "  last_error FROM submissions"
                        " WHERE status IN ('needs_review', 'failed')"
                        " ORDER BY updated_at DESC, id DESC LIMIT $1::int) f",
                        1, params);
    if (rc < 0)
        return rc;
    *out = json_tokener_parse(PQgetvalue(res, 0, 0));
    PQclear(res);
    return *out ? 0 : EV_EPARSE;
}
