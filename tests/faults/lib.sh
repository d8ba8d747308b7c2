# shellcheck shell=bash
# tests/faults/lib.sh - shared helpers of the fault suite (tests/faults/fault_*.sh).
#
# Sourced, never run. A fault script calls ft_init, then builds its world with
# ft_pg_start (its OWN throwaway Postgres cluster, so restarting or killing it
# disturbs no other test), ft_sim_start (provider-sim on a free port) and
# ft_serve_start (event-validator serve, its stats port read from its log), drives
# the fault, and asserts with ft_check / ft_wait (polls with a generous bound;
# never a fixed sleep before an assertion). The EXIT trap prints the verdict
# line ("PASS: <script> (N checks)" or "FAIL: ...") and sets the exit status.
#
# Every process started here is stopped by the EXIT trap (by pid: the service
# with SIGTERM then SIGKILL, provider-sim with SIGTERM, the cluster with
# pg-harness stop) and the temporary directory is removed (kept, with its path
# printed, when EV_FAULTS_KEEP=1).
#
# Environment: EV_BUILD_DIR (binaries event-validator and provider-sim; default
# build/ of the source tree) and EV_SOURCE_DIR (default: two levels up), both set
# by CTest. JSON is read with jq when installed, otherwise (or with
# EV_FAULTS_NO_JQ=1) through psql's jsonb, so only psql and curl are required.
#
# Output: one "PASS: <script>: <what>" or "FAIL: <script>: <what>" line per
# assertion, progress lines prefixed with "[<script> <time>]", and on failure the
# tail of every service log. Exit status 0 only when every assertion passed.

set -uo pipefail

