/*
 * cluster.c - every `serve` on one database acts as one client per provider.
 *
 * What: cluster-wide rate slots, concurrency slots and provider state, with
 * Postgres as the only coordinator (see cluster.h for the model and the
 * behaviour under database trouble, migrations/0002_cluster.sql for the SQL).
 *
 * How: the limiter, semaphore and breaker of each provider get remotes and
 * hooks (installed by ev_cluster_attach) that run on the worker threads and
 * use the coordination session; the watch thread keeps the registry, listens
 * for state changes and applies them. A thread-local flag marks the watch
 * thread while it applies a change, so the hooks that fire because of it do
 * not publish the change again.
 *
 * Threads: worker threads (remotes, hooks), the watch thread, the main
 * thread (new/attach/start/free) and the stats threads (snapshots).
 *
 * Locking: coord_mu guards the coordination session (`coord`, `connected`)
 * and each provider's slot bookkeeping (held, unbacked, fb_units, debt,
 * fb_tat_us); coord_cv is signalled when a slot is given back or the session
 * returns. It is a leaf: no other lock is taken while it is held, and the
 * primitives' hooks that could re-enter the coordinator (force_open,
 * pause_until) are called after it is released. Counters are relaxed
 * atomics; `applied` state is touched only by the watch thread.
 */
#include "ev/cluster.h"

#include "ev/db.h"
#include "ev/error.h"
#include "ev/stats.h"
#include "ev/threads.h"
#include "ev/util.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_SLOTS 64

typedef struct prov {
    bool attached; /* immutable after start */
    ev_provider_id_t id;
    ev_cluster_provider_t cfg; /* immutable after attach */
    struct ev_cluster *c;
    /* Guarded by coord_mu. */
    int held[MAX_SLOTS]; /* slots locked on the current session */
    int nheld;
    int nspare;        /* of those, locks kept idle for reuse (alone in the cluster) */
    int unbacked;      /* calls in flight whose lock died with an old session */
    int fb_units;      /* calls in flight admitted from the share */
    int64_t debt;      /* rate slots granted from the share, not yet charged */
    int64_t fb_tat_us; /* the share's local grid */
    /* Written by the watch thread, read by workers. */
    _Atomic double rate_per_min;
    /* A rate learned here (adaptive controller), for the watch thread to
     * write; 0 when nothing new. */
    _Atomic double learned_per_min;
    /* Watch thread only. */
    uint64_t applied_gen;
    bool applied_disabled;
    bool applied_pause;
} prov_t;

struct ev_cluster {
    /* Immutable after ev_cluster_new. */
    char *url;
    char *id;
    ev_cluster_options_t opts;
    const ev_clock_t *clock;
    prov_t p[EV_PROVIDER_COUNT];
    ev_cluster_state_fn sub_fn;
    void *sub_ctx;

    pthread_mutex_t coord_mu;
    pthread_cond_t coord_cv;
    ev_db_t *coord; /* guarded by coord_mu */
    bool connected; /* guarded by coord_mu */
    ev_db_t *watch; /* watch thread only (main thread before start / after join) */
    ev_thread_t thread;
    atomic_bool stop;

    _Atomic int alive;
    atomic_bool coordinated; /* mirrors `connected` for lock-free readers */
    _Atomic uint64_t round_trips, round_trip_us, reservations, acquisitions, fallback_grants,
        applied;
};

/* Set on the watch thread while it applies a shared change. */
static _Thread_local bool applying;

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* One statement, counted as a coordination round trip. */
static int rt_exec(ev_cluster_t *c, ev_db_t *db, PGresult **res, const char *sql, int n,
                   const char *const *params)
{
    int64_t t0 = mono_us();
    int rc = ev_db_exec(db, res, sql, n, params);
    atomic_fetch_add_explicit(&c->round_trips, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->round_trip_us, (uint64_t)(mono_us() - t0), memory_order_relaxed);
    return rc;
}

