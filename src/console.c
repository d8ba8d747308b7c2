/*
 * console.c - operator controls recorded in `control_actions`; see
 * console.h.
 *
 * How: an action is BEGIN, the change (SQL of the module that owns the
 * rows: queue.c for submissions), one INSERT into control_actions holding
 * the arguments and the result as JSON, COMMIT. If anything fails the
 * transaction is rolled back, so an action is either done and recorded or
 * neither. The report is built from the same result the record holds.
 *
 * Threads: whatever thread calls; no shared state besides the actor name,
 * computed once from main. No locks. Nothing logs: the command reports.
 */
#include "ev/console.h"

#include "ev/cluster_state.h"
#include "ev/error.h"
#include "ev/stats.h"
#include "ev/util.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A report lists at most this many ids per line; the record holds them all. */
#define REPORT_MAX_IDS 50

const char *ev_console_cli_actor(void)
{
    static char actor[160];
    if (!actor[0]) {
        char host[64] = "localhost";
        struct passwd *pw = getpwuid(geteuid());
        (void)gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        snprintf(actor, sizeof(actor), "cli:%s@%s", pw && pw->pw_name ? pw->pw_name : "unknown",
                 host);
    }
    return actor;
}

int ev_console_record(ev_db_t *db, const char *action, const char *args_json,
                      const char *result_json, const char *actor, int64_t *id)
{
    PGresult *res = NULL;
    const char *params[] = {action, args_json ? args_json : "{}", result_json ? result_json : "{}",
                            actor ? actor : "unknown"};
    if (id)
        *id = 0;
    int rc = ev_db_exec(db, &res,
                        "INSERT INTO control_actions (action, args, result, actor)"
                        " VALUES ($1, $2::jsonb, $3::jsonb, $4) RETURNING id",
                        4, params);
    if (rc == 0 && id)
        *id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return rc;
}

static int connect_db(ev_db_t **db, const ev_config_t *cfg, char *err, size_t errlen)
{
    char why[512];
    int rc = ev_db_connect(db, cfg->database_url, why, sizeof(why));
    if (rc != 0)
        ev_set_error(err, errlen, "database unreachable: %s", why);
    return rc;
}

static int db_fail(ev_db_t *db, int rc, const char *what, char *err, size_t errlen)
{
    ev_set_error(err, errlen, "%s while %s: %s",
                 rc == EV_EDBCONN ? "database unreachable" : "database error", what,
                 ev_db_error(db));
    return rc;
}

static json_object *ids_json(const ev_queue_change_t *c, size_t n)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < n; i++)
        json_object_array_add(a, json_object_new_int64(c[i].id));
    return a;
}

/* "4 5 9" (at most REPORT_MAX_IDS, then "... and N more"). */
static void report_ids(ev_stats_buf_t *b, const ev_queue_change_t *c, size_t n, bool with_status)
{
    for (size_t i = 0; i < n && i < REPORT_MAX_IDS; i++) {
        if (with_status)
            ev_stats_buf_printf(b, "%s%" PRId64 " (%s)", i ? ", " : " ", c[i].id,
                                c[i].status[0] ? c[i].status : "not found");
        else
            ev_stats_buf_printf(b, " %" PRId64, c[i].id);
    }
    if (n > REPORT_MAX_IDS)
        ev_stats_buf_printf(b, " ... and %zu more", n - REPORT_MAX_IDS);
    ev_stats_buf_printf(b, "\n");
}

/* The ids asked for that are not in `done`, with their current status ("" when
 * no such submission exists). */
static int left_alone(ev_db_t *db, const int64_t *ids, size_t nids, const ev_queue_change_t *done,
                      size_t ndone, ev_queue_change_t **out, size_t *n)
{
    ev_queue_change_t *now = NULL;
    size_t nnow = 0;
    *out = ev_calloc(nids ? nids : 1, sizeof(**out));
    *n = 0;
    int rc = ev_queue_statuses(db, ids, nids, &now, &nnow);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < nids; i++) {
        bool changed = false, dup = false;
        for (size_t j = 0; j < ndone && !changed; j++)
            changed = done[j].id == ids[i];
        for (size_t j = 0; j < *n && !dup; j++)
            dup = (*out)[j].id == ids[i];
        if (changed || dup)
            continue;
        ev_queue_change_t c = {.id = ids[i]};
        for (size_t j = 0; j < nnow; j++)
            if (now[j].id == ids[i])
                c = now[j];
        (*out)[(*n)++] = c;
    }
