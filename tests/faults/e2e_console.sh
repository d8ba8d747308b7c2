#!/usr/bin/env bash
# e2e_console.sh - the operator's controls through the CLI, with two replicas
# serving one database and provider-sim:
#   - every call's cost is recorded, and the costs add up to tokens x prices;
#   - a daily spend limit set with `spend limit` stops the calls of both
#     replicas (submissions wait as pending, none fails) and work resumes once
#     the limit is raised;
#   - an event's budget holds its submissions the same way;
#   - `requeue --status needs_review` and `cancel` act on what both replicas
#     serve, and each action is recorded.
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"

ft_init
ft_pg_start
ft_sim_start --gemini-models console-test-gemini --groq-models console-test-groq,console-test-vision \
    --groq-vision-models console-test-vision
# Prices pinned for the test's own model names, so the sums below do not
# depend on the built-in table or on the default models.
export GEMINI_MODEL=console-test-gemini GROQ_MODEL=console-test-groq
export GROQ_VISION_MODEL=console-test-vision
export MODEL_PRICES="console-test-gemini=1.25/10/0.125,console-test-groq=0.5/0.75,console-test-vision=0.5/0.75"
export HOLD_RETRY_MS=300
# A breaker that opens after a few failures and would stay open for 10 minutes by itself.
export GEMINI_CIRCUIT_BREAKER_MIN_CALLS=3 GEMINI_CIRCUIT_BREAKER_COOLDOWN=600
# A short window: the successes of the earlier sections do not dilute the outage.
export GEMINI_CIRCUIT_BREAKER_WINDOW=10

EV=$(ft_event) || ft_fatal "creating the event"
ft_serve_start a
URL_A=$STATS_URL
ft_serve_start b
URL_B=$STATS_URL

count_is() { test "$(ft_count "$1")" = "$2"; }
calls_made() { sql "SELECT coalesce(sum(http_attempts), 0) FROM validation_results"; }
calls_spent() { sql "SELECT coalesce(sum(calls), 0) FROM spend_daily"; }
all_calls_spent() { test "$(calls_spent)" = "$(calls_made)"; }
spend_shown() { stats_get spend.providers.gemini.today_usd | grep -qv '^0$'; }

# ---- costs add up ------------------------------------------------------
ft_insert "$EV" 8 image
ft_wait 60 "8 submissions validated by two replicas" count_is "status = 'validated'" 8
# The spend thread flushes every second; wait for every call to be counted.
ft_wait 10 "every call is in spend_daily" all_calls_spent
diff=$(sql "WITH p(model, i, o) AS (VALUES ('console-test-gemini', 1.25, 10.0),
                 ('console-test-groq', 0.5, 0.75), ('console-test-vision', 0.5, 0.75)),
            want AS (SELECT sum((r.tokens_in * p.i + r.tokens_out * p.o) / 1e6) v
                       FROM validation_results r JOIN p ON p.model = r.model),
            got AS (SELECT sum(usd) v FROM spend_daily)
            SELECT abs(got.v - want.v) < 1e-9 AND got.v > 0 FROM got, want")
ft_check "recorded cost = tokens x prices ($(sql "SELECT sum(usd) FROM spend_daily") USD)" \
    test "$diff" = t
ft_wait 10 "/stats shows the spend" spend_shown

# ---- the daily spend limit holds the calls of both replicas ------------
out=$("$EV_BIN" spend limit 0.000001 2>&1)
ft_check "spend limit reports and records ($out)" \
    test "$(sql "SELECT count(*) FROM control_actions WHERE action = 'spend_limit'")" = 1