EV_SOURCE_DIR=${EV_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
EV_BUILD_DIR=${EV_BUILD_DIR:-$EV_SOURCE_DIR/build}
EV_BIN=$EV_BUILD_DIR/event-validator
SIM_BIN=$EV_BUILD_DIR/provider-sim
PG_HARNESS=$EV_SOURCE_DIR/scripts/pg-harness.sh

FT_NAME=$(basename "$0" .sh)
FT_DIR=""
FT_FAILS=0
FT_PASSES=0
FT_PG_STARTED=0
FT_SIM_PID=""
FT_WATCHDOG_PID=""
FT_SERVE_PIDS=()
FT_SERVE_LOGS=()
# Set by ft_sim_start / ft_serve_start.
SIM_URL=""
SERVE_PID=""
SERVE_ERR=""
SERVE_OUT=""
STATS_URL=""
# A 1x1 PNG: a real image for libmagic and for the simulator's byte checks.
FT_PNG_B64='iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='

ft_log() { printf '[%s %s] %s\n' "$FT_NAME" "$(date +%T)" "$*"; }

ft_pass() {
    FT_PASSES=$((FT_PASSES + 1))
    printf 'PASS: %s: %s\n' "$FT_NAME" "$*"
}

ft_fail() {
    FT_FAILS=$((FT_FAILS + 1))
    printf 'FAIL: %s: %s\n' "$FT_NAME" "$*"
}

# A failure after which the scenario cannot go on: report, then exit (the trap cleans up).
ft_fatal() {
    ft_fail "$*"
    exit 1
}

# ft_check DESCRIPTION CMD...: PASS when CMD succeeds now, FAIL otherwise.
ft_check() {
    local desc=$1
    shift
    if "$@"; then
        ft_pass "$desc"
        return 0
    fi
    ft_fail "$desc"
    return 1
}

# ft_poll TIMEOUT_S CMD...: runs CMD every 0.2 s until it succeeds (0) or TIMEOUT_S
# seconds have passed (1). No output.
ft_poll() {
    local timeout=$1
    shift
    local deadline=$(($(date +%s) + timeout))
    while :; do
        "$@" && return 0
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

# ft_wait TIMEOUT_S DESCRIPTION CMD...: ft_poll with a PASS/FAIL line.
ft_wait() {
    local timeout=$1 desc=$2
    shift 2
    if ft_poll "$timeout" "$@"; then
        ft_pass "$desc"
        return 0
    fi
    ft_fail "$desc (not within ${timeout}s)"
    return 1
}

# ---------------------------------------------------------------------------
# Set-up and clean-up

ft_cleanup() {
    local rc=$? pid i
    trap - EXIT
    [ -n "$FT_WATCHDOG_PID" ] && kill "$FT_WATCHDOG_PID" 2>/dev/null
    for pid in "${FT_SERVE_PIDS[@]}"; do
        ft_stop_pid "$pid" 15
    done
    if [ -n "$FT_SIM_PID" ]; then
        ft_stop_pid "$FT_SIM_PID" 10
    fi
    if [ "$FT_PG_STARTED" = 1 ]; then
        bash "$PG_HARNESS" stop "$FT_DIR/pg" >/dev/null 2>&1 || true
    fi
    if [ "$FT_FAILS" -ne 0 ] || [ "$rc" -ne 0 ]; then
        for i in "${FT_SERVE_LOGS[@]}"; do
            [ -f "$i" ] || continue
            echo "---- last 40 lines of $(basename "$i") ----"
            tail -n 40 "$i"
        done
        if [ -n "$FT_DIR" ] && [ -f "$FT_DIR/sim.err" ]; then
            echo "---- last 20 lines of provider-sim's log ----"
            tail -n 20 "$FT_DIR/sim.err"
        fi
        [ "$rc" -ne 0 ] || rc=1
    fi
    if [ -n "$FT_DIR" ] && [ -d "$FT_DIR" ]; then
        if [ "${EV_FAULTS_KEEP:-0}" = 1 ]; then
            echo "[$FT_NAME] kept $FT_DIR"
        else
            rm -rf "$FT_DIR"
        fi
    fi
    if [ "$rc" -eq 0 ]; then
        echo "PASS: $FT_NAME ($FT_PASSES checks)"
    elif [ "$FT_FAILS" -eq 0 ]; then
        echo "FAIL: $FT_NAME (aborted with status $rc after $FT_PASSES passed checks)"
    else
        echo "FAIL: $FT_NAME ($FT_FAILS of $((FT_PASSES + FT_FAILS)) checks failed)"
    fi
    exit "$rc"
}

# ft_stop_pid PID GRACE_S: SIGTERM, wait up to GRACE_S, then SIGKILL. Only our own children.
ft_stop_pid() {
    local pid=$1 grace=$2
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    if ! ft_poll "$grace" ft_dead "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# ft_dead PID: true once PID has exited (a zombie of ours counts as exited).
ft_dead() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
    case "$state" in Z*) return 0 ;; esac
    return 1
}

ft_alive() { ! ft_dead "$1"; }

ft_init() {
    [ -x "$EV_BIN" ] || { echo "FAIL: $FT_NAME: $EV_BIN not built (set EV_BUILD_DIR)"; exit 1; }
    [ -x "$SIM_BIN" ] || { echo "FAIL: $FT_NAME: $SIM_BIN not built (set EV_BUILD_DIR)"; exit 1; }
    command -v psql >/dev/null || { echo "FAIL: $FT_NAME: psql is not installed"; exit 1; }
    command -v curl >/dev/null || { echo "FAIL: $FT_NAME: curl is not installed"; exit 1; }
    # /tmp keeps the Postgres unix socket path short.
    FT_DIR=$(mktemp -d /tmp/evfault.XXXXXX) || { echo "FAIL: $FT_NAME: mktemp"; exit 1; }
    # The cluster runs as `postgres` when we are root: it must traverse this directory.
    chmod 755 "$FT_DIR"
    trap ft_cleanup EXIT
    trap 'exit 130' INT TERM
    # A watchdog ends the scenario (through the traps, so everything is cleaned
    # up) before CTest's own timeout would SIGKILL bash and orphan the cluster.
    local parent=$$ limit=${EV_FAULTS_TIMEOUT_S:-240}
    (
        trap - EXIT INT TERM
        for _ in $(seq "$limit"); do
            sleep 1
            kill -0 "$parent" 2>/dev/null || exit 0
        done
        echo "FAIL: $FT_NAME: scenario still running after ${limit}s; aborting"
        kill -TERM "$parent"
    ) &
    FT_WATCHDOG_PID=$!

    # Nothing from the caller's environment may leak into the service's configuration.
    local v
    for v in $(env | sed -n 's/^\(\(GEMINI\|GROQ\)_[A-Z_]*\)=.*/\1/p'); do
        unset "$v"
    done
    unset UPLOAD_DIR MAX_ATTEMPTS MAX_RETRIES MAX_API_CALLS_PER_SUBMISSION HTTP_TIMEOUT_MS \
        RETRY_MAX_WAIT_MS RETRY_BUDGET_RATIO RATE_LIMIT_SAFETY_FACTOR DEFAULT_MAX_WORKERS
    # Small timings (SPEC §3) so that every scenario takes seconds, not minutes.
    export LEASE_SECONDS=5 POLL_INTERVAL_MS=200 STAGGER_MIN_MS=0 STAGGER_MAX_MS=10
    export WORKER_STAGGER_MS=0 RETRY_BASE_MS=50 RETRY_MAX_MS=500
    export REQUEUE_BASE_MS=200 REQUEUE_MAX_MS=2000
    export STATS_ADDR=127.0.0.1 STATS_PORT=0 LOG_LEVEL=info
    # The simulator enforces no rate limit unless a scenario asks for one, so the
    # service's own limiters must not be the bottleneck either.
    export GEMINI_RPM_LIMIT=6000 GROQ_RPM_LIMIT=6000
    ft_log "work dir $FT_DIR, binaries from $EV_BUILD_DIR"
}

# ---------------------------------------------------------------------------
# Postgres

ft_pg_start() {
    local env
    env=$(bash "$PG_HARNESS" start "$FT_DIR/pg" 2>"$FT_DIR/pg-harness.err") ||
        { cat "$FT_DIR/pg-harness.err"; ft_fatal "cannot start a Postgres cluster"; }
    FT_PG_STARTED=1
    eval "$env"
    export DATABASE_URL
    "$EV_BIN" migrate >"$FT_DIR/migrate.out" 2>&1 ||
        { cat "$FT_DIR/migrate.out"; ft_fatal "event-validator migrate failed"; }
    ft_log "Postgres at $DATABASE_URL, migrated"
}

ft_pg_stop() { bash "$PG_HARNESS" stop "$FT_DIR/pg" >>"$FT_DIR/pg-harness.err" 2>&1; }

ft_pg_restart_start() { bash "$PG_HARNESS" start "$FT_DIR/pg" >/dev/null 2>>"$FT_DIR/pg-harness.err"; }

# sql QUERY: one value (or rows joined by |), tuples only.
sql() { psql -X -q -tA -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }

# ft_count WHERE: submissions matching WHERE (e.g. "status = 'validated'").
ft_count() { sql "SELECT count(*) FROM submissions WHERE $1"; }

ft_final_count() { ft_count "status IN ('validated', 'rejected', 'needs_review', 'failed')"; }

# ft_event: creates an event through the CLI; prints its id.
ft_event() {
    "$EV_BIN" event add --name "fault-$FT_NAME-$$-$RANDOM" \
        --theme "Ideas that make cities greener" 2>>"$FT_DIR/cli.err"
}

# ft_insert EVENT N [image]: inserts N submissions the way an upload front end does
# (plain SQL), each with a unique title so that no verdict comes from the cache;
# with "image", each gets a small PNG too (a second LLM check).
ft_insert() {
    local ev=$1 n=$2 with_image=${3:-}
    local tag="$RANDOM$RANDOM"
    psql -X -q -v ON_ERROR_STOP=1 -v ev="$ev" -v n="$n" -v tag="$tag" -v png="$FT_PNG_B64" \
        -v img="${with_image:+1}" "$DATABASE_URL" >/dev/null <<'SQL' || ft_fatal "inserting submissions"
WITH s AS (
    INSERT INTO submissions (event_id, title, description)
    SELECT :ev, 'Green roof ' || :'tag' || '-' || g,
           'Planting green roof number ' || g || ' of batch ' || :'tag' || '.'
    FROM generate_series(1, :n) g
    RETURNING id)
INSERT INTO submission_files (submission_id, kind, filename, content)
SELECT id, 'image', 'roof.png', decode(:'png', 'base64') FROM s WHERE :'img' = '1';
SQL
}

# ---------------------------------------------------------------------------
# JSON and HTTP

# jget JSON PATH: the value at a dotted PATH ("providers.gemini.breaker") as text
# (strings unquoted, booleans true/false, absent: empty).
jget() {
    local json=$1 path=$2
    if [ "${EV_FAULTS_NO_JQ:-0}" != 1 ] && command -v jq >/dev/null 2>&1; then
        printf '%s' "$json" |
            jq -r --arg p "$path" 'getpath($p | split(".")) | if . == null then empty else . end' 2>/dev/null
    else
        printf 'SELECT (:%s::jsonb) #>> :%s;\n' "'j'" "'p'" |
            psql -X -q -tA -v j="$json" -v p="{${path//./,}}" "$DATABASE_URL" 2>/dev/null
    fi
}

http_get() { curl -s -m 10 "$1"; }
http_code() { curl -s -o /dev/null -m 10 -w '%{http_code}' "$1"; }

stats_json() { http_get "$STATS_URL/stats"; }
# stats_get PATH: one field of the service's /stats.
stats_get() { jget "$(stats_json)" "$1"; }
# stats_is PATH VALUE: true when /stats has VALUE at PATH.
stats_is() { [ "$(stats_get "$1")" = "$2" ]; }

# ---------------------------------------------------------------------------
# provider-sim

# ft_sim_start [SIM FLAGS...]: starts provider-sim on a free port; exports the
# providers' base URLs and default keys (any non-empty key works unless the sim
# was given --gemini-key/--groq-key).
ft_sim_start() {
    rm -f "$FT_DIR/sim.port"
    "$SIM_BIN" --port 0 --port-file "$FT_DIR/sim.port" --rpm 0 --log-level info "$@" \
        >"$FT_DIR/sim.out" 2>"$FT_DIR/sim.err" &
    FT_SIM_PID=$!
    ft_poll 30 test -s "$FT_DIR/sim.port" || { cat "$FT_DIR/sim.err"; ft_fatal "provider-sim did not start"; }
    SIM_URL="http://127.0.0.1:$(cat "$FT_DIR/sim.port")"
    export GEMINI_BASE_URL="$SIM_URL/gemini/v1beta" GROQ_BASE_URL="$SIM_URL/groq/openai/v1"
    export GEMINI_API_KEY=${GEMINI_API_KEY:-sim-gemini-key} GROQ_API_KEY=${GROQ_API_KEY:-sim-groq-key}
    ft_log "provider-sim at $SIM_URL"
}

# sim_set PROVIDER JSON: changes the sim's settings (fault, latency, ...).
sim_set() {
    local out
    out=$(curl -s -m 10 -w '\n%{http_code}' -X POST -d "$2" "$SIM_URL/control/$1")
    [ "${out##*$'\n'}" = 200 ] || ft_fatal "provider-sim refused $1 settings $2: $out"
}

# sim_counter PROVIDER KEY: one counter of the sim's /control/stats.
sim_counter() {
    local v
    v=$(jget "$(http_get "$SIM_URL/control/stats")" "$1.$2")
    echo "${v:-0}"
}

# ---------------------------------------------------------------------------
# The service

# ft_serve_start LABEL [serve args...]: starts `event-validator serve` in the
# background (stdout and stderr to $FT_DIR/LABEL.out/.err), waits for its stats
# server and sets SERVE_PID, SERVE_OUT, SERVE_ERR and STATS_URL.
ft_serve_start() {
    local label=$1
    shift
    SERVE_OUT="$FT_DIR/$label.out"
    SERVE_ERR="$FT_DIR/$label.err"
    "$EV_BIN" serve "$@" >"$SERVE_OUT" 2>"$SERVE_ERR" &
    SERVE_PID=$!
    FT_SERVE_PIDS+=("$SERVE_PID")
    FT_SERVE_LOGS+=("$SERVE_ERR")
    local port=""
    if ! ft_poll 30 ft_serve_port_known "$SERVE_PID" "$SERVE_ERR"; then
        ft_fatal "serve ($label) did not report its stats port"
    fi
    port=$(sed -n 's/.*stats server listening on [0-9.]*:\([0-9]*\).*/\1/p' "$SERVE_ERR" | head -n 1)
    STATS_URL="http://127.0.0.1:$port"
    ft_log "serve${*:+ $*} ($label) pid $SERVE_PID, stats at $STATS_URL"
}

# Fails fast (and reports) when the service exits before listening.
ft_serve_port_known() {
    if grep -q 'stats server listening on' "$2" 2>/dev/null; then
        return 0
    fi
    if ft_dead "$1"; then
        cat "$2"
        ft_fatal "serve exited before its stats server listened"
    fi
    return 1
}

# ft_wait_exit PID TIMEOUT_S: waits for PID (a child of this shell) to exit and
# sets FT_EXIT_RC to its exit status, or to "timeout" after killing it. Not for
# $(...): a subshell cannot wait for our children.
FT_EXIT_RC=""
ft_wait_exit() {
    local pid=$1 timeout=$2
    if ft_poll "$timeout" ft_dead "$pid"; then
        wait "$pid"
        FT_EXIT_RC=$?
    else
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        FT_EXIT_RC=timeout
    fi
}

# ft_log_has FILE PATTERN: true when a line of FILE matches the extended regex.
ft_log_has() { grep -Eq "$2" "$1" 2>/dev/null; }

# ---------------------------------------------------------------------------
# Database assertions shared by the scenarios

# Every submission is final, none left pending or processing.
ft_assert_all_final() {
    local total pend proc
    total=$(ft_count "true")
    pend=$(ft_count "status = 'pending'")
    proc=$(ft_count "status = 'processing'")
    ft_check "all $total submissions final (pending=$pend processing=$proc)" \
        test "$pend" = 0 -a "$proc" = 0
}

# Exactly one validation_results row per (submission, check) for every final
# submission: 3 rows each (theme, pdf, image), none missing.
ft_assert_results_complete() {
    local bad rows expected
    bad=$(sql "SELECT count(*) FROM submissions s
               WHERE s.status IN ('validated', 'rejected', 'needs_review')
                 AND (SELECT count(*) FROM validation_results r WHERE r.submission_id = s.id) <> 3")
    ft_check "every final submission has exactly 3 check rows (offenders: $bad)" test "$bad" = 0
    rows=$(sql "SELECT count(*) FROM validation_results r JOIN submissions s ON s.id = r.submission_id
                WHERE s.status IN ('validated', 'rejected', 'needs_review')")
    expected=$(($(ft_count "status IN ('validated', 'rejected', 'needs_review')") * 3))
    ft_check "validation_results rows of final submissions = 3 x final ($rows = $expected)" \
        test "$rows" = "$expected"
    bad=$(sql "SELECT count(*) FROM (SELECT submission_id, check_name FROM validation_results
               GROUP BY 1, 2 HAVING count(*) > 1) d")
    ft_check "no duplicate (submission, check) rows ($bad)" test "$bad" = 0
}

# ft_assert_all_validated N: exactly N submissions, all validated.
ft_assert_all_validated() {
    local n=$1 v
    v=$(ft_count "status = 'validated'")
    ft_check "all $n submissions validated (validated=$v, by status: $(sql "SELECT string_agg(status || '=' || c, ' ') FROM (SELECT status, count(*) c FROM submissions GROUP BY 1) x"))" \
        test "$v" = "$n" -a "$(ft_count "true")" = "$n"
}

# ft_serve_sigterm: SIGTERM to the current service; PASS when it exits 0 within
# the default grace period (30 s) plus a margin.
ft_serve_sigterm() {
    kill -TERM "$SERVE_PID" 2>/dev/null
    ft_wait_exit "$SERVE_PID" 45
    ft_check "serve exits 0 on SIGTERM (exit status: $FT_EXIT_RC)" test "$FT_EXIT_RC" = 0
}