out:
    free(now);
    return rc;
}

static int begin(ev_db_t *db, char *err, size_t errlen)
{
    int rc = ev_db_exec(db, NULL, "BEGIN", 0, NULL);
    if (rc < 0)
        db_fail(db, rc, "starting the transaction", err, errlen);
    return rc;
}

/* Records the action and commits; rolls back on failure. */
static int record_commit(ev_db_t *db, const char *action, json_object *args, json_object *result,
                         const char *actor, int64_t *id, char *err, size_t errlen)
{
    int rc = ev_console_record(db, action, json_object_to_json_string(args),
                               json_object_to_json_string(result), actor, id);
    if (rc == 0)
        rc = ev_db_exec(db, NULL, "COMMIT", 0, NULL);
    if (rc < 0) {
        db_fail(db, rc, "recording the action", err, errlen);
        (void)ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
    }
    return rc;
}

int ev_console_requeue_db(ev_db_t *db, const ev_queue_selector_t *sel, bool dry_run,
                          const char *actor, char **report, char *err, size_t errlen)
{
    ev_queue_change_t *done = NULL, *skipped = NULL;
    size_t ndone = 0, nskipped = 0;
    json_object *args = json_object_new_object(), *result = json_object_new_object();
    ev_stats_buf_t b = {0};
    int64_t rec = 0;
    int rc;

    *report = NULL;
    if (!sel->status && sel->nids == 0) {
        ev_set_error(err, errlen, "requeue needs --status or at least one --id");
        rc = EV_EINVAL;
        goto out;
    }
    if (sel->status && !ev_queue_status_valid(sel->status)) {
        ev_set_error(err, errlen, "unknown status '%s'", sel->status);
        rc = EV_EINVAL;
        goto out;
    }
    if (!dry_run && (rc = begin(db, err, errlen)) < 0)
        goto out;
    rc = ev_queue_operator_requeue(db, sel, dry_run, &done, &ndone);
    if (rc == 0 && sel->nids)
        rc = left_alone(db, sel->ids, sel->nids, done, ndone, &skipped, &nskipped);
    if (rc < 0) {
        db_fail(db, rc, "requeueing", err, errlen);
        if (!dry_run)
            (void)ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
        goto out;
    }
    if (sel->status)
        json_object_object_add(args, "status", json_object_new_string(sel->status));
    if (sel->nids) {
        json_object *ids = json_object_new_array();
        for (size_t i = 0; i < sel->nids; i++)
            json_object_array_add(ids, json_object_new_int64(sel->ids[i]));
        json_object_object_add(args, "ids", ids);
    }
    if (sel->event_id > 0)
        json_object_object_add(args, "event", json_object_new_int64(sel->event_id));
    json_object_object_add(result, "requeued", ids_json(done, ndone));
    json_object_object_add(result, "left_alone", ids_json(skipped, nskipped));
    if (!dry_run && (rc = record_commit(db, "requeue", args, result, actor, &rec, err, errlen)) < 0)
        goto out;

    ev_stats_buf_printf(&b, "%s %zu submission(s)%s", dry_run ? "would requeue" : "requeued", ndone,
                        ndone ? ":" : "");
    report_ids(&b, done, ndone, false);
    if (nskipped) {
        ev_stats_buf_printf(&b, "left alone %zu:", nskipped);
        report_ids(&b, skipped, nskipped, true);
    }
    if (dry_run)
        ev_stats_buf_printf(&b, "dry run: nothing was changed or recorded\n");
    else
        ev_stats_buf_printf(&b, "recorded as control action %" PRId64 " (by %s)\n", rec, actor);
    *report = b.data;
    b.data = NULL;
out:
    ev_stats_buf_free(&b);
    json_object_put(args);
    json_object_put(result);
    free(done);
    free(skipped);
    return rc;
}

