#!/usr/bin/env bash
# fault_pg_restart.sh - Postgres goes away in the middle of a batch and comes back.
#
# `serve --drain` works through 60 submissions (theme + image, ~300 ms per
# call). Once some are final, the script's own cluster is stopped (fast
# shutdown: every session is cut) and, after /readyz has reported it, started
# again on the same port: the restart of pg-harness split in two so that the
# outage can be observed. Expected: /healthz, /stats and /metrics keep
# answering 200 throughout, /readyz is 503 while the database is down and 200
# again after, the service reconnects by itself, and the drain still finishes
# with exit 0, every submission final with its 3 check rows and none left
# processing.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=60
ft_pg_start
ft_sim_start --latency-ms 300 --jitter-ms 100
export DEFAULT_MAX_WORKERS=6 GEMINI_MAX_CONCURRENT=2

EVENT=$(ft_event) || ft_fatal "event add failed"
ft_insert "$EVENT" "$N" image
ft_log "inserted $N submissions (theme + image checks)"

ft_serve_start drain --drain
readyz_up() { test "$(http_code "$STATS_URL/readyz")" = 200; }
readyz_down() { test "$(http_code "$STATS_URL/readyz")" = 503; }
ft_wait 30 "/readyz is 200 while the database is up" readyz_up
some_final() { [ "$(ft_final_count)" -ge 8 ]; }
ft_poll 60 some_final || ft_fatal "no progress before the outage"
before=$(ft_final_count)
ft_log "stopping Postgres with $before final"
ft_pg_stop || ft_fatal "pg-harness stop failed"

ft_wait 30 "/readyz answers 503 while the database is down" readyz_down
ft_check "/healthz stays 200 while the database is down" test "$(http_code "$STATS_URL/healthz")" = 200
# (Not parsed with jget: without jq it would need the database.)
stats_body=$(stats_json)
ft_check "/stats still answers 200 with its JSON while the database is down" \
    test "$(http_code "$STATS_URL/stats")" = 200 -a "${stats_body:0:1}" = "{" -a -z "${stats_body##*\"providers\"*}"
ft_check "/metrics still answers 200 while the database is down" test "$(http_code "$STATS_URL/metrics")" = 200
ft_check "the service is still running during the outage" ft_alive "$SERVE_PID"
# Workers notice: every session was cut, so their next query fails.
ft_wait 30 "the service logged the lost database connection" \
    ft_log_has "$SERVE_ERR" '"level":"(warn|error)".*(connect|database|server closed)'

ft_log "starting Postgres again (same port)"
ft_pg_restart_start || ft_fatal "pg-harness start (restart) failed"
ft_wait 60 "/readyz is 200 again after the restart" readyz_up

ft_wait_exit "$SERVE_PID" 120
ft_check "serve --drain finishes after the outage with exit 0 (exit status: $FT_EXIT_RC)" \
    test "$FT_EXIT_RC" = 0
after=$(ft_final_count)
ft_check "work continued after the restart ($before final before, $after at the end)" \
    test "$after" -gt "$before"
ft_assert_all_final
ft_assert_all_validated "$N"
ft_assert_results_complete