/* A statement failed on the coordination session. Requires coord_mu. */
static void coord_failed(ev_cluster_t *c, int rc)
{
    if (rc == EV_EDBCONN || PQstatus(ev_db_conn(c->coord)) != CONNECTION_OK) {
        c->connected = false;
        atomic_store(&c->coordinated, false);
    }
}

/* Session settings of the coordination session: Postgres must notice a
 * vanished host within seconds, because that session's locks are slots. */
static int coord_setup(ev_cluster_t *c, ev_db_t *db)
{
    char sql[256];
    int k = c->opts.keepalive_s;
    snprintf(sql, sizeof(sql),
             "SET tcp_keepalives_idle = %d; SET tcp_keepalives_interval = %d;"
             " SET tcp_keepalives_count = 3",
             k, EV_MAX(1, k / 2));
    int rc = ev_db_exec_script(db, sql);
    const char *params[] = {c->id};
    if (rc == 0)
        rc = rt_exec(c, db, NULL,
                     "UPDATE ev_cluster_replicas SET coord_pid = pg_backend_pid() WHERE id = $1", 1,
                     params);
    atomic_fetch_add_explicit(&c->round_trips, 1, memory_order_relaxed);
    return rc;
}

static int replicas_alive(const ev_cluster_t *c)
{
    return EV_MAX(1, atomic_load_explicit(&c->alive, memory_order_relaxed));
}

/* ---------------------------------------------------------------- rate */

/* Grants from this replica's share of the rate (database unreachable).
 * Requires coord_mu. */
static int share_reserve(ev_cluster_t *c, prov_t *p, int64_t max_wait_us, int64_t *wait_us)
{
    double rate = atomic_load_explicit(&p->rate_per_min, memory_order_relaxed);
    int64_t now = ev_clock_now_us(c->clock);
    int64_t slot = now;
    int64_t step = 0;
    if (rate > 0) {
        step = (int64_t)ceil(60e6 / rate) * replicas_alive(c);
        slot = EV_MAX(now, p->fb_tat_us);
    }
    *wait_us = slot - now;
    if (max_wait_us >= 0 && *wait_us > max_wait_us)
        return EV_ELIMIT;
    p->fb_tat_us = slot + step;
    p->debt++;
    atomic_fetch_add_explicit(&c->fallback_grants, 1, memory_order_relaxed);
    return 0;
}

/* One reservation on the shared grid. Requires coord_mu and connected.
 * Returns 0, EV_ELIMIT (too far away, or the daily cap is spent) or the
 * database error. */
static int grid_reserve(ev_cluster_t *c, prov_t *p, int64_t max_wait_us, int64_t *wait_us)
{
    PGresult *res = NULL;
    char maxw[32], extra[24];
    snprintf(maxw, sizeof(maxw), "%.6f", max_wait_us < 0 ? -1.0 : (double)max_wait_us / 1e6);
    snprintf(extra, sizeof(extra), "%lld", (long long)p->debt);
    const char *params[] = {ev_provider_name(p->id), maxw, extra};
    int rc =
        rt_exec(c, c->coord, &res,
                "SELECT ok, wait_s, why FROM ev_rate_reserve($1, $2::float8, $3::int)", 3, params);
    if (rc == 0) {
        bool ok = PQgetvalue(res, 0, 0)[0] == 't';
        *wait_us = (int64_t)ceil(strtod(PQgetvalue(res, 0, 1), NULL) * 1e6);
        *wait_us = EV_MAX(0, *wait_us);
        p->debt = 0; /* charged, granted or not */
        rc = ok ? 0 : EV_ELIMIT;
        atomic_fetch_add_explicit(&c->reservations, ok, memory_order_relaxed);
    }
    PQclear(res);
    return rc;
}

