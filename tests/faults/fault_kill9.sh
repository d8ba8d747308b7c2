#!/usr/bin/env bash
# fault_kill9.sh - SIGKILL of `serve` in the middle of a batch loses nothing (SPEC §5).
#
# 60 submissions (theme + image: two LLM calls each, the simulator answering in
# ~300 ms) are being validated when the process is killed with SIGKILL, once
# about a third are final and others are being processed. A new `serve --drain`
# then has to rescue the dead process's leases (LEASE_SECONDS=5) and finish
# everything: every submission final and validated, exactly one
# validation_results row per (submission, check), nothing left processing, the
# rescued rows marked as such, and no more provider calls than the interrupted
# ones could explain.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=60
ft_pg_start
ft_sim_start --latency-ms 300 --jitter-ms 100
export DEFAULT_MAX_WORKERS=6 GEMINI_MAX_CONCURRENT=4

EVENT=$(ft_event) || ft_fatal "event add failed"
ft_insert "$EVENT" "$N" image
ft_log "inserted $N submissions (theme + image checks)"

ft_serve_start first
# Kill once about a third are final. Poll finely so that the kill really lands mid-run.
third=$((N / 3))
kill_ready() { [ "$(ft_final_count)" -ge "$third" ]; }
ft_poll 60 kill_ready || ft_fatal "fewer than $third submissions final within 60 s"
kill -KILL "$SERVE_PID"
ft_wait_exit "$SERVE_PID" 10
final_at_kill=$(ft_final_count)
processing_at_kill=$(ft_count "status = 'processing'")
ft_log "killed serve (pid $SERVE_PID) with $final_at_kill final, $processing_at_kill processing"
ft_check "the kill landed mid-run: submissions were processing ($processing_at_kill) and not all final ($final_at_kill < $N)" \
    test "$processing_at_kill" -gt 0 -a "$final_at_kill" -lt "$N"
# The dead process's claims stay as they were until their lease expires.
sql "CREATE TABLE fault_orphans AS SELECT id FROM submissions WHERE status = 'processing'" >/dev/null

ft_serve_start second --drain
ft_wait_exit "$SERVE_PID" 90
ft_check "serve --drain after the kill exits 0 (exit status: $FT_EXIT_RC)" test "$FT_EXIT_RC" = 0

ft_assert_all_final
ft_assert_all_validated "$N"
ft_assert_results_complete
errors=$(sql "SELECT count(*) FROM validation_results
              WHERE verdict <> CASE check_name WHEN 'pdf' THEN 'skipped' ELSE 'pass' END")
ft_check "theme and image passed, pdf skipped (no PDF), no error rows ($errors other)" test "$errors" = 0

# The orphaned claims were rescued through lease expiry, which counts.
unrescued=$(sql "SELECT count(*) FROM submissions s JOIN fault_orphans o USING (id)
                 WHERE s.lease_expiries < 1")
ft_check "each of the $processing_at_kill orphaned claims was rescued by lease expiry (not rescued: $unrescued)" \
    test "$unrescued" = 0
maxatt=$(sql "SELECT coalesce(max(attempts), 0) FROM submissions")
ft_check "no submission needed more than 2 claims (max attempts $maxatt)" test "$maxatt" -le 2
ft_check "the restarted process logged the rescue" \
    ft_log_has "$SERVE_ERR" 'rescu'

# Only checks in flight at the kill may have been asked twice: at most 2 extra
# calls per orphaned submission on top of the 2 per submission.
calls=$(($(sim_counter gemini requests) + $(sim_counter groq requests)))
limit=$((2 * N + 2 * processing_at_kill))
ft_check "provider calls ($calls) <= 2 per submission + 2 per orphan ($limit)" test "$calls" -le "$limit"
