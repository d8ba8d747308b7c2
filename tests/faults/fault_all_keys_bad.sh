#!/usr/bin/env bash
# fault_all_keys_bad.sh - both API keys are wrong.
#
# Each provider is disabled after its first refused call. With no usable
# provider left nothing can be judged, so `serve` must stop by itself within a
# few seconds, exit 1 with one clear line naming the cause, and leave the
# backlog pending (not burnt into needs_review by attempts that could never
# succeed). Neither key may appear in the output.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=30
GEM_WRONG="wrong-gemini-key-$RANDOM$RANDOM"
GROQ_WRONG="wrong-groq-key-$RANDOM$RANDOM"
export GEMINI_API_KEY=$GEM_WRONG GROQ_API_KEY=$GROQ_WRONG MAX_ATTEMPTS=3
ft_pg_start
ft_sim_start --latency-ms 50 --gemini-key "right-gemini-$RANDOM" --groq-key "right-groq-$RANDOM"

EVENT=$(ft_event) || ft_fatal "event add failed"
ft_insert "$EVENT" "$N"
ft_serve_start serve
ft_log "both keys wrong; $N submissions queued"

ft_wait_exit "$SERVE_PID" 60
ft_check "serve stopped by itself with exit status 1 (got $FT_EXIT_RC)" test "$FT_EXIT_RC" = 1
ft_check "its last stderr line names the cause" \
    grep -q "every LLM provider was disabled by a configuration error" "$SERVE_ERR"
review=$(ft_count "status = 'needs_review'")
pending=$(ft_count "status = 'pending'")
ft_check "no submission was burnt into needs_review ($review)" test "$review" = 0
ft_check "the backlog is still pending, to be judged once the keys are fixed ($pending of $N)" \
    test "$pending" = "$N"
ft_check "no key appears in the service's output" \
    sh -c "! grep -qF -e '$GEM_WRONG' -e '$GROQ_WRONG' '$SERVE_ERR' '$SERVE_OUT'"
