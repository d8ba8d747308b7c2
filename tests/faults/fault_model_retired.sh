#!/usr/bin/env bash
# fault_model_retired.sh - the provider retires the model in use, mid-run.
#
# Gemini serves the first of GEMINI_MODELS; part-way through a batch the
# simulator shuts that model down (404 NOT_FOUND, as Gemini answers for a
# model it retired). The service must set the model aside once for the whole
# process (one log line naming it, /stats models_unavailable 1), go on with
# the next model of the list without falling back to Groq, and lose nothing:
# every submission validated, its results complete, no attempt spent on the
# retirement. At most one failed call per Gemini slot in flight may hit the
# retired model.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=40
FIRST=gemini-3.5-flash-lite
NEXT=gemini-3.5-flash
ft_pg_start
ft_sim_start --latency-ms 100 --jitter-ms 50
export DEFAULT_MAX_WORKERS=6 GEMINI_MAX_CONCURRENT=2 GROQ_MAX_CONCURRENT=2
export GEMINI_MODELS="$FIRST,$NEXT"

EVENT=$(ft_event) || ft_fatal "event add failed"
ft_serve_start serve
ft_check "the preflight found every model at start" \
    ft_log_has "$SERVE_ERR" '"msg":"preflight: every check has a model'
ft_insert "$EVENT" "$N" image
ft_log "inserted $N submissions with an image"
some_validated() { [ "$(ft_count "status = 'validated'")" -ge 8 ]; }
ft_wait 60 "a first part of the batch validated with $FIRST" some_validated
bad_before=$(sim_counter gemini malformed)
sim_set gemini "{\"retired_models\":\"$FIRST\"}"
ft_log "$FIRST retired by the provider"

all_validated() { [ "$(ft_count "status = 'validated'")" -ge "$1" ]; }
ft_wait 90 "all $N submissions validated" all_validated "$N"
ft_assert_all_validated "$N"
ft_assert_results_complete

failed_calls=$(($(sim_counter gemini malformed) - bad_before))
by_next=$(sql "SELECT count(*) FROM validation_results WHERE provider = 'gemini' AND model = '$NEXT'")
by_groq=$(sql "SELECT count(*) FROM validation_results WHERE provider = 'groq'")
attempts=$(sql "SELECT coalesce(max(attempts), 0) FROM submissions")
ft_check "calls to the retired model after its retirement: $failed_calls (1 to $GEMINI_MAX_CONCURRENT)" \
    test "$failed_calls" -ge 1 -a "$failed_calls" -le "$GEMINI_MAX_CONCURRENT"
ft_check "the next model answered the rest ($by_next checks by $NEXT)" test "$by_next" -gt 0
ft_check "no check fell back to Groq ($by_groq)" test "$by_groq" = 0
ft_check "no submission spent a second attempt (max attempts $attempts)" test "$attempts" -le 1
ft_check "/stats counts one model set aside" stats_is providers.gemini.models_unavailable 1
ft_check "/stats: Gemini is not disabled" stats_is providers.gemini.disabled false
set_aside=$(grep -c "gemini model $FIRST is unknown.*set aside" "$SERVE_ERR")
ft_check "one log line sets $FIRST aside, naming $NEXT ($set_aside)" test "$set_aside" = 1
ft_check "that line names the next model" ft_log_has "$SERVE_ERR" "set aside.*using $NEXT"
ft_check "/readyz still answers 200" test "$(http_code "$STATS_URL/readyz")" = 200
ft_serve_sigterm