static int rate_reserve(void *ctx, int64_t max_wait_us, int64_t *wait_us)
{
    prov_t *p = ctx;
    ev_cluster_t *c = p->c;
    int rc = EV_EDBCONN;

    *wait_us = 0;
    pthread_mutex_lock(&c->coord_mu);
    if (c->connected) {
        rc = grid_reserve(c, p, max_wait_us, wait_us);
        if (rc != 0 && rc != EV_ELIMIT)
            coord_failed(c, rc);
    }
    if (rc != 0 && rc != EV_ELIMIT)
        rc = share_reserve(c, p, max_wait_us, wait_us);
    pthread_mutex_unlock(&c->coord_mu);
    /* A spent daily cap is deliberately not a breaker opening: calls already
     * granted within the cap must still go. Every later reservation of any
     * replica is refused by the shared count until the provider's day ends. */
    return rc;
}

static void rate_paused(void *ctx, int64_t until_us)
{
    prov_t *p = ctx;
    ev_cluster_t *c = p->c;
    if (applying)
        return;
    double secs = (double)(until_us - ev_clock_now_us(c->clock)) / 1e6;
    if (secs <= 0)
        return;
    pthread_mutex_lock(&c->coord_mu);
    if (c->connected) {
        int rc = ev_cluster_state_pause(c->coord, p->id, secs, "rate limited (429)", c->id);
        atomic_fetch_add_explicit(&c->round_trips, 2, memory_order_relaxed);
        if (rc < 0)
            coord_failed(c, rc);
    }
    pthread_mutex_unlock(&c->coord_mu);
}

/* A learned rate is written by the watch thread, so a worker never pays a
 * round trip for it; the next reservation of every replica then uses it. */
static void rate_learned(void *ctx, double rate_per_s)
{
    prov_t *p = ctx;
    if (!applying && rate_per_s > 0)
        atomic_store(&p->learned_per_min, rate_per_s * 60.0);
}

/* Watch thread: shares the rates learned since the last turn. */
static void share_learned(ev_cluster_t *c)
{
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        double r = atomic_exchange(&c->p[i].learned_per_min, 0.0);
        if (r > 0 && c->p[i].attached) {
            if (ev_cluster_rate_set(c->watch, c->p[i].id, r) < 0)
                atomic_store(&c->p[i].learned_per_min, r);
            atomic_fetch_add_explicit(&c->round_trips, 1, memory_order_relaxed);
        }
    }
}

/* ---------------------------------------------------------------- slots */

/* Tries to lock one more slot on the session. Requires coord_mu and
 * connected. Returns 0 with the slot recorded, EV_EBUSY, or the error. */
static int slot_try(ev_cluster_t *c, prov_t *p)
{
    PGresult *res = NULL;
    char cap[16], held[MAX_SLOTS * 4 + 4];
    size_t off = 0;
    snprintf(cap, sizeof(cap), "%d", p->cfg.max_concurrent);
    held[off++] = '{';
    for (int i = 0; i < p->nheld; i++)
        off += (size_t)snprintf(held + off, sizeof(held) - off, "%s%d", i ? "," : "", p->held[i]);
    snprintf(held + off, sizeof(held) - off, "}");
    const char *params[] = {ev_provider_name(p->id), cap, held};
    int rc = rt_exec(c, c->coord, &res, "SELECT ev_slot_try($1, $2::int, $3::int[])", 3, params);
    if (rc == 0) {
        int s = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
        if (s >= 0 && p->nheld < MAX_SLOTS)
            p->held[p->nheld++] = s;
        else
            rc = EV_EBUSY;
    }
    PQclear(res);
    return rc;
}

/* Calls in flight on this replica. Requires coord_mu. */
static int slots_in_use(const prov_t *p)
{
    return p->nheld - p->nspare + p->unbacked + p->fb_units;
}

/* Unlocks the last held slot. Requires coord_mu. */
static void slot_unlock_one(ev_cluster_t *c, prov_t *p)
{
    int s = p->held[--p->nheld];
    if (!c->connected)
        return; /* the lock died with the session */
    char sl[16];
    snprintf(sl, sizeof(sl), "%d", s);
    const char *params[] = {ev_provider_name(p->id), sl};
    int rc = rt_exec(c, c->coord, NULL, "SELECT pg_advisory_unlock(ev_slot_class($1), $2::int)", 2,
                     params);
    if (rc < 0)
        coord_failed(c, rc);
}

