#!/usr/bin/env bash
# fault_bad_key.sh - the service runs with a wrong GEMINI_API_KEY.
#
# The simulator expects one Gemini key and gets another: it answers 400
# INVALID_ARGUMENT / API_KEY_INVALID, like the real API. The service must
# disable Gemini for the life of the process (/stats: providers.gemini.disabled
# true) after at most one call per worker, validate everything with Groq, and
# never show either key: not in its stdout/stderr, not in /stats, /metrics,
# /healthz or /readyz, not in the database (results, call records, errors), not
# in `show`.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

N=20
RIGHT_KEY="right-gemini-key-$RANDOM$RANDOM"
WRONG_KEY="wrong-gemini-key-$RANDOM$RANDOM"
GROQ_SECRET="groq-secret-key-$RANDOM$RANDOM"
export GEMINI_API_KEY=$WRONG_KEY GROQ_API_KEY=$GROQ_SECRET
ft_pg_start
ft_sim_start --latency-ms 100 --jitter-ms 50 --gemini-key "$RIGHT_KEY" --groq-key "$GROQ_SECRET"
export DEFAULT_MAX_WORKERS=6 GEMINI_MAX_CONCURRENT=2 GROQ_MAX_CONCURRENT=2

EVENT=$(ft_event) || ft_fatal "event add failed"
ft_serve_start serve
ft_check "before any call Gemini is not disabled" stats_is providers.gemini.disabled false
ft_insert "$EVENT" "$N"
ft_log "wrong Gemini key; inserted $N submissions"

ft_wait 60 "/stats shows Gemini disabled" stats_is providers.gemini.disabled true
all_validated() { [ "$(ft_count "status = 'validated'")" -ge "$1" ]; }
ft_wait 60 "all $N submissions validated" all_validated "$N"

gem_reqs=$(sim_counter gemini requests)
gem_auth=$(sim_counter gemini auth_failed)
groq_reqs=$(sim_counter groq requests)
groq_auth=$(sim_counter groq auth_failed)
by_groq=$(sql "SELECT count(*) FROM validation_results WHERE check_name = 'theme' AND provider = 'groq'")
ft_check "Gemini was tried at most once per worker ($gem_reqs requests, $gem_auth refused; <= $DEFAULT_MAX_WORKERS)" \
    test "$gem_reqs" -ge 1 -a "$gem_reqs" -le "$DEFAULT_MAX_WORKERS" -a "$gem_auth" = "$gem_reqs"
ft_check "Groq took every check with its (right) key ($groq_reqs requests, $groq_auth refused)" \
    test "$groq_reqs" -ge "$N" -a "$groq_auth" = 0
ft_check "every theme verdict came from Groq ($by_groq of $N)" test "$by_groq" = "$N"
ft_check "the log says why Gemini was disabled, naming GEMINI_API_KEY" \
    ft_log_has "$SERVE_ERR" '"level":"error".*gemini disabled.*GEMINI_API_KEY'
ft_assert_all_validated "$N"
ft_assert_results_complete

# Everything an operator or a front end can see.
http_get "$STATS_URL/stats" >"$FT_DIR/stats.json"
http_get "$STATS_URL/metrics" >"$FT_DIR/metrics.txt"
http_get "$STATS_URL/healthz" >"$FT_DIR/healthz.txt"
http_get "$STATS_URL/readyz" >"$FT_DIR/readyz.txt"
ft_check "/metrics reports the provider as disabled" \
    grep -Eq '^event_validator_provider_disabled\{provider="gemini"\} 1$' "$FT_DIR/metrics.txt"
sql "SELECT row_to_json(r)::text FROM validation_results r" >"$FT_DIR/results.txt"
sql "SELECT row_to_json(s)::text FROM submissions s" >"$FT_DIR/submissions.txt"
first=$(sql "SELECT min(id) FROM submissions")
"$EV_BIN" show "$first" >"$FT_DIR/show.out" 2>&1
ft_serve_sigterm

leaks=""
for f in "$SERVE_OUT" "$SERVE_ERR" "$FT_DIR/stats.json" "$FT_DIR/metrics.txt" \
    "$FT_DIR/healthz.txt" "$FT_DIR/readyz.txt" "$FT_DIR/results.txt" "$FT_DIR/submissions.txt" \
    "$FT_DIR/show.out" "$FT_DIR/migrate.out" "$FT_DIR/cli.err"; do
    [ -f "$f" ] || continue
    for k in "$WRONG_KEY" "$GROQ_SECRET" "$RIGHT_KEY"; do
        grep -qF -- "$k" "$f" && leaks="$leaks $(basename "$f"):${k%%-key-*}"
    done
done
ft_check "no key appears in the service's stdout/stderr, /stats, /metrics, the database or show (leaks:${leaks:- none})" \
    test -z "$leaks"
ft_check "the checked outputs are not empty (stats $(wc -c <"$FT_DIR/stats.json") B, metrics $(wc -c <"$FT_DIR/metrics.txt") B, log $(wc -l <"$SERVE_ERR") lines)" \
    test -s "$FT_DIR/stats.json" -a -s "$FT_DIR/metrics.txt" -a -s "$SERVE_ERR" -a -s "$FT_DIR/results.txt"
