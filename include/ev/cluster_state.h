/*
 * cluster_state.h - the provider state every replica shares, read and changed
 * through one database (tables of migrations/0002_cluster.sql).
 *
 * Per provider the database holds one state row (breaker, pause, disabled)
 * and one rate row (the cluster-wide request grid, its rate and the daily
 * count). Every change of a state row is announced with NOTIFY on
 * EV_CLUSTER_STATE_CHANNEL (payload: the provider name); every running
 * `serve` LISTENs and applies it to its own breaker, limiter and router
 * within about a second (src/cluster.c). So a tool that changes a row here,
 * such as an operator command, acts on the whole cluster at once, and a
 * replica that starts later reads the same row.
 *
 * For operator controls (what each call does to the running replicas):
 *   pause / resume     ev_cluster_state_pause(db, p, seconds, reason, by):
 *                      no call to p before now + seconds (database clock),
 *                      then calls restart one interval apart; seconds <= 0
 *                      ends any pause now (resume).
 *   breaker open       ev_cluster_state_open(db, p, seconds, reason, by):
 *                      every replica falls back from p; after `seconds` ONE
 *                      replica probes it (cluster-wide), the others keep
 *                      falling back until the probe succeeds.
 *   breaker reset      ev_cluster_state_close(db, p, by): closed everywhere,
 *                      error windows emptied.
 *   disable / enable   ev_cluster_state_disable(db, p, true|false, reason, by):
 *                      disabled is what an invalid key or a retired model
 *                      does: every replica stops using p (a replica disables
 *                      it for the life of its process); enabling clears the
 *                      flag for replicas started afterwards.
 *   read               ev_cluster_state_read(db, p, &st).
 *   subscribe          LISTEN EV_CLUSTER_STATE_CHANNEL on your own ev_db_t
 *                      (ev_db_listen, ev_db_wait_notify), then read; inside
 *                      `serve`, ev_cluster_subscribe() in cluster.h.
 * `by` names who acted (a replica id, "operator", ...); it is stored and
 * shown by `event-validator status`. `reason` is free text (clipped).
 *
 * For an adaptive rate controller: ev_cluster_rate_set(db, p, per_min)
 * changes the cluster-wide rate in force (calls per minute, already
 * including the safety factor) within (0, ceiling], where the ceiling is
 * *_RPM_LIMIT x safety factor as configured; it applies to the very next
 * reservation of every replica, so the rate is learned once for the whole
 * cluster. ev_cluster_state_read() returns both figures.
 *
 * All functions run on the caller's thread with the caller's own ev_db_t (one
 * statement each, autocommit); they never log. Return 0, EV_EINVAL for a bad
 * argument, EV_ENOTFOUND when the schema has no row for p (database not
 * migrated to 0002), EV_EDB or EV_EDBCONN.
 */
#ifndef EV_CLUSTER_STATE_H
#define EV_CLUSTER_STATE_H

#include "ev/breaker.h"
#include "ev/config.h"
#include "ev/db.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

/* NOTIFY channel of ev_provider_state changes; payload "gemini" / "groq". */
#define EV_CLUSTER_STATE_CHANNEL "ev_provider_state"

/* A snapshot of one provider's shared state and rate row. Times are given
 * as seconds remaining from the database's clock, so no host clock enters. */
typedef struct ev_cluster_provider_state {
    ev_provider_id_t provider;
    /* Effective breaker: "open" past open_until reads as half_open. */
    ev_breaker_state_t breaker;
    char breaker_reason[128];
    double open_remaining_s; /* > 0 while calls are refused */
    char probe_owner[128];   /* replica holding the half-open probe, "" if none */
    double pause_remaining_s;
    char pause_reason[128];
    bool disabled;
    char disabled_reason[256];
    uint64_t generation; /* bumped by every breaker change */
    char updated_by[128];
    double updated_ago_s;
    /* The rate row. */
    double rate_per_min;    /* in force (0 = no rate limit) */
    double ceiling_per_min; /* as configured: *_RPM_LIMIT x safety factor */
    int burst;
    int64_t rpd_limit; /* 0 = none */
    int64_t day_count; /* requests granted in the current provider day */
    char day[16];      /* that day, YYYY-MM-DD, "" before the first request */
    int64_t granted;   /* requests granted since the row exists */
} ev_cluster_provider_state_t;

int ev_cluster_state_read(ev_db_t *db, ev_provider_id_t p, ev_cluster_provider_state_t *out);

/* Pause p cluster-wide for `seconds` (<= 0: resume now). */
int ev_cluster_state_pause(ev_db_t *db, ev_provider_id_t p, double seconds, const char *reason,
                           const char *by);

/* Opens p's breaker cluster-wide for at least `seconds` (never shortens a
 * longer opening), then one probe. */
int ev_cluster_state_open(ev_db_t *db, ev_provider_id_t p, double seconds, const char *reason,
                          const char *by);

/* Closes p's breaker cluster-wide (breaker reset). */
int ev_cluster_state_close(ev_db_t *db, ev_provider_id_t p, const char *by);

/* Sets or clears p's disabled flag cluster-wide. */
int ev_cluster_state_disable(ev_db_t *db, ev_provider_id_t p, bool disabled, const char *reason,
                             const char *by);

/* Claims the one half-open probe of p for `owner` for up to timeout_s:
 * *granted is true when p's breaker is past its opening and no other live
 * claim exists (then the breaker reads half_open with probe_owner = owner). */
int ev_cluster_state_claim_probe(ev_db_t *db, ev_provider_id_t p, const char *owner,
                                 double timeout_s, bool *granted);

/* Sets the rate in force, clamped to the ceiling; per_min must be > 0. */
int ev_cluster_rate_set(ev_db_t *db, ev_provider_id_t p, double per_min);

/* What a starting replica writes: its ceiling (rpm x safety, 0 = none),
 * burst and daily cap. A changed ceiling also resets the rate in force to
 * it; an unchanged one keeps a learned rate. */
int ev_cluster_rate_configure(ev_db_t *db, ev_provider_id_t p, double ceiling_per_min, int burst,
                              int64_t rpd_limit);

/*
 * The cluster as `event-validator status` shows it, one JSON object:
 * {replicas: [{id, host, pid, version, started_at, heartbeat_age_s, alive}],
 *  replicas_alive, unregistered_lease_owners: [...],
 *  queue: {pending, processing, ...}, providers: {gemini: {...}, groq: {...}}}.
 * A replica is alive when its heartbeat is younger than expire_s. Lease
 * owners with claimed work and no registry row are replicas of an older
 * version (they do not coordinate). *out is the caller's (json_object_put).
 */
int ev_cluster_status_json(ev_db_t *db, int expire_s, json_object **out);

#endif