capped() { [ "$(jget "$(http_get "$1/stats")" "spend.providers.$2.limit_reached")" = true ]; }
ft_wait 10 "replica a sees gemini capped" capped "$URL_A" gemini
ft_wait 10 "replica b sees gemini capped" capped "$URL_B" gemini
ft_insert "$EV" 4
# Groq takes the work until its own total passes the limit.
ft_wait 20 "groq capped too" capped "$URL_B" groq
ft_wait 20 "replica a sees groq capped" capped "$URL_A" groq
ft_insert "$EV" 3
before=$(($(sim_counter gemini requests) + $(sim_counter groq requests)))
sql "UPDATE submissions SET last_error = NULL WHERE status = 'pending'" >/dev/null
held() { test "$(ft_count "status = 'pending' AND last_error LIKE 'waiting:%'")" = "$(ft_count "status = 'pending'")" -a "$(ft_count "status = 'pending'")" -gt 0; }
ft_wait 20 "pending submissions are picked up and held, not called" held
after=$(($(sim_counter gemini requests) + $(sim_counter groq requests)))
ft_check "the simulator received no request while capped ($before -> $after)" test "$before" = "$after"
ft_check "nothing failed or went to needs_review while capped" \
    test "$(ft_count "status IN ('failed', 'needs_review')")" = 0
ft_check "/metrics flips spend_limit_reached" \
    grep -q 'event_validator_spend_limit_reached{provider="gemini"} 1' <(http_get "$URL_A/metrics")
ft_check "a line is logged when the limit is reached" \
    ft_log_has "$FT_DIR/a.err" 'daily spend limit reached'
http_get "$URL_A/metrics" >"$FT_DIR/metrics.txt"
ft_check "promtool check metrics accepts /metrics with a limit reached" \
    sh -c "promtool check metrics <'$FT_DIR/metrics.txt'"
"$EV_BIN" spend limit default >/dev/null 2>&1
ft_wait 30 "work resumes once the limit is raised" count_is "status <> 'validated'" 0

# ---- an event's budget -------------------------------------------------
"$EV_BIN" event budget "$EV" 0 >/dev/null 2>&1 || ft_fail "event budget refused"
budget_seen() { grep -q "event_validator_event_budget_reached{event=\"$EV\"} 1" <(http_get "$1/metrics"); }
ft_wait 10 "replica a sees the budget spent" budget_seen "$URL_A"
ft_wait 10 "replica b sees the budget spent" budget_seen "$URL_B"
ft_insert "$EV" 2
sql "UPDATE submissions SET last_error = NULL WHERE status = 'pending'" >/dev/null
before=$(($(sim_counter gemini requests) + $(sim_counter groq requests)))
ft_wait 20 "an event over budget waits" held
after=$(($(sim_counter gemini requests) + $(sim_counter groq requests)))
ft_check "no call for an event over budget ($before -> $after)" test "$before" = "$after"
"$EV_BIN" event budget "$EV" none >/dev/null 2>&1
ft_wait 30 "work resumes once the budget is removed" count_is "status <> 'validated'" 0

# ---- requeue and cancel ------------------------------------------------
sql "UPDATE submissions SET status = 'needs_review', attempts = 5
      WHERE id IN (SELECT id FROM submissions ORDER BY id LIMIT 3)" >/dev/null
out=$("$EV_BIN" requeue --status needs_review --dry-run 2>&1)
ft_check "dry run says what it would do ($out)" grep -q 'would requeue 3' <<<"$out"
out=$("$EV_BIN" requeue --status needs_review 2>&1)
ft_check "requeue reports what it did" grep -q 'requeued 3 submission' <<<"$out"
ft_wait 30 "requeued submissions are judged again" count_is "status <> 'validated'" 0
sql "INSERT INTO submissions (event_id, title, run_after)
     SELECT $EV, 'later ' || g, now() + interval '1 hour' FROM generate_series(1, 2) g" >/dev/null
ids=$(sql "SELECT string_agg(id::text, ' ') FROM submissions WHERE status = 'pending'")
# shellcheck disable=SC2086
out=$("$EV_BIN" cancel $ids 2>&1)
ft_check "cancel reports ($out)" grep -q 'cancelled 2 submission' <<<"$out"
ft_check "cancelled submissions are cancelled" test "$(ft_count "status = 'cancelled'")" = 2

