#!/usr/bin/env bash
# fault_cluster_daily_cap.sh - a daily request cap is counted for the whole cluster.
#
# Two replicas share GEMINI_RPD_LIMIT=5 (each configured with the whole cap).
# Twelve submissions need one Gemini call each: exactly five reach Gemini,
# counted across both replicas on the database; every later reservation of
# either is refused until Gemini's day ends and the rest is judged through
# Groq. Nothing is
# lost, and `status` shows the day's count against the cap.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=12
ft_pg_start
ft_sim_start --latency-ms 100
export GEMINI_RPD_LIMIT=5 DEFAULT_MAX_WORKERS=3

EVENT=$(ft_event) || ft_fatal "event add failed"
ft_serve_start a
ft_serve_start b
ft_insert "$EVENT" "$N"
all_final() { [ "$(ft_final_count)" = "$N" ]; }
ft_wait 90 "the $N submissions are final" all_final
ft_assert_all_validated "$N"
g=$(sim_counter gemini requests)
q=$(sim_counter groq requests)
ft_check "exactly 5 Gemini requests for the two replicas together ($g)" test "$g" = 5
ft_check "the other $((N - 5)) went to Groq ($q)" test "$q" = $((N - 5))
ft_check "'event-validator status' shows the day's count against the cap" \
    ft_log_has <("$EV_BIN" status 2>&1) 'gemini: .*today 5 of 5 requests'
