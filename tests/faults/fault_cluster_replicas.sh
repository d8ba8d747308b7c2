#!/usr/bin/env bash
# fault_cluster_replicas.sh - three `serve --drain` on one database act as ONE client.
#
# Every replica gets the whole quota, as a copied configuration does
# (GEMINI_RPM_LIMIT=120, a cap of 1 in flight). The simulator enforces the
# quota on its own clock (at most 10 requests in any 5 s) and counts what it
# sees, so its counters are the judge: no 429 (the cluster never exceeded the
# rate in any window), never more than 1 request in flight, and no check fell
# back to Groq. In the middle, one replica is killed with SIGKILL while it
# holds the concurrency slot: Postgres drops its coordination session and the
# slot is free again within seconds (the others go on), its claimed work is
# rescued by lease expiry, and nothing is lost or judged twice. The request the killed
# replica had in flight stays at the simulator until it ends although its slot is free, so
# concurrency is judged before the kill and again from the first idle moment after it.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=24
ft_pg_start
ft_sim_start --gemini-rpm 120 --gemini-window-s 5 --groq-rpm 0 --latency-ms 800
export GEMINI_RPM_LIMIT=120 RATE_LIMIT_SAFETY_FACTOR=0.75 GEMINI_MAX_CONCURRENT=1
export DEFAULT_MAX_WORKERS=4 RETRY_MAX_WAIT_MS=60000

EVENT=$(ft_event) || ft_fatal "event add failed"
ft_insert "$EVENT" "$N"
ft_log "inserted $N submissions (one Gemini call each)"

ft_serve_start r1 --drain
P1=$SERVE_PID
ft_serve_start r2 --drain
P2=$SERVE_PID
ft_serve_start r3 --drain
P3=$SERVE_PID
S3=$STATS_URL

registered() { [ "$(sql "SELECT count(*) FROM ev_cluster_replicas")" = 3 ]; }
ft_wait 30 "three replicas registered" registered
ft_check "'event-validator status' lists 3 replicas alive" \
    ft_log_has <("$EV_BIN" status 2>&1) '^replicas: 3 alive'
ft_check "/stats of a replica has cluster.replicas_alive = 3" \
    test "$(jget "$(http_get "$S3/stats")" cluster.replicas_alive)" = 3
ft_check "/stats says Gemini's limits are cluster-wide" \
    test "$(jget "$(http_get "$S3/stats")" providers.gemini.limits_scope)" = cluster

# SIGKILL replica 3 while its coordination session holds the Gemini slot.
C3=$(sql "SELECT coord_pid FROM ev_cluster_replicas WHERE split_part(id, ':', 2) = '$P3'")
[ -n "$C3" ] || ft_fatal "replica 3 has no coordination session in the registry"
holds() { [ "$(sql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $C3")" -gt 0 ]; }
ft_poll 60 holds || ft_fatal "replica 3 never held the concurrency slot"
mif=$(sim_counter gemini max_in_flight)
ft_check "before the kill the simulator never saw more than 1 Gemini request in flight ($mif)" \
    test "$mif" -le 1
kill -KILL "$P3"
ft_wait_exit "$P3" 10
ft_log "killed replica 3 (pid $P3) while its session $C3 held the slot"
freed() { [ "$(sql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $C3")" = 0 ]; }
ft_wait 15 "the killed replica's slot is free again (Postgres dropped its session)" freed
# A request the killed replica had sent is still at the provider until it ends, while its
# slot is already free: it is no longer ours. Judge concurrency again from a moment when
# nothing is in flight (so that orphan is over).
idle() { [ "$(sim_counter gemini in_flight)" = 0 ]; }
ft_wait 30 "a moment with no Gemini request in flight" idle
curl -s -m 10 -X POST "$SIM_URL/control/reset_peak" >/dev/null || ft_fatal "provider-sim refused reset_peak"

ft_wait_exit "$P1" 150
ft_check "replica 1 drains and exits 0 (exit status: $FT_EXIT_RC)" test "$FT_EXIT_RC" = 0
ft_wait_exit "$P2" 150
ft_check "replica 2 drains and exits 0 (exit status: $FT_EXIT_RC)" test "$FT_EXIT_RC" = 0

ft_assert_all_final
ft_assert_all_validated "$N"
ft_assert_results_complete
rl=$(sim_counter gemini rate_limited)
ft_check "the simulator answered no 429: the cluster kept the quota in every window ($rl)" test "$rl" = 0
mif=$(sim_counter gemini max_in_flight)
ft_check "after the kill the simulator never saw more than 1 Gemini request in flight ($mif)" \
    test "$mif" -le 1
gq=$(sim_counter groq requests)
ft_check "no check fell back to Groq ($gq Groq requests)" test "$gq" = 0
left=$(sql "SELECT count(*) FROM ev_cluster_replicas")
ft_check "the replicas that exited left the registry; only the killed one remains until it expires ($left)" \
    test "$left" = 1