int ev_console_cancel_db(ev_db_t *db, const int64_t *ids, size_t nids, const char *actor,
                         char **report, char *err, size_t errlen)
{
    ev_queue_change_t *done = NULL, *skipped = NULL;
    size_t ndone = 0, nskipped = 0;
    json_object *args = json_object_new_object(), *result = json_object_new_object();
    ev_stats_buf_t b = {0};
    int64_t rec = 0;
    int rc;

    *report = NULL;
    if (nids == 0) {
        ev_set_error(err, errlen, "cancel needs at least one submission id");
        rc = EV_EINVAL;
        goto out;
    }
    if ((rc = begin(db, err, errlen)) < 0)
        goto out;
    char *why = ev_asprintf("cancelled by %s", actor);
    rc = ev_queue_operator_cancel(db, ids, nids, why, &done, &ndone);
    free(why);
    if (rc == 0)
        rc = left_alone(db, ids, nids, done, ndone, &skipped, &nskipped);
    if (rc < 0) {
        db_fail(db, rc, "cancelling", err, errlen);
        (void)ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
        goto out;
    }
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < nids; i++)
        json_object_array_add(a, json_object_new_int64(ids[i]));
    json_object_object_add(args, "ids", a);
    json_object_object_add(result, "cancelled", ids_json(done, ndone));
    json_object_object_add(result, "left_alone", ids_json(skipped, nskipped));
    if ((rc = record_commit(db, "cancel", args, result, actor, &rec, err, errlen)) < 0)
        goto out;
    ev_stats_buf_printf(&b, "cancelled %zu submission(s)%s", ndone, ndone ? ":" : "");
    report_ids(&b, done, ndone, false);
    if (nskipped) {
        ev_stats_buf_printf(&b,
                            "left alone %zu (only pending, needs_review or failed ones are "
                            "cancelled):",
                            nskipped);
        report_ids(&b, skipped, nskipped, true);
    }
    ev_stats_buf_printf(&b, "recorded as control action %" PRId64 " (by %s)\n", rec, actor);
    *report = b.data;
    b.data = NULL;
out:
    ev_stats_buf_free(&b);
    json_object_put(args);
    json_object_put(result);
    free(done);
    free(skipped);
    return rc;
}

int ev_console_requeue(const ev_config_t *cfg, const ev_queue_selector_t *sel, bool dry_run,
                       const char *actor, char **report, char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    *report = NULL;
    int rc = connect_db(&db, cfg, err, errlen);
    if (rc == 0)
        rc = ev_console_requeue_db(db, sel, dry_run, actor, report, err, errlen);
    ev_db_free(db);
    return rc;
}

int ev_console_cancel(const ev_config_t *cfg, const int64_t *ids, size_t nids, const char *actor,
                      char **report, char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    *report = NULL;
    int rc = connect_db(&db, cfg, err, errlen);
    if (rc == 0)
        rc = ev_console_cancel_db(db, ids, nids, actor, report, err, errlen);
    ev_db_free(db);
    return rc;
}

/* Runs one parameterised statement and records the action, in one
 * transaction; *rows receives the number of rows the statement touched. */
static int act(ev_db_t *db, const char *sql, int nparams, const char *const *params,
               const char *action, json_object *args, json_object *result, const char *actor,
               int64_t *rows, int64_t *rec, char *err, size_t errlen)
{
    PGresult *res = NULL;
    int rc = begin(db, err, errlen);
    if (rc < 0)
        return rc;
    rc = ev_db_exec(db, &res, sql, nparams, params);
    if (rc < 0) {
        db_fail(db, rc, action, err, errlen);
        (void)ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
        return rc;
    }
    *rows = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    if (*rows == 0) {
        (void)ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
        return 0;
    }
    return record_commit(db, action, args, result, actor, rec, err, errlen);
}