/* One attempt at a unit. Requires coord_mu. Returns true when granted. */
static bool slot_attempt(ev_cluster_t *c, prov_t *p)
{
    while (c->connected) {
        /* A lock kept from an earlier call costs no round trip. */
        if (p->nspare > 0) {
            p->nspare--;
            if (p->unbacked == 0)
                return true;
            p->unbacked--;
            continue;
        }
        int rc = slot_try(c, p);
        if (rc == EV_EBUSY)
            return false;
        if (rc < 0) {
            coord_failed(c, rc);
            break;
        }
        if (p->unbacked == 0) {
            atomic_fetch_add_explicit(&c->acquisitions, 1, memory_order_relaxed);
            return true;
        }
        /* A call still in flight from before a reconnect gets its lock
         * back first: new calls wait until every running one is counted. */
        p->unbacked--;
    }
    int share = p->cfg.max_concurrent / replicas_alive(c);
    if (slots_in_use(p) < share) {
        p->fb_units++;
        atomic_fetch_add_explicit(&c->fallback_grants, 1, memory_order_relaxed);
        return true;
    }
    return false;
}

static void timed_wait_ms(ev_cluster_t *c, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&c->coord_cv, &c->coord_mu, &ts);
}

static int slot_acquire(void *ctx, int64_t deadline_us, const atomic_bool *stop)
{
    prov_t *p = ctx;
    ev_cluster_t *c = p->c;
    int rc = 0;

    pthread_mutex_lock(&c->coord_mu);
    for (;;) {
        if (slot_attempt(c, p))
            break;
        if (stop != NULL && atomic_load(stop)) {
            rc = EV_ESHUTDOWN;
            break;
        }
        if (deadline_us >= 0 && ev_clock_now_us(c->clock) >= deadline_us) {
            rc = EV_ETIMEOUT;
            break;
        }
        timed_wait_ms(c, c->opts.slot_poll_ms);
    }
    pthread_mutex_unlock(&c->coord_mu);
    return rc;
}

static void slot_release(void *ctx)
{
    prov_t *p = ctx;
    ev_cluster_t *c = p->c;

    pthread_mutex_lock(&c->coord_mu);
    if (p->unbacked > 0) {
        p->unbacked--;
    } else if (p->nheld > p->nspare) {
        /* Alone in the cluster, the lock is kept for the next call: no
         * round trip, and nobody waits for it. The watch thread gives the
         * spares back as soon as another replica is alive. */
        if (c->connected && replicas_alive(c) == 1)
            p->nspare++;
        else
            slot_unlock_one(c, p);
    } else if (p->fb_units > 0) {
        p->fb_units--;
    }
    pthread_cond_broadcast(&c->coord_cv);
    pthread_mutex_unlock(&c->coord_mu);
}

/* Watch thread: another replica is alive, so kept locks go back. */
static void slots_give_back_spares(ev_cluster_t *c)
{
    pthread_mutex_lock(&c->coord_mu);
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        while (c->p[i].nspare > 0) {
            c->p[i].nspare--;
            slot_unlock_one(c, &c->p[i]);
        }
    }
    pthread_mutex_unlock(&c->coord_mu);
}

/* ---------------------------------------------------------------- breaker */

static bool breaker_claim(void *ctx)
{
    prov_t *p = ctx;
    ev_cluster_t *c = p->c;
    bool granted = true;

    pthread_mutex_lock(&c->coord_mu);
    if (c->connected) {
        int rc = ev_cluster_state_claim_probe(c->coord, p->id, c->id,
                                              (double)EV_MAX(1, p->cfg.probe_timeout_s), &granted);
        atomic_fetch_add_explicit(&c->round_trips, 1, memory_order_relaxed);
        if (rc < 0) {
            coord_failed(c, rc);
            granted = true; /* the database is away: probe locally */
        }
    }
    pthread_mutex_unlock(&c->coord_mu);
    return granted;
}

