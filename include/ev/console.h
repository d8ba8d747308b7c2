/*
 * console.h - the operator's controls: requeue, cancel and the other
 * cluster-wide actions, each recorded in `control_actions`.
 *
 * Every action runs in one transaction together with its record, so the
 * table says exactly what was done, by whom and with what result; the
 * command then reports the same thing back (one human-readable text,
 * several lines). Actions take effect on every replica because they act on
 * rows every replica reads: submissions, or the shared provider state.
 *
 * Each function opens its own database session, runs on the calling thread
 * and keeps no state; on failure it returns a negative EV_E* code with one
 * line in `err`. The report (*report, freed by the caller with free()) is set
 * on success only.
 */
#ifndef EV_CONSOLE_H
#define EV_CONSOLE_H

#include "ev/config.h"
#include "ev/db.h"
#include "ev/queue.h"
#include "ev/stats.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Who performs the actions of this process: "cli:<user>@<host>". Static
 * storage, computed once; not thread-safe on first use (call from main). */
const char *ev_console_cli_actor(void);

/* Records one action in `control_actions` on db (inside the caller's
 * transaction); args and result are JSON texts (NULL: {}). *id (may be NULL)
 * receives the record's id. 0, EV_EDB, EV_EDBCONN. */
int ev_console_record(ev_db_t *db, const char *action, const char *args_json,
                      const char *result_json, const char *actor, int64_t *id);

/*
 * `requeue`: the selected submissions that are not being processed go back
 * to `pending` with attempts reset (see ev_queue_operator_requeue). With
 * dry_run nothing is written or recorded and the report says what would
 * change. Submissions named by id that were left alone are listed with
 * their status.
 */
int ev_console_requeue(const ev_config_t *cfg, const ev_queue_selector_t *sel, bool dry_run,
                       const char *actor, char **report, char *err, size_t errlen);

/* `cancel`: the given submissions that are pending, needs_review or failed
 * become `cancelled`; the others are listed with their status. */
int ev_console_cancel(const ev_config_t *cfg, const int64_t *ids, size_t nids, const char *actor,
                      char **report, char *err, size_t errlen);

/* `spend limit USD|default`: sets (usd >= 0; 0 = no limit) or clears
 * (usd < 0: back to DAILY_SPEND_LIMIT_USD) the daily spend limit of the
 * whole cluster; every replica applies it within its refresh interval. */
int ev_console_spend_limit(const ev_config_t *cfg, double usd, const char *actor, char **report,
                           char *err, size_t errlen);

/* `event budget ID USD|none`: sets (usd >= 0) or removes (usd < 0) an
 * event's spending budget. EV_ENOTFOUND for an unknown event. */
int ev_console_event_budget(const ev_config_t *cfg, int64_t event_id, double usd, const char *actor,
                            char **report, char *err, size_t errlen);

/* Pause reasons that hold calls (spend.h): an operator's pause and the
 * emergency stop. A pause a replica sets after a 429 is not a hold. */
#define EV_CONSOLE_PAUSE_PREFIX "operator: "
#define EV_CONSOLE_EMERGENCY_REASON "emergency stop"

/* `provider pause NAME [--for SECONDS]` (seconds <= 0: until resumed) and
 * `provider resume NAME`, through the cluster's shared provider state: every
 * replica stops calling NAME within about a second; its work falls back to
 * the other providers or waits as pending. EV_EINVAL for an unknown name. */
int ev_console_provider_pause(ev_db_t *db, const char *name, bool pause, double seconds,
                              const char *actor, char **report, char *err, size_t errlen);

/* `breaker reset NAME`: closes NAME's breaker on every replica. */
int ev_console_breaker_reset(ev_db_t *db, const char *name, const char *actor, char **report,
                             char *err, size_t errlen);

/* `emergency on|off`: every provider paused (on) until `emergency off`, which
 * resumes the providers the emergency paused (an operator's own pause
 * stays). Local checks go on; work needing a provider waits as pending. */
int ev_console_emergency(ev_db_t *db, bool on, const char *actor, char **report, char *err,
                         size_t errlen);

/* Appends the spend part of `event-validator status` to b: the provider day,
 * the daily limit in force (config_limit_usd unless `spend limit` set one),
 * each provider's spend today and in total, the held providers, and the ten
 * events that cost most with their budgets. 0 or the database error. */
int ev_console_spend_report(ev_db_t *db, double config_limit_usd, ev_stats_buf_t *b);

/* The same as one JSON object for `status --json`: {day, daily_limit_usd,
 * providers: {name: {today_usd, total_usd, calls}}, events: [{id, name,
 * today_usd, total_usd, budget_usd}] (the ten costliest)}. *out is the
 * caller's (json_object_put). */
int ev_console_spend_json(ev_db_t *db, double config_limit_usd, struct json_object **out);

/* Runs one of the *_db controls above on a session of its own. */
typedef int (*ev_console_db_fn)(ev_db_t *db, void *arg, char **report, char *err, size_t errlen);
int ev_console_with_db(const ev_config_t *cfg, ev_console_db_fn fn, void *arg, char **report,
                       char *err, size_t errlen);

/* The same on an open session (the dashboard uses its own). */
int ev_console_requeue_db(ev_db_t *db, const ev_queue_selector_t *sel, bool dry_run,
                          const char *actor, char **report, char *err, size_t errlen);
int ev_console_cancel_db(ev_db_t *db, const int64_t *ids, size_t nids, const char *actor,
                         char **report, char *err, size_t errlen);

#endif
