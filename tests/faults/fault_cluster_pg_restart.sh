#!/usr/bin/env bash
# fault_cluster_pg_restart.sh - Postgres restarts under three replicas.
#
# Three `serve --drain` share a Gemini quota the simulator enforces (at most
# 20 requests in any 5 s) and a cap of 2 in flight. Mid-run Postgres is
# stopped (every session cut: the coordination sessions and their slots too)
# and started again. While it is away a replica may only use its share
# (limit / replicas alive); when it returns, the calls in flight get their
# slots back before new ones start. Expected: every replica reconnects and
# drains, every submission is final with its check rows exactly once, and
# the simulator never answered 429 nor saw more than 2 in flight: no burst
# when the database came back.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=40
ft_pg_start
ft_sim_start --gemini-rpm 240 --gemini-window-s 5 --groq-rpm 0 --latency-ms 300
export GEMINI_RPM_LIMIT=240 RATE_LIMIT_SAFETY_FACTOR=0.75 GEMINI_MAX_CONCURRENT=2
export DEFAULT_MAX_WORKERS=3 RETRY_MAX_WAIT_MS=60000

EVENT=$(ft_event) || ft_fatal "event add failed"
ft_insert "$EVENT" "$N"
PIDS=()
for r in r1 r2 r3; do
    ft_serve_start "$r" --drain
    PIDS+=("$SERVE_PID")
done
some_final() { [ "$(ft_final_count)" -ge 8 ]; }
ft_poll 90 some_final || ft_fatal "no progress before the outage"
before=$(ft_final_count)
ft_log "stopping Postgres with $before final"
ft_pg_stop || ft_fatal "pg-harness stop failed"
lost_db() { ft_log_has "$FT_DIR/r1.err" '"level":"(warn|error)".*(connect|database|server closed)'; }
ft_wait 30 "replica 1 noticed the outage" lost_db
ft_log "starting Postgres again (same port)"
ft_pg_restart_start || ft_fatal "pg-harness start (restart) failed"

i=1
for p in "${PIDS[@]}"; do
    ft_wait_exit "$p" 150
    ft_check "replica $i drains after the restart and exits 0 (exit status: $FT_EXIT_RC)" \
        test "$FT_EXIT_RC" = 0
    i=$((i + 1))
done
ft_assert_all_final
ft_assert_all_validated "$N"
ft_assert_results_complete
rl=$(sim_counter gemini rate_limited)
ft_check "the simulator answered no 429, before, during or after the outage ($rl)" test "$rl" = 0
mif=$(sim_counter gemini max_in_flight)
ft_check "the simulator never saw more than 2 Gemini requests in flight ($mif)" test "$mif" -le 2
