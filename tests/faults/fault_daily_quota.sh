#!/usr/bin/env bash
# fault_daily_quota.sh - Gemini's daily quota is exhausted (429 ...PerDay...).
#
# The simulator answers every Gemini call with the daily-quota 429 (whose
# RetryInfo misleadingly suggests a short wait). The service must not retry it
# as a per-minute limit: Gemini is cooled down until midnight Pacific (/stats:
# providers.gemini.quota_cooldown true, breaker "open"), Groq takes every
# check and every submission is validated. A second batch later must not touch
# Gemini at all.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=20
ft_pg_start
ft_sim_start --latency-ms 100 --jitter-ms 50
export DEFAULT_MAX_WORKERS=6 GEMINI_MAX_CONCURRENT=2 GROQ_MAX_CONCURRENT=2

sim_set gemini '{"fault":"daily_quota"}'
EVENT=$(ft_event) || ft_fatal "event add failed"
ft_serve_start serve
ft_check "before any call Gemini is not cooling down" stats_is providers.gemini.quota_cooldown false

ft_insert "$EVENT" "$N"
ft_log "Gemini out of daily quota; inserted $N submissions"
ft_wait 60 "/stats shows Gemini in its daily-quota cool-down" stats_is providers.gemini.quota_cooldown true
ft_check "/stats shows the Gemini breaker open during the cool-down" stats_is providers.gemini.breaker open
all_validated() { [ "$(ft_count "status = 'validated'")" -ge "$1" ]; }
ft_wait 60 "all $N submissions validated" all_validated "$N"

gem_reqs=$(sim_counter gemini requests)
gem_429=$(sim_counter gemini rate_limited)
groq_reqs=$(sim_counter groq requests)
by_groq=$(sql "SELECT count(*) FROM validation_results WHERE check_name = 'theme' AND provider = 'groq'")
ft_check "Gemini was asked at most once per worker, never retried ($gem_reqs requests, $gem_429 answered 429; <= $DEFAULT_MAX_WORKERS)" \
    test "$gem_reqs" -ge 1 -a "$gem_reqs" -le "$DEFAULT_MAX_WORKERS"
ft_check "Groq took the checks ($groq_reqs Groq requests >= $N)" test "$groq_reqs" -ge "$N"
ft_check "every theme verdict came from Groq ($by_groq of $N)" test "$by_groq" = "$N"
ft_check "the cool-down is logged" ft_log_has "$SERVE_ERR" '"level":"warn".*gemini daily quota exhausted: cooling down'
retries=$(stats_get providers.gemini.retries)
ft_check "/stats shows no Gemini retries ($retries)" test "${retries:-x}" = 0

# The cool-down lasts until midnight Pacific: a later batch never reaches Gemini.
ft_insert "$EVENT" "$N"
ft_wait 60 "a second batch is validated too" all_validated $((2 * N))
gem_reqs2=$(sim_counter gemini requests)
ft_check "the second batch sent nothing to Gemini ($gem_reqs -> $gem_reqs2 requests)" test "$gem_reqs2" = "$gem_reqs"
ft_check "Gemini is still cooling down" stats_is providers.gemini.quota_cooldown true
ft_assert_all_validated $((2 * N))
ft_assert_results_complete
ft_serve_sigterm
