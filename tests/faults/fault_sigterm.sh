#!/usr/bin/env bash
# fault_sigterm.sh - SIGTERM while submissions are being processed (SPEC §2).
#
# Phase A: every worker is inside a 2 s provider call when SIGTERM arrives. The
# service stops claiming, lets the calls finish within the grace period and
# exits 0 long before it ends: the submissions in flight are validated with
# one attempt, the others are still pending with none spent.
#
# Phase B: a new process finds every provider call hanging (the simulator never
# answers) when SIGTERM arrives. After the grace period (30 s) the calls are
# abandoned and the submissions released: exit 0 shortly after the grace
# period, the in-flight submissions back to `pending` with their attempt given
# back (attempts 0, no lease), and no error verdict recorded for them.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

GRACE_S=30
N=12
ft_pg_start
ft_sim_start --latency-ms 2000
export DEFAULT_MAX_WORKERS=6 GEMINI_MAX_CONCURRENT=6 HTTP_TIMEOUT_MS=120000
EVENT=$(ft_event) || ft_fatal "event add failed"
ft_insert "$EVENT" "$N"

# ---- Phase A: in-flight work finishes within the grace period.
ft_serve_start a
all_in_call() {
    local proc
    proc=$(ft_count "status = 'processing'")
    [ "$proc" -eq "$DEFAULT_MAX_WORKERS" ] && [ "$(sim_counter gemini in_flight)" -eq "$proc" ]
}
ft_wait 60 "phase A: all $DEFAULT_MAX_WORKERS workers are inside a provider call" all_in_call
sql "CREATE TABLE fault_inflight_a AS SELECT id FROM submissions WHERE status = 'processing'" >/dev/null
start=$(date +%s%N)
kill -TERM "$SERVE_PID"
ft_wait_exit "$SERVE_PID" 60
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
ft_check "phase A: exit 0 on SIGTERM (exit status: $FT_EXIT_RC)" test "$FT_EXIT_RC" = 0
ft_check "phase A: exit well within the ${GRACE_S}s grace period (${elapsed_ms} ms)" \
    test "$elapsed_ms" -lt $((GRACE_S * 1000))
unfinished=$(sql "SELECT count(*) FROM submissions s JOIN fault_inflight_a USING (id)
                  WHERE s.status <> 'validated' OR s.attempts <> 1")
ft_check "phase A: every submission in flight at the signal finished, validated with 1 attempt (others: $unfinished)" \
    test "$unfinished" = 0
ft_check "phase A: nothing left processing" test "$(ft_count "status = 'processing'")" = 0
untouched=$(ft_count "status = 'pending' AND attempts = 0 AND lease_owner IS NULL")
validated=$(ft_count "status = 'validated'")
ft_check "phase A: the rest is pending with no attempt spent ($untouched pending + $validated validated = $N)" \
    test $((untouched + validated)) = "$N"
ft_check "phase A: the log says the shutdown was graceful" \
    ft_log_has "$SERVE_ERR" 'received SIGTERM, shutting down gracefully'

# ---- Phase B: in-flight work that cannot finish is released after the grace period.
sim_set gemini '{"fault":"hang"}'
sim_set groq '{"fault":"hang"}'
ft_serve_start b
expect=$((untouched < DEFAULT_MAX_WORKERS ? untouched : DEFAULT_MAX_WORKERS))
all_hung() {
    local proc
    proc=$(ft_count "status = 'processing'")
    [ "$proc" -eq "$expect" ] && [ "$(sim_counter gemini in_flight)" -eq "$proc" ]
}
ft_wait 60 "phase B: $expect workers are stuck in a hanging provider call" all_hung
sql "CREATE TABLE fault_inflight_b AS SELECT id FROM submissions WHERE status = 'processing'" >/dev/null
start=$(date +%s%N)
kill -TERM "$SERVE_PID"
ft_wait_exit "$SERVE_PID" $((GRACE_S + 30))
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
ft_check "phase B: exit 0 on SIGTERM (exit status: $FT_EXIT_RC)" test "$FT_EXIT_RC" = 0
ft_check "phase B: exit after the grace period and within 10 s of its end (${elapsed_ms} ms)" \
    test "$elapsed_ms" -ge $((GRACE_S * 1000 - 1000)) -a "$elapsed_ms" -le $((GRACE_S * 1000 + 10000))
released=$(sql "SELECT count(*) FROM submissions s JOIN fault_inflight_b USING (id)
                WHERE s.status = 'pending' AND s.attempts = 0 AND s.lease_owner IS NULL")
ft_check "phase B: the $expect in-flight submissions were released: pending, attempts 0, no lease ($released)" \
    test "$released" = "$expect"
errors=$(sql "SELECT count(*) FROM validation_results r JOIN fault_inflight_b b ON b.id = r.submission_id
              WHERE r.verdict = 'error'")
ft_check "phase B: no error verdict recorded for the released submissions ($errors)" test "$errors" = 0
ft_check "phase B: nothing left processing" test "$(ft_count "status = 'processing'")" = 0
ft_check "phase B: the log says the in-flight work was released" \
    ft_log_has "$SERVE_ERR" 'grace period over: releasing'
