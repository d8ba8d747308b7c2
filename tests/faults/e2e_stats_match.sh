#!/usr/bin/env bash
# e2e_stats_match.sh - what /stats and /metrics report matches what happened.
#
# An operator trusts these numbers: after a run, the counters must agree with
# the rows in the database and with what the provider (the simulator) saw.
# 24 submissions with an image each (theme and image checks) go through a
# running `serve`; then /stats is compared field by field with SQL and with the
# simulator's own counters, and /metrics passes `promtool check metrics` when
# promtool is installed (it is required when CI is set).
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=24
ft_pg_start
ft_sim_start --latency-ms 30 --jitter-ms 20
export DEFAULT_MAX_WORKERS=6
EVENT=$(ft_event) || ft_fatal "event add failed"
ft_serve_start serve
ft_check "/healthz answers 200" test "$(http_code "$STATS_URL/healthz")" = 200
ft_check "/readyz answers 200 with the database up" test "$(http_code "$STATS_URL/readyz")" = 200
ft_check "an unknown path is 404" test "$(http_code "$STATS_URL/nope")" = 404
ft_check "POST /stats is 405" \
    test "$(curl -s -o /dev/null -m 10 -X POST -w '%{http_code}' "$STATS_URL/stats")" = 405

ft_insert "$EVENT" "$N" image
all_validated() { [ "$(ft_count "status = 'validated'")" = "$1" ]; }
ft_wait 90 "all $N submissions validated" all_validated "$N"
ft_wait 30 "/stats queue counts caught up (validated = $N)" stats_is queue.validated "$N"

S=$(stats_json)
get() { jget "$S" "$1"; }
db_calls=$(sql "SELECT coalesce(sum(http_attempts), 0) FROM validation_results")
db_gemini=$(sql "SELECT count(*) FROM validation_results WHERE provider = 'gemini' AND NOT cached")
sim_req=$(sim_counter gemini requests)
ft_check "submissions.processed = $N (got $(get submissions.processed))" test "$(get submissions.processed)" = "$N"
ft_check "queue.pending = 0 and processing = 0" \
    test "$(get queue.pending)" = 0 -a "$(get queue.processing)" = 0
ft_check "providers.gemini.calls = HTTP attempts in the database = requests the sim saw ($(get providers.gemini.calls) / $db_calls / $sim_req)" \
    test "$(get providers.gemini.calls)" = "$db_calls" -a "$db_calls" = "$sim_req"
ft_check "providers.gemini.successes = results answered by Gemini ($(get providers.gemini.successes) / $db_gemini)" \
    test "$(get providers.gemini.successes)" = "$db_gemini"
ft_check "providers.gemini.errors = 0 and rate_limited = 0" \
    test "$(get providers.gemini.errors)" = 0 -a "$(get providers.gemini.rate_limited)" = 0
ft_check "workers.configured = 6, busy = 0" \
    test "$(get workers.configured)" = 6 -a "$(get workers.busy)" = 0
ft_check "providers.gemini.breaker is closed, in_flight 0, max_concurrent 2" \
    test "$(get providers.gemini.breaker)" = closed -a "$(get providers.gemini.in_flight)" = 0 \
    -a "$(get providers.gemini.max_concurrent)" = 2
ft_check "budget.limit = 5, exhausted = 0" test "$(get budget.limit)" = 5 -a "$(get budget.exhausted)" = 0
avg=$(get budget.calls_per_submission_avg)
ft_check "budget.calls_per_submission_avg = $db_calls / $N (got $avg)" \
    awk -v a="$avg" -v c="$db_calls" -v n="$N" 'BEGIN { d = a - c / n; exit !(d < 0.01 && d > -0.01) }'
ft_check "providers.gemini.latency_ms.p50 is a positive number ($(get providers.gemini.latency_ms.p50))" \
    awk -v p="$(get providers.gemini.latency_ms.p50)" 'BEGIN { exit !(p > 0) }'

http_get "$STATS_URL/metrics" >"$FT_DIR/metrics.txt"
ft_check "/metrics: submissions processed by status sum to $N" \
    awk -v n="$N" '/^event_validator_submissions_processed_total/ { s += $NF } END { exit !(s == n) }' "$FT_DIR/metrics.txt"
ft_check "/metrics: Gemini calls = $db_calls" \
    grep -Eq "^event_validator_provider_calls_total\{provider=\"gemini\"\} $db_calls\$" "$FT_DIR/metrics.txt"
if command -v promtool >/dev/null 2>&1; then
    ft_check "promtool check metrics accepts /metrics" sh -c "promtool check metrics <'$FT_DIR/metrics.txt'"
elif [ -n "${CI:-}" ]; then
    ft_fail "promtool is not installed (apt-get install prometheus)"
fi
ft_serve_sigterm
