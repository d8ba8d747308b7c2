#!/usr/bin/env bash
# fault_cluster_breaker.sh - one replica's discovery spares the others.
#
# Gemini fails (503) from the start. Replica A meets the failures and its
# breaker opens; the opening is shared (ev_provider_state + NOTIFY). Replica B,
# started afterwards, follows it at once: it reports the breaker open and
# sends Gemini nothing while it judges new work through Groq (the long
# cool-down means nobody probes meanwhile). Then Gemini recovers and an
# operator resets the breaker in the shared state (what the console's
# `breaker reset` does): both replicas close it and Gemini is used again.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
ft_init

ft_pg_start
ft_sim_start --latency-ms 50 --gemini-fault overloaded
export GEMINI_CIRCUIT_BREAKER_MIN_CALLS=3 GEMINI_CIRCUIT_BREAKER_THRESHOLD=0.5
export GEMINI_CIRCUIT_BREAKER_COOLDOWN=600 MAX_RETRIES=0 DEFAULT_MAX_WORKERS=2

EVENT=$(ft_event) || ft_fatal "event add failed"
ft_insert "$EVENT" 6
ft_serve_start a
SA=$STATS_URL
shared_open() { [ "$(sql "SELECT breaker FROM ev_provider_state WHERE provider = 'gemini'")" = open ]; }
ft_wait 30 "replica A's breaker opening is in the shared state" shared_open
all_final() { [ "$(ft_final_count)" = "$(ft_count true)" ]; }
ft_wait 60 "A finished its work through Groq" all_final
g0=$(sim_counter gemini requests)

ft_serve_start b
SB=$STATS_URL
ft_check "B reports Gemini's breaker open from its start" stats_is providers.gemini.breaker open
ft_insert "$EVENT" 10
ft_wait 60 "the 10 new submissions are final" all_final
b_calls=$(jget "$(http_get "$SB/stats")" providers.gemini.calls)
ft_check "B sent Gemini nothing ($b_calls calls)" test "$b_calls" = 0
g1=$(sim_counter gemini requests)
ft_check "nobody called Gemini while the shared breaker was open ($g0 -> $g1 requests)" test "$g1" = "$g0"

sim_set gemini '{"fault":"none"}'
sql "UPDATE ev_provider_state SET breaker = 'closed', open_until = '-infinity', probe_owner = NULL,
     generation = generation + 1, updated_by = 'operator' WHERE provider = 'gemini'" >/dev/null
closed_at() { [ "$(jget "$(http_get "$1/stats")" providers.gemini.breaker)" = closed ]; }
ft_wait 10 "A follows the operator's reset" closed_at "$SA"
ft_wait 10 "B follows the operator's reset" closed_at "$SB"
ok0=$(sim_counter gemini ok)
ft_insert "$EVENT" 6
ft_wait 60 "the 6 new submissions are final" all_final
ok1=$(sim_counter gemini ok)
ft_check "Gemini answers again after the reset ($ok0 -> $ok1 answers)" test "$ok1" -gt "$ok0"