static void breaker_changed(void *ctx, ev_breaker_state_t from, ev_breaker_state_t to,
                            int64_t open_until_us, bool forced)
{
    prov_t *p = ctx;
    ev_cluster_t *c = p->c;
    int rc = 0;

    if (applying || to == EV_BREAKER_HALF_OPEN)
        return;
    pthread_mutex_lock(&c->coord_mu);
    if (c->connected) {
        if (to == EV_BREAKER_OPEN) {
            double secs = EV_MAX(0.0, (double)(open_until_us - ev_clock_now_us(c->clock)) / 1e6);
            const char *why = forced                         ? "daily quota"
                              : from == EV_BREAKER_HALF_OPEN ? "probe failed"
                                                             : "error rate";
            rc = ev_cluster_state_open(c->coord, p->id, secs, why, c->id);
        } else {
            rc = ev_cluster_state_close(c->coord, p->id, c->id);
        }
        atomic_fetch_add_explicit(&c->round_trips, 1, memory_order_relaxed);
        if (rc < 0)
            coord_failed(c, rc);
    }
    pthread_mutex_unlock(&c->coord_mu);
}

void ev_cluster_report_disabled(ev_cluster_t *c, ev_provider_id_t p, const char *reason)
{
    if (c == NULL || applying)
        return;
    pthread_mutex_lock(&c->coord_mu);
    if (c->connected) {
        int rc = ev_cluster_state_disable(c->coord, p, true, reason, c->id);
        atomic_fetch_add_explicit(&c->round_trips, 1, memory_order_relaxed);
        if (rc < 0)
            coord_failed(c, rc);
    }
    pthread_mutex_unlock(&c->coord_mu);
}

/* ---------------------------------------------------------------- watch */

/* Brings a provider's local primitives in line with the shared row. Watch
 * thread only; `applying` keeps the hooks from publishing it back. */
static void apply_state(ev_cluster_t *c, prov_t *p, const ev_cluster_provider_state_t *st)
{
    int64_t now = ev_clock_now_us(c->clock);
    bool changed = p->applied_gen == UINT64_MAX; /* the first read counts */

    applying = true;
    atomic_store_explicit(&p->rate_per_min, st->rate_per_min, memory_order_relaxed);
    /* A rate learned by any replica is the rate of all of them. */
    double local = ev_limiter_rate_per_s(p->cfg.limiter) * 60.0;
    if (st->rate_per_min > 0 && local > 0 && fabs(local - st->rate_per_min) > 1e-6 * local)
        ev_limiter_set_rate(p->cfg.limiter, st->rate_per_min / 60.0);
    if (st->disabled && !p->applied_disabled && p->cfg.disable != NULL) {
        p->cfg.disable(p->cfg.ctx, st->disabled_reason);
        changed = true;
    }
    p->applied_disabled = st->disabled;
    if (st->breaker == EV_BREAKER_OPEN) {
        ev_breaker_force_open(p->cfg.breaker, now + (int64_t)(st->open_remaining_s * 1e6), NULL);
    } else if (st->generation != p->applied_gen) {
        /* Closed: reset. Half-open (a replica is probing): open until now,
         * so the next call asks for the probe and is refused. */
        if (st->breaker == EV_BREAKER_CLOSED)
            ev_breaker_reset(p->cfg.breaker, NULL);
        else if (ev_breaker_state(p->cfg.breaker) == EV_BREAKER_CLOSED)
            ev_breaker_force_open(p->cfg.breaker, now, NULL);
    }
    changed = changed || st->generation != p->applied_gen;
    p->applied_gen = st->generation;
    if (st->pause_remaining_s > 0) {
        ev_limiter_pause_until(p->cfg.limiter, now + (int64_t)(st->pause_remaining_s * 1e6));
        changed = changed || !p->applied_pause;
        p->applied_pause = true;
    } else if (p->applied_pause) {
        ev_limiter_pause_clear(p->cfg.limiter);
        p->applied_pause = false;
        changed = true;
    }
    applying = false;
    if (changed)
        atomic_fetch_add_explicit(&c->applied, 1, memory_order_relaxed);
    if (changed && c->sub_fn != NULL)
        c->sub_fn(c->sub_ctx, st);
}

