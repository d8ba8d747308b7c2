#!/usr/bin/env bash
# fault_gemini_outage.sh - Gemini is down (503 "overloaded"), then recovers.
#
# With a small breaker (GEMINI_CIRCUIT_BREAKER_MIN_CALLS=3, WINDOW=10 s,
# COOLDOWN=2 s) a first batch meets a Gemini that answers every call with 503:
# /stats must show the Gemini breaker "open", Groq must carry the load (the
# simulator sees Groq requests, the checks are recorded as answered by Groq)
# and every submission must still be validated, while Gemini itself gets only
# a handful of calls. Then the fault is cleared and a second batch arrives: the
# breaker must go half_open (a probe) and then closed, seen both in /stats and
# in the "circuit breaker changed state" JSON log lines, and Gemini answers
# again.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=40
ft_pg_start
ft_sim_start --latency-ms 150 --jitter-ms 50
export DEFAULT_MAX_WORKERS=6 GEMINI_MAX_CONCURRENT=2 GROQ_MAX_CONCURRENT=2
export GEMINI_CIRCUIT_BREAKER_MIN_CALLS=3 GEMINI_CIRCUIT_BREAKER_WINDOW=10
export GEMINI_CIRCUIT_BREAKER_COOLDOWN=2

sim_set gemini '{"fault":"overloaded"}'
EVENT=$(ft_event) || ft_fatal "event add failed"
ft_serve_start serve
ft_check "before any call the Gemini breaker is closed" stats_is providers.gemini.breaker closed

ft_insert "$EVENT" "$N"
outage_start=$(date +%s)
ft_log "Gemini overloaded; inserted $N submissions"
ft_wait 60 "/stats shows the Gemini breaker open during the outage" stats_is providers.gemini.breaker open
all_validated() { [ "$(ft_count "status = 'validated'")" -ge "$1" ]; }
ft_wait 90 "all $N submissions of the outage batch validated" all_validated "$N"
outage_s=$(($(date +%s) - outage_start))

groq_reqs=$(sim_counter groq requests)
groq_ok=$(stats_get providers.groq.successes)
by_groq=$(sql "SELECT count(*) FROM validation_results WHERE check_name = 'theme' AND provider = 'groq'")
gem_reqs=$(sim_counter gemini requests)
gem_ok=$(sim_counter gemini ok)
fallbacks=$(stats_get fallbacks)
ft_check "Groq carried the load: the simulator saw $groq_reqs Groq requests (>= $N)" test "$groq_reqs" -ge "$N"
ft_check "/stats counts Groq successes ($groq_ok >= $N)" test "${groq_ok:-0}" -ge "$N"
ft_check "every theme verdict of the outage batch came from Groq ($by_groq of $N)" test "$by_groq" = "$N"
ft_check "/stats counts fallbacks ($fallbacks > 0)" test "${fallbacks:-0}" -gt 0
# Before the breaker opens, each worker may try Gemini with its retries; after
# that, one probe per cooldown (2 s) at most.
gem_limit=$((DEFAULT_MAX_WORKERS * 3 + outage_s / 2 + 2))
ft_check "the open breaker kept calls off Gemini ($gem_reqs requests in ${outage_s}s, none answered: $gem_ok; <= $gem_limit and < Groq's $groq_reqs)" \
    test "$gem_reqs" -le "$gem_limit" -a "$gem_reqs" -lt "$groq_reqs" -a "$gem_ok" = 0
ft_check "a JSON log line says the Gemini breaker opened" \
    ft_log_has "$SERVE_ERR" '"msg":"circuit breaker changed state".*"breaker_provider":"gemini".*"to":"open"'

# Recovery. Only log lines written from here on count for the transitions below.
mark=$(wc -l <"$SERVE_ERR")
sim_set gemini '{"fault":"none"}'
ft_log "Gemini fault cleared"
# With no traffic the breaker reads half_open once its cooldown has passed.
ft_wait 30 "/stats shows the Gemini breaker half_open after its cooldown" \
    stats_is providers.gemini.breaker half_open
ft_insert "$EVENT" "$N"
ft_log "inserted a second batch of $N"
ft_wait 60 "/stats shows the Gemini breaker closed again" stats_is providers.gemini.breaker closed
ft_wait 90 "all $((2 * N)) submissions validated" all_validated $((2 * N))

tail -n +"$((mark + 1))" "$SERVE_ERR" >"$FT_DIR/recovery.log"
ft_check "a JSON log line says the Gemini breaker went open -> half_open" \
    ft_log_has "$FT_DIR/recovery.log" '"msg":"circuit breaker changed state".*"breaker_provider":"gemini".*"from":"open".*"to":"half_open"'
ft_check "a JSON log line says the Gemini breaker went half_open -> closed" \
    ft_log_has "$FT_DIR/recovery.log" '"msg":"circuit breaker changed state".*"breaker_provider":"gemini".*"from":"half_open".*"to":"closed"'
gem_ok2=$(sim_counter gemini ok)
by_gemini=$(sql "SELECT count(*) FROM validation_results WHERE check_name = 'theme' AND provider = 'gemini'")
ft_check "Gemini answers again after recovery (simulator ok: $gem_ok2, theme verdicts by Gemini: $by_gemini)" \
    test "$gem_ok2" -gt 0 -a "$by_gemini" -gt 0
ft_assert_all_validated $((2 * N))
ft_assert_results_complete

ft_serve_sigterm
