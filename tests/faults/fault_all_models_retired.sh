#!/usr/bin/env bash
# fault_all_models_retired.sh - every configured model is retired mid-run.
#
# Both providers shut down every model the service is configured with
# (Gemini 404, Groq 400 model_decommissioned). Nothing can be judged any
# more: like with bad keys, `serve` must stop by itself within seconds, exit 1
# with one line naming the cause, release its work and leave the backlog
# pending (never burnt into needs_review or failed).
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=60
export MAX_ATTEMPTS=3 DEFAULT_MAX_WORKERS=4
export GEMINI_MODELS=gemini-3.5-flash-lite GROQ_MODELS=openai/gpt-oss-120b
export GROQ_VISION_MODELS=qwen/qwen3.8-27b
ft_pg_start
ft_sim_start --latency-ms 150 --jitter-ms 50

EVENT=$(ft_event) || ft_fatal "event add failed"
ft_insert "$EVENT" "$N"
ft_serve_start serve
some_validated() { [ "$(ft_count "status = 'validated'")" -ge 4 ]; }
ft_wait 60 "a first part of the batch validated" some_validated
sim_set gemini '{"retired_models":"gemini-3.5-flash-lite"}'
sim_set groq '{"retired_models":"openai/gpt-oss-120b,qwen/qwen3.8-27b"}'
ft_log "every configured model retired"

ft_wait_exit "$SERVE_PID" 60
ft_check "serve stopped by itself with exit status 1 (got $FT_EXIT_RC)" test "$FT_EXIT_RC" = 1
ft_check "it says every provider was disabled" \
    grep -q "every LLM provider was disabled by a configuration error" "$SERVE_ERR"
ft_check "it says why: Gemini has no usable model left" \
    ft_log_has "$SERVE_ERR" '"msg":"gemini disabled for the life of this process: none of its configured models'
ft_check "it says why: Groq has no usable model left" \
    ft_log_has "$SERVE_ERR" '"msg":"groq disabled for the life of this process: none of its configured models'
review=$(ft_count "status IN ('needs_review', 'failed')")
processing=$(ft_count "status = 'processing'")
validated=$(ft_count "status = 'validated'")
pending=$(ft_count "status = 'pending'")
ft_check "no submission burnt into needs_review or failed ($review)" test "$review" = 0
ft_check "no submission left processing: the work was released ($processing)" test "$processing" = 0
ft_check "the rest is pending, to be judged once the models are fixed ($validated validated + $pending pending = $N)" \
    test $((validated + pending)) = "$N"
ft_assert_results_complete