static void refresh_state(ev_cluster_t *c)
{
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        prov_t *p = &c->p[i];
        ev_cluster_provider_state_t st;
        if (!p->attached)
            continue;
        int rc = ev_cluster_state_read(c->watch, p->id, &st);
        atomic_fetch_add_explicit(&c->round_trips, 1, memory_order_relaxed);
        if (rc == 0)
            apply_state(c, p, &st);
    }
}

/* Heartbeat (re-registering after an expiry), expiry of dead replicas and
 * the count of live ones, in one statement. */
static int heartbeat(ev_cluster_t *c)
{
    PGresult *res = NULL;
    char pid[16], exp[16];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    snprintf(exp, sizeof(exp), "%d", c->opts.expire_s);
    char host[128] = "";
    gethostname(host, sizeof(host) - 1);
    const char *params[] = {c->id, host, pid, EV_VERSION, exp};
    int rc = rt_exec(c, c->watch, &res,
                     "WITH gone AS (DELETE FROM ev_cluster_replicas WHERE heartbeat_at <"
                     " clock_timestamp() - 3 * make_interval(secs => $5::int) AND id <> $1),"
                     " me AS (INSERT INTO ev_cluster_replicas (id, host, pid, version)"
                     " VALUES ($1, $2, $3::int, $4) ON CONFLICT (id) DO UPDATE"
                     " SET heartbeat_at = clock_timestamp() RETURNING 1)"
                     " SELECT 1 + count(*) FROM ev_cluster_replicas WHERE id <> $1"
                     " AND heartbeat_at > clock_timestamp() - make_interval(secs => $5::int)",
                     5, params);
    if (rc == 0)
        atomic_store_explicit(&c->alive, (int)strtol(PQgetvalue(res, 0, 0), NULL, 10),
                              memory_order_relaxed);
    PQclear(res);
    return rc;
}

/* Reconnects the coordination session after an outage. Watch thread. */
static void coord_reconnect(ev_cluster_t *c)
{
    ev_db_t *fresh = NULL, *old = NULL;
    char err[256];

    /* Connecting may take up to the connect timeout: never under coord_mu,
     * where workers must keep falling back to their share meanwhile. */
    if (ev_db_connect(&fresh, c->url, err, sizeof(err)) < 0 || coord_setup(c, fresh) < 0) {
        ev_db_free(fresh);
        return;
    }
    pthread_mutex_lock(&c->coord_mu);
    if (!c->connected) {
        old = c->coord;
        c->coord = fresh;
        fresh = NULL;
        for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
            prov_t *p = &c->p[i];
            /* The old session's locks are gone: every call in flight must
             * get one again before a new call starts. */
            p->unbacked += p->nheld - p->nspare + p->fb_units;
            p->nheld = 0;
            p->nspare = 0;
            p->fb_units = 0;
        }
        c->connected = true;
        atomic_store(&c->coordinated, true);
        pthread_cond_broadcast(&c->coord_cv);
    }
    pthread_mutex_unlock(&c->coord_mu);
    ev_db_free(old);
    ev_db_free(fresh);
}

