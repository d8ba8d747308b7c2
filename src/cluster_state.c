/*
 * cluster_state.c - reads and changes the provider state replicas share.
 *
 * What: one parameterised statement per operation on ev_provider_state and
 * ev_provider_rate (migrations/0002_cluster.sql); the table's trigger sends
 * the NOTIFY, so every writer (replica or operator tool) is announced the same
 * way. Remaining times are computed by Postgres against clock_timestamp(), so
 * only the database clock decides.
 *
 * Threads: runs on the caller's thread with the caller's ev_db_t; no shared
 * state, no locks. Never logs.
 */
#include "ev/cluster_state.h"

#include "ev/error.h"
#include "ev/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest free text stored for a reason or a name. */
#define TEXT_MAX 200

static bool valid_provider(ev_provider_id_t p)
{
    return p >= 0 && p < EV_PROVIDER_COUNT;
}

static void copy_text(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/* Runs a statement expected to touch p's row: EV_ENOTFOUND when it did not. */
static int exec_row(ev_db_t *db, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = NULL;
    int rc = ev_db_exec(db, &res, sql, nparams, params);
    if (rc == 0 && PQntuples(res) == 0 && strcmp(PQcmdTuples(res), "0") == 0)
        rc = EV_ENOTFOUND;
    PQclear(res);
    return rc;
}

int ev_cluster_state_read(ev_db_t *db, ev_provider_id_t p, ev_cluster_provider_state_t *out)
{
    PGresult *res = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    out->provider = p;
    if (!valid_provider(p))
        return EV_EINVAL;
    const char *params[] = {ev_provider_name(p)};
    rc = ev_db_exec(db, &res,
                    "SELECT s.breaker, coalesce(s.breaker_reason, ''),"
                    " extract(epoch FROM greatest(s.open_until, c.t) - c.t)::float8,"
                    " coalesce(CASE WHEN s.probe_until > c.t THEN s.probe_owner END, ''),"
                    " extract(epoch FROM greatest(s.pause_until, c.t) - c.t)::float8,"
                    " coalesce(s.pause_reason, ''), s.disabled, coalesce(s.disabled_reason, ''),"
                    " s.generation, coalesce(s.updated_by, ''),"
                    " extract(epoch FROM c.t - s.updated_at)::float8,"
                    " r.rate_per_min, r.ceiling_per_min, r.burst, r.rpd_limit,"
                    " CASE WHEN r.day = (c.t AT TIME ZONE r.day_tz)::date"
                    "      THEN r.day_count ELSE 0 END, coalesce(r.day::text, ''), r.granted"
                    " FROM ev_provider_state s JOIN ev_provider_rate r USING (provider),"
                    " (SELECT clock_timestamp() AS t) c"
                    " WHERE s.provider = $1",
                    1, params);
    if (rc < 0)
        goto out;
    if (PQntuples(res) != 1) {
        rc = EV_ENOTFOUND;
        goto out;
    }
    const char *b = PQgetvalue(res, 0, 0);
    out->open_remaining_s = strtod(PQgetvalue(res, 0, 2), NULL);
    if (strcmp(b, "closed") == 0)
        out->breaker = EV_BREAKER_CLOSED;
    else if (out->open_remaining_s > 0)
        out->breaker = EV_BREAKER_OPEN;
    else
        out->breaker = EV_BREAKER_HALF_OPEN;
    copy_text(out->breaker_reason, sizeof(out->breaker_reason), PQgetvalue(res, 0, 1));
    copy_text(out->probe_owner, sizeof(out->probe_owner), PQgetvalue(res, 0, 3));
    out->pause_remaining_s = strtod(PQgetvalue(res, 0, 4), NULL);
    copy_text(out->pause_reason, sizeof(out->pause_reason), PQgetvalue(res, 0, 5));
    out->disabled = PQgetvalue(res, 0, 6)[0] == 't';
    copy_text(out->disabled_reason, sizeof(out->disabled_reason), PQgetvalue(res, 0, 7));
    out->generation = strtoull(PQgetvalue(res, 0, 8), NULL, 10);
    copy_text(out->updated_by, sizeof(out->updated_by), PQgetvalue(res, 0, 9));
    out->updated_ago_s = strtod(PQgetvalue(res, 0, 10), NULL);
    out->rate_per_min = strtod(PQgetvalue(res, 0, 11), NULL);
    out->ceiling_per_min = strtod(PQgetvalue(res, 0, 12), NULL);
    out->burst = (int)strtol(PQgetvalue(res, 0, 13), NULL, 10);
    out->rpd_limit = strtoll(PQgetvalue(res, 0, 14), NULL, 10);
    out->day_count = strtoll(PQgetvalue(res, 0, 15), NULL, 10);
    copy_text(out->day, sizeof(out->day), PQgetvalue(res, 0, 16));
    out->granted = strtoll(PQgetvalue(res, 0, 17), NULL, 10);
out:
    PQclear(res);
    return rc;
}

int ev_cluster_state_pause(ev_db_t *db, ev_provider_id_t p, double seconds, const char *reason,
                           const char *by)
{
    char secs[32];
    int rc;

    if (!valid_provider(p) || !(seconds <= 86400.0 * 366))
        return EV_EINVAL;
    snprintf(secs, sizeof(secs), "%.6f", seconds > 0 ? seconds : 0.0);
    char *why = ev_db_clip_text(reason, TEXT_MAX);
    char *who = ev_db_clip_text(by, TEXT_MAX);
    const char *params[] = {ev_provider_name(p), secs, why, who};
    /* A resume ends the pause now; a pause never shortens a longer one. The
     * rate row is what reservations honour, the state row what replicas and
     * operators see. */
    if (seconds > 0)
        rc = ev_db_exec(db, NULL, "SELECT ev_rate_pause($1, $2::float8)", 2, params);
    else
        /* The pause had pushed the grid to its end: bring it back too. */
        rc = ev_db_exec(db, NULL,
                        "UPDATE ev_provider_rate SET tat = CASE WHEN pause_until >"
                        " clock_timestamp() THEN least(tat, clock_timestamp()) ELSE tat END,"
                        " pause_until = least(pause_until, clock_timestamp())"
                        " WHERE provider = $1",
                        1, params);
    if (rc == 0)
        rc = exec_row(db,
                      "UPDATE ev_provider_state SET pause_until = CASE WHEN $2::float8 > 0"
                      " THEN greatest(pause_until, clock_timestamp() + make_interval(secs =>"
                      " $2::float8)) ELSE '-infinity' END,"
                      " pause_reason = CASE WHEN $2::float8 > 0 THEN $3 END,"
                      " updated_by = $4, updated_at = now() WHERE provider = $1",
                      4, params);
    free(why);
    free(who);
    return rc;
}

int ev_cluster_state_open(ev_db_t *db, ev_provider_id_t p, double seconds, const char *reason,
                          const char *by)
{
    char secs[32];

    if (!valid_provider(p) || !(seconds >= 0 && seconds <= 86400.0 * 366))
        return EV_EINVAL;
    snprintf(secs, sizeof(secs), "%.6f", seconds);
    char *why = ev_db_clip_text(reason, TEXT_MAX);
    char *who = ev_db_clip_text(by, TEXT_MAX);
    const char *params[] = {ev_provider_name(p), secs, why, who};
    int rc = exec_row(db,
                      "UPDATE ev_provider_state SET breaker = 'open', breaker_reason = $3,"
                      " open_until = greatest(CASE WHEN breaker = 'open' THEN open_until"
                      " ELSE '-infinity' END, clock_timestamp() + make_interval(secs =>"
                      " $2::float8)), probe_owner = NULL, probe_until = '-infinity',"
                      " generation = generation + 1, updated_by = $4, updated_at = now()"
                      " WHERE provider = $1",
                      4, params);
    free(why);
    free(who);
    return rc;
}

int ev_cluster_state_close(ev_db_t *db, ev_provider_id_t p, const char *by)
{
    if (!valid_provider(p))
        return EV_EINVAL;
    char *who = ev_db_clip_text(by, TEXT_MAX);
    const char *params[] = {ev_provider_name(p), who};
    int rc = exec_row(db,
                      "UPDATE ev_provider_state SET breaker = 'closed', breaker_reason = NULL,"
                      " open_until = '-infinity', probe_owner = NULL, probe_until = '-infinity',"
                      " generation = generation + 1, updated_by = $2, updated_at = now()"
                      " WHERE provider = $1",
                      2, params);
    free(who);
    return rc;
}

int ev_cluster_state_disable(ev_db_t *db, ev_provider_id_t p, bool disabled, const char *reason,
                             const char *by)
{
    if (!valid_provider(p))
        return EV_EINVAL;
    char *why = ev_db_clip_text(reason, TEXT_MAX);
    char *who = ev_db_clip_text(by, TEXT_MAX);
    const char *params[] = {ev_provider_name(p), disabled ? "true" : "false", why, who};
    int rc = exec_row(db,
                      "UPDATE ev_provider_state SET disabled = $2::boolean,"
                      " disabled_reason = CASE WHEN $2::boolean THEN $3 END,"
                      " updated_by = $4, updated_at = now() WHERE provider = $1",
                      4, params);
    free(why);
    free(who);
    return rc;
}

int ev_cluster_state_claim_probe(ev_db_t *db, ev_provider_id_t p, const char *owner,
                                 double timeout_s, bool *granted)
{
    PGresult *res = NULL;
    char secs[32];
    int rc;

    *granted = false;
    if (!valid_provider(p) || owner == NULL || !(timeout_s > 0))
        return EV_EINVAL;
    snprintf(secs, sizeof(secs), "%.6f", timeout_s);
    char *who = ev_db_clip_text(owner, TEXT_MAX);
    const char *params[] = {ev_provider_name(p), who, secs};
    /* The generation is not bumped: a claim is not a breaker change, and
     * replicas must not re-apply the opening because of it. */
    rc = ev_db_exec(db, &res,
                    "UPDATE ev_provider_state SET breaker = 'half_open', probe_owner = $2,"
                    " probe_until = clock_timestamp() + make_interval(secs => $3::float8),"
                    " updated_by = $2, updated_at = now()"
                    " WHERE provider = $1 AND breaker <> 'closed'"
                    " AND open_until <= clock_timestamp()"
                    " AND (probe_owner IS NULL OR probe_until <= clock_timestamp())"
                    " RETURNING 1",
                    3, params);
    if (rc == 0)
        *granted = PQntuples(res) == 1;
    PQclear(res);
    free(who);
    return rc;
}

int ev_cluster_rate_set(ev_db_t *db, ev_provider_id_t p, double per_min)
{
    char rate[32];

    if (!valid_provider(p) || !(per_min > 0 && per_min <= 1e7))
        return EV_EINVAL;
    snprintf(rate, sizeof(rate), "%.6f", per_min);
    const char *params[] = {ev_provider_name(p), rate};
    return exec_row(db,
                    "UPDATE ev_provider_rate SET rate_per_min = CASE WHEN ceiling_per_min > 0"
                    " THEN least($2::float8, ceiling_per_min) ELSE $2::float8 END,"
                    " updated_at = now() WHERE provider = $1",
                    2, params);
}

int ev_cluster_rate_configure(ev_db_t *db, ev_provider_id_t p, double ceiling_per_min, int burst,
                              int64_t rpd_limit)
{
    char ceil_s[32], burst_s[16], rpd_s[32];

    if (!valid_provider(p) || !(ceiling_per_min >= 0 && ceiling_per_min <= 1e7) || burst < 1 ||
        rpd_limit < 0)
        return EV_EINVAL;
    snprintf(ceil_s, sizeof(ceil_s), "%.6f", ceiling_per_min);
    snprintf(burst_s, sizeof(burst_s), "%d", burst);
    snprintf(rpd_s, sizeof(rpd_s), "%lld", (long long)rpd_limit);
    const char *params[] = {ev_provider_name(p), ceil_s, burst_s, rpd_s};
    /* A provider added after the migration gets its rows here; only Gemini's
     * day ends at midnight Pacific. */
    int rc = ev_db_exec(db, NULL,
                        "WITH s AS (INSERT INTO ev_provider_state (provider) VALUES ($1)"
                        " ON CONFLICT DO NOTHING) INSERT INTO ev_provider_rate (provider, day_tz)"
                        " VALUES ($1, CASE $1 WHEN 'gemini' THEN 'America/Los_Angeles'"
                        " ELSE 'UTC' END) ON CONFLICT DO NOTHING",
                        1, params);
    if (rc < 0)
        return rc;
    return exec_row(db,
                    "UPDATE ev_provider_rate SET rate_per_min = CASE WHEN ceiling_per_min"
                    " = $2::float8 THEN rate_per_min ELSE $2::float8 END,"
                    " ceiling_per_min = $2::float8,"
                    " burst = $3::int, rpd_limit = $4::bigint, updated_at = now()"
                    " WHERE provider = $1",
                    4, params);
}

int ev_cluster_status_json(ev_db_t *db, int expire_s, json_object **out)
{
    PGresult *res = NULL;
    char exp[16];
    int rc;

    *out = NULL;
    snprintf(exp, sizeof(exp), "%d", expire_s);
    const char *params[] = {exp};
    rc = ev_db_exec(
        db, &res,
        "SELECT json_build_object("
        " 'replicas', (SELECT coalesce(json_agg(json_build_object('id', id, 'host', host,"
        "   'pid', pid, 'version', version, 'started_at', started_at,"
        "   'heartbeat_age_s', round(extract(epoch FROM clock_timestamp() - "
        "heartbeat_at)::numeric, 1),"
        "   'alive', heartbeat_at > clock_timestamp() - make_interval(secs => $1::int))"
        "   ORDER BY started_at), '[]') FROM ev_cluster_replicas),"
        " 'replicas_alive', (SELECT count(*) FROM ev_cluster_replicas"
        "   WHERE heartbeat_at > clock_timestamp() - make_interval(secs => $1::int)),"
        " 'unregistered_lease_owners', (SELECT coalesce(json_agg(DISTINCT lease_owner), '[]')"
        "   FROM submissions s WHERE status = 'processing' AND lease_owner IS NOT NULL"
        "   AND NOT EXISTS (SELECT 1 FROM ev_cluster_replicas r WHERE r.id = s.lease_owner)),"
        " 'queue', (SELECT coalesce(json_object_agg(status, n ORDER BY status), '{}')"
        "   FROM (SELECT status, count(*) n FROM submissions GROUP BY status) q))",
        1, params);
    if (rc < 0)
        goto out;
    *out = json_tokener_parse(PQgetvalue(res, 0, 0));
    if (*out == NULL) {
        rc = EV_EPARSE;
        goto out;
    }
    json_object *providers = json_object_new_object();
    json_object_object_add(*out, "providers", providers);
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        ev_cluster_provider_state_t st;
        rc = ev_cluster_state_read(db, (ev_provider_id_t)i, &st);
        if (rc == EV_ENOTFOUND) { /* no replica has used this provider yet */
            rc = 0;
            continue;
        }
        if (rc < 0)
            goto out;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "breaker",
                               json_object_new_string(ev_breaker_state_name(st.breaker)));
        json_object_object_add(o, "breaker_reason", json_object_new_string(st.breaker_reason));
        json_object_object_add(o, "open_remaining_s", json_object_new_double(st.open_remaining_s));
        json_object_object_add(o, "probe_owner", json_object_new_string(st.probe_owner));
        json_object_object_add(o, "pause_remaining_s",
                               json_object_new_double(st.pause_remaining_s));
        json_object_object_add(o, "pause_reason", json_object_new_string(st.pause_reason));
        json_object_object_add(o, "disabled", json_object_new_boolean(st.disabled));
        json_object_object_add(o, "disabled_reason", json_object_new_string(st.disabled_reason));
        json_object_object_add(o, "rate_per_min", json_object_new_double(st.rate_per_min));
        json_object_object_add(o, "ceiling_per_min", json_object_new_double(st.ceiling_per_min));
        json_object_object_add(o, "rpd_limit", json_object_new_int64(st.rpd_limit));
        json_object_object_add(o, "day_count", json_object_new_int64(st.day_count));
        json_object_object_add(o, "updated_by", json_object_new_string(st.updated_by));
        json_object_object_add(providers, ev_provider_name((ev_provider_id_t)i), o);
    }
out:
    if (rc < 0) {
        json_object_put(*out);
        *out = NULL;
    }
    PQclear(res);
    return rc;
}