int ev_console_spend_limit(const ev_config_t *cfg, double usd, const char *actor, char **report,
                           char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    json_object *args = json_object_new_object(), *result = json_object_new_object();
    char value[48];
    int64_t rows = 0, rec = 0;
    *report = NULL;
    int rc = connect_db(&db, cfg, err, errlen);
    if (rc < 0)
        goto out;
    snprintf(value, sizeof(value), "%.6f", usd);
    const char *params[] = {value};
    json_object_object_add(args, "daily_limit_usd", usd >= 0 ? json_object_new_double(usd) : NULL);
    if (usd >= 0)
        rc = act(db,
                 "INSERT INTO console_settings (key, value) VALUES ('daily_spend_limit_usd', $1)"
                 " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()",
                 1, params, "spend_limit", args, result, actor, &rows, &rec, err, errlen);
    else
        rc = act(db, "DELETE FROM console_settings WHERE key = 'daily_spend_limit_usd'", 0, NULL,
                 "spend_limit", args, result, actor, &rows, &rec, err, errlen);
    if (rc < 0)
        goto out;
    if (usd > 0)
        *report = ev_asprintf("daily spend limit set to %.6g USD per provider for every replica "
                              "(recorded as control action %" PRId64 " by %s)\n",
                              usd, rec, actor);
    else if (usd == 0)
        *report = ev_asprintf("daily spend limit removed for every replica (recorded as control "
                              "action %" PRId64 " by %s)\n",
                              rec, actor);
    else
        *report = ev_asprintf("daily spend limit back to DAILY_SPEND_LIMIT_USD of each replica%s\n",
                              rows ? "" : " (it already was; nothing recorded)");
out:
    json_object_put(args);
    json_object_put(result);
    ev_db_free(db);
    return rc;
}

int ev_console_event_budget(const ev_config_t *cfg, int64_t event_id, double usd, const char *actor,
                            char **report, char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    json_object *args = json_object_new_object(), *result = json_object_new_object();
    char id[24], value[48];
    int64_t rows = 0, rec = 0;
    *report = NULL;
    int rc = connect_db(&db, cfg, err, errlen);
    if (rc < 0)
        goto out;
    snprintf(id, sizeof(id), "%" PRId64, event_id);
    snprintf(value, sizeof(value), "%.6f", usd);
    const char *params[] = {id, usd >= 0 ? value : NULL};
    json_object_object_add(args, "event", json_object_new_int64(event_id));
    json_object_object_add(args, "budget_usd", usd >= 0 ? json_object_new_double(usd) : NULL);
    rc = act(db, "UPDATE events SET budget_usd = $2::numeric WHERE id = $1::bigint", 2, params,
             "event_budget", args, result, actor, &rows, &rec, err, errlen);
    if (rc < 0)
        goto out;
    if (rows == 0) {
        ev_set_error(err, errlen, "event %" PRId64 " does not exist", event_id);
        rc = EV_ENOTFOUND;
        goto out;
    }
    if (usd >= 0)
        *report = ev_asprintf("event %" PRId64 " budget set to %.6g USD (recorded as control "
                              "action %" PRId64 " by %s)\n",
                              event_id, usd, rec, actor);
    else
        *report = ev_asprintf("event %" PRId64 " has no budget any more (recorded as control "
                              "action %" PRId64 " by %s)\n",
                              event_id, rec, actor);
out:
    json_object_put(args);
    json_object_put(result);
    ev_db_free(db);
    return rc;
}

int ev_console_with_db(const ev_config_t *cfg, ev_console_db_fn fn, void *arg, char **report,
                       char *err, size_t errlen)
{
    ev_db_t *db = NULL;
    *report = NULL;
    int rc = connect_db(&db, cfg, err, errlen);
    if (rc == 0)
        rc = fn(db, arg, report, err, errlen);
    ev_db_free(db);
    return rc;
}

static int provider_by_name(const char *name, ev_provider_id_t *out, char *err, size_t errlen)
{
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        if (name && strcmp(name, ev_provider_name((ev_provider_id_t)p)) == 0) {
            *out = (ev_provider_id_t)p;
            return 0;
        }
    ev_stats_buf_t b = {0};
    for (int p = 0; p < EV_PROVIDER_COUNT; p++)
        ev_stats_buf_printf(&b, "%s%s", p ? ", " : "", ev_provider_name((ev_provider_id_t)p));
    ev_set_error(err, errlen, "unknown provider '%s' (known: %s)", name ? name : "", b.data);
    ev_stats_buf_free(&b);
    return EV_EINVAL;
}

/* A cluster-state change and its record, in one transaction (the NOTIFY
 * that tells the replicas goes out at commit, with the record). */
static int state_change_begin(ev_db_t *db, char *err, size_t errlen)
{
    return begin(db, err, errlen);
}