static void *watch_main(void *arg)
{
    ev_cluster_t *c = arg;
    int64_t next_beat = INT64_MIN;

    while (!atomic_load(&c->stop)) {
        if (ev_db_ensure(c->watch) != 0) {
            ev_clock_sleep_us(c->clock, (int64_t)EV_MIN(c->opts.heartbeat_ms, 500) * 1000);
            continue;
        }
        bool coordinated = atomic_load(&c->coordinated);
        if (!coordinated)
            coord_reconnect(c);
        if (ev_clock_now_us(c->clock) >= next_beat || !coordinated) {
            heartbeat(c);
            if (replicas_alive(c) > 1)
                slots_give_back_spares(c);
            next_beat = ev_clock_now_us(c->clock) + (int64_t)c->opts.heartbeat_ms * 1000;
            refresh_state(c);
        }
        int64_t left_ms = EV_MAX(1, (next_beat - ev_clock_now_us(c->clock)) / 1000);
        share_learned(c);
        int n = ev_db_wait_notify(c->watch, (int)EV_MIN(left_ms, 200));
        if (n > 0)
            refresh_state(c);
    }
    return NULL;
}

/* ---------------------------------------------------------------- lifecycle */

int ev_cluster_new(ev_cluster_t **out, const ev_cluster_options_t *o, char *err, size_t errlen)
{
    ev_cluster_t *c = NULL;
    int rc = 0;

    *out = NULL;
    if (o == NULL || o->database_url == NULL || o->replica_id == NULL || o->heartbeat_ms < 50 ||
        o->expire_s < 1 || o->keepalive_s < 1 || o->slot_poll_ms < 1) {
        ev_set_error(err, errlen, "invalid cluster options");
        return EV_EINVAL;
    }
    c = ev_calloc(1, sizeof(*c));
    c->url = ev_strdup(o->database_url);
    c->id = ev_strdup(o->replica_id);
    c->opts = *o;
    c->clock = o->clock ? o->clock : ev_clock_system();
    EV_ASSERT(pthread_mutex_init(&c->coord_mu, NULL) == 0);
    pthread_condattr_t attr;
    EV_ASSERT(pthread_condattr_init(&attr) == 0);
    EV_ASSERT(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0);
    EV_ASSERT(pthread_cond_init(&c->coord_cv, &attr) == 0);
    pthread_condattr_destroy(&attr);
    atomic_init(&c->stop, false);
    atomic_init(&c->alive, 1);
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        c->p[i].id = (ev_provider_id_t)i;
        c->p[i].c = c;
        c->p[i].applied_gen = UINT64_MAX;
    }
    if ((rc = ev_db_connect(&c->coord, c->url, err, errlen)) < 0 ||
        (rc = ev_db_connect(&c->watch, c->url, err, errlen)) < 0)
        goto out;
    if ((rc = heartbeat(c)) < 0 || (rc = coord_setup(c, c->coord)) < 0 ||
        (rc = ev_db_listen(c->watch, EV_CLUSTER_STATE_CHANNEL)) < 0) {
        ev_set_error(err, errlen, "cannot register in the cluster: %s", ev_db_error(c->watch));
        goto out;
    }
    c->connected = true;
    atomic_init(&c->coordinated, true);
