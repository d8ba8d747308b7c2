#!/usr/bin/env bash
# e2e_dashboard.sh - the operator dashboard in a real browser: headless Chromium
# (Debian's `chromium`) driven by playwright-core (tests/browser, installed by
# scripts/test.sh with npm ci). Missing either is a failure, never a skip.
#
# Sets the scene, then hands over to tests/browser/dashboard.mjs: a Gemini
# outage has opened its breaker (Groq answered meanwhile) and three submissions
# sit in needs_review with their reasons. The browser script checks the page
# (no console error, numbers equal to /stats, open breaker, failures listed,
# Requeue refused without an admin token and done with one).
# EV_DASHBOARD_SCREENSHOT=PATH also copies the screenshot there (docs/dashboard.png).
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"

ft_init
BROWSER_DIR=$EV_SOURCE_DIR/tests/browser
command -v node >/dev/null || ft_fatal "node is not installed"
[ -x /usr/bin/chromium ] || ft_fatal "chromium is not installed (apt-get install chromium)"
[ -d "$BROWSER_DIR/node_modules/playwright-core" ] ||
    ft_fatal "playwright-core is not installed (npm ci --prefix tests/browser)"

ft_pg_start
ft_sim_start
export GEMINI_CIRCUIT_BREAKER_MIN_CALLS=3 GEMINI_CIRCUIT_BREAKER_WINDOW=60
export GEMINI_CIRCUIT_BREAKER_COOLDOWN=600 MAX_RETRIES=0
EV=$(ft_event) || ft_fatal "creating the event"
ft_serve_start a
TOKEN=$("$EV_BIN" token create --name dashboard-test --admin 2>>"$FT_DIR/cli.err" | head -n 1)
[ -n "$TOKEN" ] || ft_fatal "token create --admin printed no token"

count_is() { test "$(ft_count "$1")" = "$2"; }
ft_insert "$EV" 4 image
ft_wait 30 "4 submissions validated" count_is "status = 'validated'" 4

sim_set gemini '{"fault":"overloaded"}'
ft_insert "$EV" 6
breaker_open() { stats_is providers.gemini.breaker open; }
ft_wait 30 "the Gemini outage opens its breaker" breaker_open
ft_wait 30 "Groq answers meanwhile" count_is "status IN ('pending', 'processing')" 0
sql "UPDATE submissions SET status = 'needs_review', attempts = 5,
            last_error = 'theme: gemini: HTTP 503 UNAVAILABLE: The model is overloaded (recorded by the test)'
      WHERE id IN (SELECT id FROM submissions ORDER BY id LIMIT 3)" >/dev/null

if node "$BROWSER_DIR/dashboard.mjs" "$STATS_URL" "$TOKEN" "$FT_DIR/dashboard.png" \
    >"$FT_DIR/browser.out" 2>&1; then
    ft_pass "the browser checks passed"
else
    ft_fail "the browser checks failed"
fi
cat "$FT_DIR/browser.out"
if [ -n "${EV_DASHBOARD_SCREENSHOT:-}" ] && [ -f "$FT_DIR/dashboard.png" ]; then
    cp "$FT_DIR/dashboard.png" "$EV_DASHBOARD_SCREENSHOT"
fi
ft_check "the dashboard's requeue was recorded with its actor" \
    test "$(sql "SELECT count(*) FROM control_actions WHERE action = 'requeue'
                 AND actor LIKE 'dashboard:token-%'")" = 1
ft_serve_sigterm