static int state_fail(ev_db_t *db, int rc, const char *what, char *err, size_t errlen)
{
    if (rc == EV_ENOTFOUND)
        ev_set_error(err, errlen,
                     "%s: the database has no shared provider state (run 'event-validator "
                     "migrate')",
                     what);
    else
        db_fail(db, rc, what, err, errlen);
    (void)ev_db_exec(db, NULL, "ROLLBACK", 0, NULL);
    return rc;
}

/* A pause "until resumed": the longest the shared state accepts. */
#define PAUSE_FOREVER_S (365.0 * 86400)

int ev_console_provider_pause(ev_db_t *db, const char *name, bool pause, double seconds,
                              const char *actor, char **report, char *err, size_t errlen)
{
    ev_provider_id_t p;
    json_object *args = NULL, *result = NULL;
    int64_t rec = 0;
    *report = NULL;
    int rc = provider_by_name(name, &p, err, errlen);
    if (rc < 0)
        return rc;
    double secs = !pause ? 0 : seconds > 0 ? seconds : PAUSE_FOREVER_S;
    char *reason =
        ev_asprintf(EV_CONSOLE_PAUSE_PREFIX "%s by %s", pause ? "paused" : "resumed", actor);
    args = json_object_new_object();
    result = json_object_new_object();
    json_object_object_add(args, "provider", json_object_new_string(name));
    if (pause)
        json_object_object_add(args, "seconds",
                               seconds > 0 ? json_object_new_double(seconds) : NULL);
    if ((rc = state_change_begin(db, err, errlen)) < 0)
        goto out;
    rc = ev_cluster_state_pause(db, p, secs, reason, actor);
    if (rc < 0) {
        state_fail(db, rc, pause ? "pausing" : "resuming", err, errlen);
        goto out;
    }
    rc = record_commit(db, pause ? "provider_pause" : "provider_resume", args, result, actor, &rec,
                       err, errlen);
    if (rc < 0)
        goto out;
    if (!pause)
        *report = ev_asprintf("%s resumed on every replica (recorded as control action %" PRId64
                              " by %s)\n",
                              name, rec, actor);
    else if (seconds > 0)
        *report = ev_asprintf("%s paused for %.0f s on every replica: its work falls back or "
                              "waits as pending (recorded as control action %" PRId64 " by %s)\n",
                              name, seconds, rec, actor);
    else
        *report = ev_asprintf("%s paused on every replica until 'provider resume %s': its work "
                              "falls back or waits as pending (recorded as control action %" PRId64
                              " by %s)\n",
                              name, name, rec, actor);
out:
    free(reason);
    json_object_put(args);
    json_object_put(result);
    return rc;
}

int ev_console_breaker_reset(ev_db_t *db, const char *name, const char *actor, char **report,
                             char *err, size_t errlen)
{
    ev_provider_id_t p;
    int64_t rec = 0;
    *report = NULL;
    int rc = provider_by_name(name, &p, err, errlen);
    if (rc < 0)
        return rc;
    json_object *args = json_object_new_object(), *result = json_object_new_object();
    json_object_object_add(args, "provider", json_object_new_string(name));
    if ((rc = state_change_begin(db, err, errlen)) < 0)
        goto out;
    rc = ev_cluster_state_close(db, p, actor);
    if (rc < 0) {
        state_fail(db, rc, "resetting the breaker", err, errlen);
        goto out;
    }
    rc = record_commit(db, "breaker_reset", args, result, actor, &rec, err, errlen);
    if (rc == 0)
        *report = ev_asprintf("%s circuit breaker closed on every replica (recorded as control "
                              "action %" PRId64 " by %s)\n",
                              name, rec, actor);
out:
    json_object_put(args);
    json_object_put(result);
    return rc;
}