out:
    if (rc < 0) {
        ev_cluster_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int ev_cluster_attach(ev_cluster_t *c, ev_provider_id_t id, const ev_cluster_provider_t *prov)
{
    if (id < 0 || id >= EV_PROVIDER_COUNT || prov == NULL || prov->limiter == NULL ||
        prov->sem == NULL || prov->breaker == NULL || prov->burst < 1 || prov->max_concurrent < 1 ||
        prov->max_concurrent > MAX_SLOTS)
        return EV_EINVAL;
    prov_t *p = &c->p[id];
    p->cfg = *prov;
    atomic_store(&p->rate_per_min, prov->ceiling_per_min);
    int rc = ev_cluster_rate_configure(c->watch, id, prov->ceiling_per_min, prov->burst,
                                       prov->rpd_limit);
    if (rc < 0)
        return rc;
    /* No rate limit and no daily cap: nothing to ask the database per call. */
    if (prov->ceiling_per_min > 0 || prov->rpd_limit > 0) {
        ev_limiter_remote_t lr = {
            .reserve = rate_reserve, .paused = rate_paused, .rate_changed = rate_learned, .ctx = p};
        ev_limiter_set_remote(prov->limiter, &lr);
    } else {
        ev_limiter_remote_t lr = {.reserve = NULL, .paused = rate_paused, .ctx = p};
        ev_limiter_set_remote(prov->limiter, &lr);
    }
    ev_semaphore_remote_t sr = {.acquire = slot_acquire, .release = slot_release, .ctx = p};
    ev_semaphore_set_remote(prov->sem, &sr);
    ev_breaker_hooks_t bh = {.claim_probe = breaker_claim, .changed = breaker_changed, .ctx = p};
    ev_breaker_set_hooks(prov->breaker, &bh);
    p->attached = true;
    return 0;
}

void ev_cluster_subscribe(ev_cluster_t *c, ev_cluster_state_fn fn, void *ctx)
{
    c->sub_fn = fn;
    c->sub_ctx = ctx;
}

int ev_cluster_start(ev_cluster_t *c)
{
    /* The state in force before the first call, not a second later. */
    refresh_state(c);
    return ev_thread_create(&c->thread, "ev-cluster", watch_main, c);
}

void ev_cluster_free(ev_cluster_t *c)
{
    if (c == NULL)
        return;
    atomic_store(&c->stop, true);
    ev_thread_join(&c->thread, NULL);
    for (int i = 0; i < EV_PROVIDER_COUNT; i++) {
        if (!c->p[i].attached)
            continue;
        ev_limiter_set_remote(c->p[i].cfg.limiter, NULL);
        ev_semaphore_set_remote(c->p[i].cfg.sem, NULL);
        ev_breaker_set_hooks(c->p[i].cfg.breaker, NULL);
    }
    if (c->watch != NULL) {
        const char *params[] = {c->id};
        (void)ev_db_exec(c->watch, NULL, "DELETE FROM ev_cluster_replicas WHERE id = $1", 1,
                         params);
    }
    ev_db_free(c->watch);
    ev_db_free(c->coord);
    pthread_cond_destroy(&c->coord_cv);
    pthread_mutex_destroy(&c->coord_mu);
    free(c->url);
    free(c->id);
    free(c);
}

const char *ev_cluster_scope(ev_cluster_t *c, ev_provider_id_t p)
{
    if (c == NULL || p < 0 || p >= EV_PROVIDER_COUNT || !c->p[p].attached)
        return "process";
    return atomic_load_explicit(&c->coordinated, memory_order_relaxed) ? "cluster" : "share";
}

void ev_cluster_stats(ev_cluster_t *c, ev_cluster_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->replica_id = c->id;
    out->replicas_alive = replicas_alive(c);
    out->coordinated = atomic_load_explicit(&c->coordinated, memory_order_relaxed);
    out->round_trips = atomic_load_explicit(&c->round_trips, memory_order_relaxed);
    out->round_trip_us = atomic_load_explicit(&c->round_trip_us, memory_order_relaxed);
    out->rate_reservations = atomic_load_explicit(&c->reservations, memory_order_relaxed);
    out->slot_acquisitions = atomic_load_explicit(&c->acquisitions, memory_order_relaxed);
    out->fallback_grants = atomic_load_explicit(&c->fallback_grants, memory_order_relaxed);
    out->state_applied = atomic_load_explicit(&c->applied, memory_order_relaxed);
}

void ev_cluster_stats_probe(struct ev_stats_cluster *io, void *ctx)
{
    ev_cluster_stats_t cs;
    ev_cluster_stats(ctx, &cs);
    io->enabled = true;
    io->replica_id = cs.replica_id;
    io->replicas_alive = cs.replicas_alive;
    io->coordinated = cs.coordinated;
    io->round_trips = cs.round_trips;
    io->round_trip_us = cs.round_trip_us;
    io->rate_reservations = cs.rate_reservations;
    io->slot_acquisitions = cs.slot_acquisitions;
    io->fallback_grants = cs.fallback_grants;
    io->state_applied = cs.state_applied;
}
