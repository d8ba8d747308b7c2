#!/usr/bin/env bash
# fault_hostile_files.sh - decompression bombs among honest submissions.
#
# 6 PDFs built to exhaust a parser (FlateDecode text streams inflating to
# hundreds of MB, streams of zeros inflating to GB, one string literal of a
# GB) and 20 honest PDF submissions are queued together for 6 workers, so at
# first every worker holds a bomb. Each bomb must fail locally within the
# parse limits, with the reason and no API call; the honest ones are judged;
# nothing stays `processing`; the service itself stays small (the parsing
# happens in its sandbox) and /metrics counts the kills.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

GEN=$EV_BUILD_DIR/tests/hostile-gen
[ -x "$GEN" ] || ft_fatal "hostile-gen not built ($GEN)"
ft_pg_start
ft_sim_start
export DEFAULT_MAX_WORKERS=6 GEMINI_MAX_CONCURRENT=6 PARSE_CPU_MS=1000 PARSE_MEMORY_MB=256
# A generous deadline: the machine running the suite may be busy; the CPU limit decides.
export PARSE_TIMEOUT_MS=30000
EVENT=$(ft_event) || ft_fatal "event add failed"

submit() { # submit TITLE FILE
    "$EV_BIN" submit --event "$EVENT" --title "$1" --pdf "$2" >/dev/null 2>>"$FT_DIR/cli.err" ||
        ft_fatal "submit $1 failed: $(tail -n 1 "$FT_DIR/cli.err")"
}
for kind in text-bomb zero-bomb string-bomb; do
    for i in 1 2; do
        mib=1024
        [ "$kind" = text-bomb ] && mib=400
        "$GEN" "$kind" "$FT_DIR/$kind-$i.pdf" "$mib" ||
            ft_fatal "hostile-gen $kind"
        submit "bomb $kind $i" "$FT_DIR/$kind-$i.pdf"
    done
done
"$GEN" honest "$FT_DIR/honest.pdf" 3 || ft_fatal "hostile-gen honest"
for i in $(seq 1 20); do
    submit "Green roof $RANDOM-$i" "$FT_DIR/honest.pdf"
done
ft_log "queued 6 bombs ($(du -ch "$FT_DIR"/*-bomb-*.pdf | tail -n 1 | cut -f1) on disk) and 20 honest PDFs"

ft_serve_start a
all_final() { [ "$(ft_final_count)" -eq 26 ]; }
ft_wait 180 "all 26 submissions final" all_final

ft_check "nothing pending or processing" test "$(ft_count "status IN ('pending', 'processing')")" = 0
ft_check "the 20 honest submissions are validated" \
    test "$(ft_count "status = 'validated' AND title LIKE 'Green roof%'")" = 20
ft_check "the 6 bombs are rejected" test "$(ft_count "status = 'rejected' AND title LIKE 'bomb%'")" = 6
bad=$(sql "SELECT count(*) FROM submissions s JOIN validation_results r ON r.submission_id = s.id
           WHERE s.title LIKE 'bomb%' AND r.check_name = 'pdf'
             AND NOT (r.verdict = 'fail' AND r.reason LIKE 'PDF needs more than % built to exhaust the validator')")
ft_check "every bomb's pdf check fails with the limit's reason (others: $bad)" test "$bad" = 0
calls=$(sql "SELECT coalesce(sum(r.http_attempts), 0) FROM submissions s
             JOIN validation_results r ON r.submission_id = s.id WHERE s.title LIKE 'bomb%'")
ft_check "no API call for any bomb ($calls)" test "$calls" = 0
honest_calls=$(sql "SELECT coalesce(sum(r.http_attempts), 0) FROM submissions s
                    JOIN validation_results r ON r.submission_id = s.id WHERE s.title LIKE 'Green roof%'")
seen=$(($(sim_counter gemini requests) + $(sim_counter groq requests)))
ft_check "the providers saw only the honest submissions' calls ($seen = $honest_calls)" \
    test "$seen" = "$honest_calls"
kills=$(http_get "$STATS_URL/metrics" | sed -n 's/^event_validator_parse_limit_kills_total \([0-9]*\).*/\1/p')
ft_check "/metrics counts 6 parse-limit kills ($kills)" test "$kills" = 6
hwm=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SERVE_PID/status")
# A sanitizer's shadow memory alone exceeds the bound; the plain build judges memory.
if grep -Eq '^EV_SANITIZE:STRING=.+' "$EV_BUILD_DIR/CMakeCache.txt" 2>/dev/null; then
    ft_log "sanitizer build: peak memory ${hwm} kB not judged"
else
    ft_check "the service's own peak memory stayed small (${hwm} kB < 200 MB)" test "$hwm" -lt 204800
fi
ft_serve_sigterm