int ev_console_emergency(ev_db_t *db, bool on, const char *actor, char **report, char *err,
                         size_t errlen)
{
    int64_t rec = 0;
    *report = NULL;
    json_object *args = json_object_new_object(), *result = json_object_new_object();
    json_object *changed = json_object_new_array();
    json_object_object_add(args, "on", json_object_new_boolean(on));
    int rc = state_change_begin(db, err, errlen);
    if (rc < 0)
        goto out;
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        ev_cluster_provider_state_t st;
        rc = ev_cluster_state_read(db, (ev_provider_id_t)p, &st);
        if (rc == EV_ENOTFOUND) {
            rc = 0; /* never configured anywhere: nothing calls it */
            continue;
        }
        if (rc < 0)
            break;
        bool ours =
            st.pause_remaining_s > 0 && strcmp(st.pause_reason, EV_CONSOLE_EMERGENCY_REASON) == 0;
        /* Off resumes only what the emergency paused. */
        if (!on && !ours)
            continue;
        rc = ev_cluster_state_pause(db, (ev_provider_id_t)p, on ? PAUSE_FOREVER_S : 0,
                                    EV_CONSOLE_EMERGENCY_REASON, actor);
        if (rc < 0)
            break;
        json_object_array_add(changed,
                              json_object_new_string(ev_provider_name((ev_provider_id_t)p)));
    }
    if (rc < 0) {
        state_fail(db, rc, on ? "stopping the providers" : "resuming the providers", err, errlen);
        goto out;
    }
    json_object_object_add(result, on ? "paused" : "resumed", json_object_get(changed));
    rc = record_commit(db, on ? "emergency_on" : "emergency_off", args, result, actor, &rec, err,
                       errlen);
    if (rc < 0)
        goto out;
    const char *list = json_object_to_json_string_ext(changed, JSON_C_TO_STRING_PLAIN);
    if (on)
        *report = ev_asprintf("EMERGENCY STOP: no LLM call on any replica from now on (paused: "
                              "%s); local checks go on, work needing a provider waits as pending. "
                              "'event-validator emergency off' resumes (recorded as control "
                              "action %" PRId64 " by %s)\n",
                              list, rec, actor);
    else
        *report = ev_asprintf("emergency over: resumed %s (recorded as control action %" PRId64
                              " by %s)\n",
                              list, rec, actor);
out:
    json_object_put(changed);
    json_object_put(args);
    json_object_put(result);
    return rc;
}

int ev_console_spend_report(ev_db_t *db, double config_limit_usd, ev_stats_buf_t *b)
{
    PGresult *res = NULL;
    int rc = ev_db_exec(db, &res,
                        "SELECT (now() AT TIME ZONE 'America/Los_Angeles')::date::text,"
                        " (SELECT value FROM console_settings"
                        "   WHERE key = 'daily_spend_limit_usd')",
                        0, NULL);
    if (rc < 0)
        return rc;
    double limit = PQgetisnull(res, 0, 1) ? config_limit_usd : strtod(PQgetvalue(res, 0, 1), NULL);
    ev_stats_buf_printf(b, "spend (provider day %s, US Pacific): daily limit %s",
                        PQgetvalue(res, 0, 0), limit > 0 ? "" : "none");
    if (limit > 0)
        ev_stats_buf_printf(b, "%.4f USD per provider%s", limit,
                            PQgetisnull(res, 0, 1) ? "" : " (set with 'spend limit')");
    ev_stats_buf_printf(b, "\n");
    PQclear(res);
    res = NULL;
    rc = ev_db_exec(db, &res,
                    "SELECT provider,"
                    " coalesce(sum(usd) FILTER (WHERE day = (now() AT TIME ZONE"
                    "  'America/Los_Angeles')::date), 0)::float8, sum(usd)::float8, sum(calls)"
                    " FROM spend_daily GROUP BY provider ORDER BY provider",
                    0, NULL);
    if (rc < 0)
        return rc;
    for (int r = 0; r < PQntuples(res); r++) {
        double today = strtod(PQgetvalue(res, r, 1), NULL);
        ev_stats_buf_printf(b, "  %-14s today %10.4f USD   total %10.4f USD   %s calls%s\n",
                            PQgetvalue(res, r, 0), today, strtod(PQgetvalue(res, r, 2), NULL),
                            PQgetvalue(res, r, 3),
                            limit > 0 && today >= limit ? "   LIMIT REACHED: calls held" : "");
    }
    if (PQntuples(res) == 0)
        ev_stats_buf_printf(b, "  nothing spent yet\n");
    PQclear(res);
    res = NULL;
    rc = ev_db_exec(db, &res,
                    "SELECT e.id, e.name, coalesce(sum(s.usd), 0)::float8,"
                    " coalesce(sum(s.usd) FILTER (WHERE s.day = (now() AT TIME ZONE"
                    "  'America/Los_Angeles')::date), 0)::float8, e.budget_usd::float8"
                    " FROM events e JOIN spend_daily s ON s.event_id = e.id"
                    " GROUP BY e.id ORDER BY 3 DESC, e.id LIMIT 10",
                    0, NULL);
    if (rc < 0)
        return rc;
    if (PQntuples(res) > 0)
        ev_stats_buf_printf(b, "  events that cost most:\n");
    for (int r = 0; r < PQntuples(res); r++) {
        double total = strtod(PQgetvalue(res, r, 2), NULL);
        ev_stats_buf_printf(b, "    %-6s %-28.28s today %10.4f   total %10.4f USD",
                            PQgetvalue(res, r, 0), PQgetvalue(res, r, 1),
                            strtod(PQgetvalue(res, r, 3), NULL), total);
        if (!PQgetisnull(res, r, 4)) {
            double budget = strtod(PQgetvalue(res, r, 4), NULL);
            ev_stats_buf_printf(b, "   budget %.4f%s", budget,
                                total >= budget ? " (spent: calls held)" : "");
        }
        ev_stats_buf_printf(b, "\n");
    }
    PQclear(res);
    for (int p = 0; p < EV_PROVIDER_COUNT; p++) {
        ev_cluster_provider_state_t st;
        if (ev_cluster_state_read(db, (ev_provider_id_t)p, &st) != 0 || st.pause_remaining_s <= 0)
            continue;
        if (strcmp(st.pause_reason, EV_CONSOLE_EMERGENCY_REASON) == 0)
            ev_stats_buf_printf(b, "  EMERGENCY STOP: %s is stopped ('emergency off' resumes)\n",
                                ev_provider_name((ev_provider_id_t)p));
        else if (strncmp(st.pause_reason, EV_CONSOLE_PAUSE_PREFIX,
                         strlen(EV_CONSOLE_PAUSE_PREFIX)) == 0)
            ev_stats_buf_printf(b, "  %s held: %s\n", ev_provider_name((ev_provider_id_t)p),
                                st.pause_reason + strlen(EV_CONSOLE_PAUSE_PREFIX));
    }
    return 0;
}