# ---- the emergency stop ------------------------------------------------
t0=${EPOCHREALTIME/./}
out=$("$EV_BIN" emergency on 2>&1)
ft_check "emergency on reports ($out)" grep -q 'EMERGENCY STOP' <<<"$out"
stopped() { [ "$(jget "$(http_get "$1/stats")" spend.emergency)" = true ]; }
both_stopped() { stopped "$URL_A" && stopped "$URL_B"; }
ft_wait 10 "both replicas obey the emergency stop" both_stopped
t1=${EPOCHREALTIME/./}
# Polled every 0.2 s: the figure is an upper bound (the spend thread re-reads every 1 s).
ft_log "emergency on -> both replicas holding: $(((t1 - t0) / 1000)) ms"
before=$(($(sim_counter gemini requests) + $(sim_counter groq requests)))
ft_insert "$EV" 3 image
ft_wait 20 "work needing a provider waits as pending" held
after=$(($(sim_counter gemini requests) + $(sim_counter groq requests)))
ft_check "emergency on: the simulator received no request ($before -> $after)" \
    test "$before" = "$after"
ft_check "nothing failed during the emergency" \
    test "$(ft_count "status IN ('failed', 'needs_review')")" = 0
ft_check "/metrics shows the emergency stop" \
    grep -q '^event_validator_emergency_stop 1' <(http_get "$URL_B/metrics")
"$EV_BIN" emergency off >/dev/null 2>&1 || ft_fail "emergency off refused"
ft_wait 30 "work resumes after emergency off" count_is "status = 'pending'" 0

# ---- pausing one provider ----------------------------------------------
out=$("$EV_BIN" provider pause gemini --for 10m 2>&1)
ft_check "provider pause reports ($out)" grep -q 'gemini paused for 600 s' <<<"$out"
paused() { [ "$(jget "$(http_get "$1/stats")" spend.providers.gemini.held)" = paused ]; }
ft_wait 10 "replica a sees gemini paused" paused "$URL_A"
ft_wait 10 "replica b sees gemini paused" paused "$URL_B"
g_before=$(sim_counter gemini requests)
q_before=$(sim_counter groq requests)
ft_insert "$EV" 3
ft_wait 30 "work goes on through groq while gemini is paused" count_is "status = 'pending'" 0
ft_check "gemini received nothing while paused ($g_before -> $(sim_counter gemini requests))" \
    test "$(sim_counter gemini requests)" = "$g_before"
ft_check "groq took the work ($q_before -> $(sim_counter groq requests))" \
    test "$(sim_counter groq requests)" -gt "$q_before"
"$EV_BIN" provider resume gemini >/dev/null 2>&1 || ft_fail "provider resume refused"
unpaused() { [ "$(jget "$(http_get "$1/stats")" spend.providers.gemini.held)" = no ]; }
ft_wait 10 "replica b sees gemini resumed" unpaused "$URL_B"

# ---- resetting a breaker -------------------------------------------------
sim_set gemini '{"fault":"overloaded"}'
ft_insert "$EV" 12
breaker_is() { [ "$(jget "$(http_get "$1/stats")" providers.gemini.breaker)" = "$2" ]; }
ft_wait 30 "an outage opens gemini's breaker on replica a" breaker_is "$URL_A" open
ft_wait 10 "and on replica b" breaker_is "$URL_B" open
ft_wait 30 "groq carries the work meanwhile" count_is "status = 'pending'" 0
sim_set gemini '{"fault":"none"}'
out=$("$EV_BIN" breaker reset gemini 2>&1)
ft_check "breaker reset reports ($out)" grep -q 'gemini circuit breaker closed' <<<"$out"
ft_wait 10 "replica a closes the breaker (cooldown 600 s)" breaker_is "$URL_A" closed
ft_wait 10 "replica b closes the breaker" breaker_is "$URL_B" closed
ft_check "every action was recorded" \
    test "$(sql "SELECT count(*) FROM control_actions")" = 11

for pid in "${FT_SERVE_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
    ft_wait_exit "$pid" 45
    ft_check "replica exits 0 on SIGTERM" test "$FT_EXIT_RC" = 0
done
