/*
 * cluster.h - the coordinator that makes every `serve` on one database act
 * as ONE client of each provider (docs/cluster.md).
 *
 * Postgres is the coordinator; nothing else is needed. Each replica owns
 *   - a coordination session (one ev_db_t shared by its workers under a
 *     mutex): rate slots come from ev_rate_reserve() on the database clock,
 *     concurrency slots are session advisory locks (so a replica killed with
 *     kill -9 gives them back as soon as Postgres drops its session; TCP
 *     keepalives bound that to seconds when a whole host vanishes), and
 *     breaker/pause/disable changes are published to ev_provider_state;
 *   - a watch thread with its own session: registers the replica, heartbeats,
 *     expires dead replicas, LISTENs on EV_CLUSTER_STATE_CHANNEL and applies
 *     every change to the local breaker, limiter and router within about a
 *     second (also polled each heartbeat, so a lost NOTIFY is only late),
 *     and reconnects the coordination session after an outage.
 *
 * The coordinator plugs in behind the router's primitives: ev_cluster_attach
 * installs remotes on a provider's limiter and semaphore and hooks on its
 * breaker (limiter.h, semaphore.h, breaker.h), so the router's call path is
 * unchanged.
 *
 * Database trouble: while the coordination session is down, a replica never
 * reverts to the whole limit. Rate slots come from a local grid at the rate
 * divided by the replicas last seen alive; those calls are charged to the
 * shared grid when the session returns (the first reservation then skips
 * that many slots), so the cluster makes up for them. Concurrency falls back
 * to floor(cap / replicas alive) in flight (0: wait). After a reconnect the
 * calls still in flight first get their locks back before a new call starts.
 * A probe for a half-open breaker is local while the database is away.
 *
 * Threads: ev_cluster_new, attach, subscribe, start and free run on the main
 * thread (attach and subscribe before start). The remotes and hooks run on
 * worker threads; ev_cluster_stats and ev_cluster_scope on any thread.
 * Lock order: coord_mu (the coordination session and slot bookkeeping) is
 * taken before nothing else; a primitive's own lock is never held while the
 * coordinator is called (the primitives call their hooks without locks).
 */
#ifndef EV_CLUSTER_H
#define EV_CLUSTER_H

#include "ev/breaker.h"
#include "ev/clock.h"
#include "ev/cluster_state.h"
#include "ev/config.h"
#include "ev/limiter.h"
#include "ev/semaphore.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ev_cluster ev_cluster_t;

typedef struct ev_cluster_options {
    const char *database_url; /* required; copied */
    const char *replica_id;   /* required; copied: the pool's lease owner id */
    int heartbeat_ms;         /* registry heartbeat and state poll (>= 50) */
    int expire_s;             /* a replica silent this long is dead (>= 1) */
    int keepalive_s;          /* server-side TCP keepalive idle of the coordination session */
    int slot_poll_ms;         /* a waiter for a concurrency slot retries this often (>= 1) */
    const ev_clock_t *clock;  /* NULL: the system clock */
} ev_cluster_options_t;

#define EV_CLUSTER_OPTIONS_INIT                                                                    \
    {                                                                                              \
        .database_url = NULL, .replica_id = NULL, .heartbeat_ms = 1000, .expire_s = 10,            \
        .keepalive_s = 5, .slot_poll_ms = 20, .clock = NULL                                        \
    }

/* What the coordinator needs of one provider (borrowed; must outlive it). */
typedef struct ev_cluster_provider {
    ev_limiter_t *limiter;
    ev_semaphore_t *sem;
    ev_breaker_t *breaker;
    double ceiling_per_min; /* rpm x safety factor; 0 = no rate limit */
    int burst;              /* >= 1 */
    int64_t rpd_limit;      /* daily request cap, 0 = none */
    int max_concurrent;     /* >= 1 */
    int probe_timeout_s;    /* a half-open probe claim lapses after this */
    /* Applies a cluster-wide disable (another replica met an invalid key or a
     * retired model). Called on the watch thread, never with a lock held. */
    void (*disable)(void *ctx, const char *reason);
    void *ctx;
} ev_cluster_provider_t;

/*
 * Connects both sessions and registers the replica. Returns 0 and *out, or
 * EV_EINVAL (bad options), EV_EDBCONN / EV_EDB with one line in err (never a
 * password) and *out NULL. Free with ev_cluster_free.
 */
int ev_cluster_new(ev_cluster_t **out, const ev_cluster_options_t *opts, char *err, size_t errlen);

/* Writes p's ceiling, burst and daily cap to the shared rate row and plugs
 * the coordinator into p's primitives. Before ev_cluster_start. Returns 0,
 * EV_EINVAL, or the database error. */
int ev_cluster_attach(ev_cluster_t *c, ev_provider_id_t p, const ev_cluster_provider_t *prov);

/* Called on the watch thread after each state change it applied (and once
 * per provider at start). Before ev_cluster_start; one subscriber. */
typedef void (*ev_cluster_state_fn)(void *ctx, const ev_cluster_provider_state_t *st);
void ev_cluster_subscribe(ev_cluster_t *c, ev_cluster_state_fn fn, void *ctx);

/* Starts the watch thread. Returns 0 or the error of ev_thread_create. */
int ev_cluster_start(ev_cluster_t *c);

/* Stops the watch thread, leaves the registry, closes the sessions (which
 * releases any slot still held). Accepts NULL. After the pool has stopped. */
void ev_cluster_free(ev_cluster_t *c);

/* This replica met an invalid key or a retired model on p: every replica
 * stops using p. Worker thread. */
void ev_cluster_report_disabled(ev_cluster_t *c, ev_provider_id_t p, const char *reason);

/* "cluster" while coordinated, "share" while falling back to this replica's
 * share during database trouble, "process" for a provider not attached. */
const char *ev_cluster_scope(ev_cluster_t *c, ev_provider_id_t p);

typedef struct ev_cluster_stats {
    const char *replica_id; /* owned by the coordinator */
    int replicas_alive;     /* as last counted (this one included) */
    bool coordinated;       /* the coordination session is up */
    uint64_t round_trips;   /* statements sent by the coordinator, both sessions */
    uint64_t round_trip_us; /* their summed time */
    uint64_t rate_reservations;
    uint64_t slot_acquisitions; /* slot locks taken from the database (reuse not counted) */
    uint64_t fallback_grants;   /* rate slots and units granted from the share */
    uint64_t state_applied;     /* shared state changes applied locally */
} ev_cluster_stats_t;

/* Relaxed snapshot. Any thread. */
void ev_cluster_stats(ev_cluster_t *c, ev_cluster_stats_t *out);

/* An ev_stats_cluster_fn (stats.h) reporting this coordinator; ctx is the
 * ev_cluster_t. Register with ev_stats_set_cluster_probe. */
struct ev_stats_cluster;
void ev_cluster_stats_probe(struct ev_stats_cluster *io, void *ctx);

#endif