int ev_console_spend_json(ev_db_t *db, double config_limit_usd, struct json_object **out)
{
    PGresult *res = NULL;
    char limit[48];
    snprintf(limit, sizeof(limit), "%.6f", config_limit_usd);
    const char *params[] = {limit};
    *out = NULL;
    int rc = ev_db_exec(
        db, &res,
        "WITH d AS (SELECT (now() AT TIME ZONE 'America/Los_Angeles')::date AS today)"
        " SELECT json_build_object('day', d.today::text,"
        "  'daily_limit_usd', nullif(coalesce((SELECT value::float8 FROM console_settings"
        "     WHERE key = 'daily_spend_limit_usd'), $1::float8), 0),"
        "  'providers', (SELECT coalesce(json_object_agg(provider, json_build_object("
        "     'today_usd', today_usd, 'total_usd', total_usd, 'calls', calls)), '{}')"
        "    FROM (SELECT provider, coalesce(sum(usd) FILTER (WHERE day = d.today), 0)::float8"
        "          AS today_usd, sum(usd)::float8 AS total_usd, sum(calls) AS calls"
        "          FROM spend_daily GROUP BY provider) p),"
        "  'events', (SELECT coalesce(json_agg(e), '[]') FROM"
        "    (SELECT ev.id, ev.name,"
        "      coalesce(sum(s.usd) FILTER (WHERE s.day = d.today), 0)::float8 AS today_usd,"
        "      sum(s.usd)::float8 AS total_usd, ev.budget_usd::float8 AS budget_usd"
        "      FROM events ev JOIN spend_daily s ON s.event_id = ev.id"
        "      GROUP BY ev.id ORDER BY 4 DESC, ev.id LIMIT 10) e))::text FROM d",
        1, params);
    if (rc < 0)
        return rc;
    *out = json_tokener_parse(PQgetvalue(res, 0, 0));
    PQclear(res);
    return *out ? 0 : EV_EPARSE;
}
