/*
 * budget.h - per-submission API call budget and call history (SPEC §3
 * MAX_API_CALLS_PER_SUBMISSION).
 *
 * Every HTTP attempt to any provider for one submission - first tries,
 * retries and fallbacks alike - first takes one unit with ev_budget_take();
 * when the limit is used up the call is not made (EV_EBUDGET) and the check
 * ends with an error verdict instead of overspending. Each attempt is then
 * written to the history (check, provider, outcome, HTTP status, latency),
 * which the pipeline turns into the result record with
 * ev_budget_history_json().
 *
 * One budget per submission, normally used by the one worker thread that
 * owns the submission; all functions are nevertheless thread-safe (the
 * checks of a submission may one day run in parallel). Never logs; never
 * calls the clock with its lock held.
 */
#ifndef EV_BUDGET_H
#define EV_BUDGET_H

#include "ev/clock.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;

typedef struct ev_budget ev_budget_t;

/* History entries kept per submission; records beyond it are counted in
 * ev_budget_history_dropped() but not stored (the limit is far below it). */
#define EV_BUDGET_MAX_HISTORY 256

/*
 * Creates a budget of `limit` calls (>= 0; 0 refuses every call). `clock`
 * (must outlive the budget) timestamps history entries. Returns 0 and sets
 * *out, or EV_EINVAL (*out NULL) for a negative limit or a NULL clock.
 * Free with ev_budget_free.
 */
int ev_budget_new(ev_budget_t **out, int limit, const ev_clock_t *clock);

/* Frees the budget and its history; accepts NULL. */
void ev_budget_free(ev_budget_t *b);

/* Starts a new submission: used calls, refusals and history are cleared;
 * the limit is kept. */
void ev_budget_reset(ev_budget_t *b);

/*
 * Takes one call before an HTTP attempt: 0, or EV_EBUDGET when `limit`
 * calls were already taken (nothing is taken then, and the refusal is
 * counted). Exactly `limit` takes succeed per submission, however many
 * threads race.
 */
int ev_budget_take(ev_budget_t *b);

/* Returns one unit taken by ev_budget_take whose request was never sent
 * (refused locally before any HTTP), so only real attempts count. Giving
 * back more than was taken is a bug (asserted). */
void ev_budget_give_back(ev_budget_t *b);

/* The event of the submission being judged (0: unknown), so that what its
 * calls cost is counted against the event; kept until the next set. */
void ev_budget_set_event(ev_budget_t *b, int64_t event_id);
int64_t ev_budget_event(ev_budget_t *b);

/* Calls taken so far (<= limit). */
int ev_budget_used(ev_budget_t *b);
/* The limit given to ev_budget_new (immutable). */
int ev_budget_limit(const ev_budget_t *b);
/* limit - used. */
int ev_budget_remaining(ev_budget_t *b);
/* Takes refused since the last reset; > 0 means the budget ran out while
 * calls were still wanted (the stats' "budget.exhausted"). */
int ev_budget_refusals(ev_budget_t *b);

/*
 * Appends one attempt to the history. `check` ("theme", "pdf", "image"),
 * `provider` ("gemini", "groq") and `outcome` (a short word such as "ok",
 * "rate_limited", "server_error", "timeout", "bad_answer") are copied.
 * `http_status` is the HTTP status, or 0 when no response arrived (written
 * as JSON null). `latency_ms` >= 0. Returns 0, EV_EINVAL for a NULL string,
 * or EV_ELIMIT when EV_BUDGET_MAX_HISTORY entries are already stored (the
 * entry is dropped and counted).
 */
int ev_budget_record(ev_budget_t *b, const char *check, const char *provider, const char *outcome,
                     int http_status, int64_t latency_ms);

/* Entries stored for `check` (NULL: all checks) - the check's http_attempts. */
int ev_budget_history_count(ev_budget_t *b, const char *check);

/* Entries dropped because the history was full. */
int ev_budget_history_dropped(ev_budget_t *b);

/*
 * A new json-c array of the entries for `check` (NULL: every entry, each
 * then also carrying "check"), in recording order. Each element:
 *   {"seq": n, "provider": "...", "outcome": "...", "http_status": 429|null,
 *    "latency_ms": n, "t_ms": ms since the budget was created or reset}
 * where seq is the entry's 1-based position among all the submission's
 * entries. The caller owns the returned reference (json_object_put, or hand
 * it to json_object_object_add). Never NULL (aborts on out-of-memory).
 */
struct json_object *ev_budget_history_json(ev_budget_t *b, const char *check);

#endif
