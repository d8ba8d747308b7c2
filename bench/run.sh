#!/usr/bin/env bash
# bench/run.sh - the event-validator benchmark (issue 6): one command, one table.
#
#   bench/run.sh [scenario...]      scenarios: rate-bound concurrency-bound overhead
#                                   outage replicas adaptive-exact adaptive-overestimated
#                                   adaptive-quota-cut tpm-bound combined api (default: all,
#                                   in that order)
#   bench/run.sh micro              not in the default set: CPU of each local step of one
#                                   submission (bench/micro.c), to bench/results/micro.txt
#
# Builds the release binary into build-bench/, starts a throwaway Postgres (mktemp dir,
# always stopped) and provider-sim, loads submissions with real files (a ~100 KB PDF and
# a ~50 KB PNG each, distinct bytes per submission so the verdict cache never hits), runs
# `event-validator serve --drain`, prints one table and writes bench/results/<scenario>.json.
# bench/README.md defines every figure.
#
# Environment: BENCH_KEEP=1 keeps the work directory (logs, sim request log, polls);
# BENCH_TIMEOUT_S bounds each serve run [300]; EV_SKIP_INSTALL=1 skips apt-get.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
RESULTS="$BENCH/results"
BUILD="$ROOT/build-bench"
EV="${BENCH_EV:-$BUILD/event-validator}" # BENCH_EV: compare another build (A/B)
SIM_BIN="$BUILD/provider-sim"
GEN="$BUILD/bench-genfiles"
TIMEOUT_S=${BENCH_TIMEOUT_S:-300}
# Any non-empty key works with the sim; a long one so no answer text can contain it
# (the service withholds answers that echo the key).
KEY="bench-sim-key-5d1c0a7e9b"

ALL=(rate-bound concurrency-bound overhead outage replicas adaptive-exact adaptive-overestimated
    adaptive-quota-cut tpm-bound combined api replicas-rate-bound replicas-concurrency
    replicas-outage coordination-cost)
SCENARIOS=()
for a in "$@"; do
    case "$a" in
    -h | --help)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    rate-bound | concurrency-bound | overhead | outage | replicas | micro | adaptive-exact | \
        adaptive-overestimated | adaptive-quota-cut | tpm-bound | combined | api | \
        replicas-rate-bound | replicas-concurrency | replicas-outage | coordination-cost) SCENARIOS+=("$a") ;;
    *)
        echo "bench/run.sh: unknown scenario '$a' (known: ${ALL[*]})" >&2
        exit 2
        ;;
    esac
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=("${ALL[@]}")

say() { printf '==> %s\n' "$*" >&2; }
die() {
    echo "bench/run.sh: $*" >&2
    exit 1
}

# Milliseconds since the epoch, without forking.
now_ms() { local t=${EPOCHREALTIME/./}; REPLY=$((t / 1000)); }

# ---------------------------------------------------------------- set-up

# shellcheck source=scripts/deps.sh
. "$ROOT/scripts/deps.sh"
ev_install_packages "${EV_RUNTIME_PACKAGES[@]}" jq curl time
[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) is needed: apt-get install time"

say "building the release binary (build-bench/)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DEV_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target event-validator provider-sim >/dev/null
cc -O2 -std=c11 -Wall -Wextra -o "$GEN" "$BENCH/genfiles.c"

WORK=$(mktemp -d /tmp/ev-bench.XXXXXX)
chmod 755 "$WORK" # the postgres user must traverse it
PG_STARTED=0
cleanup() {
    local rc=$? p
    # Our own background jobs only (sims, pollers, serve wrappers), by pid.
    for p in $(jobs -p); do
        stop_pid "$p"
    done
    if [ "$PG_STARTED" = 1 ]; then
        bash "$ROOT/scripts/pg-harness.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
        echo "work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
# Stops one process we started, and the command a `timeout` wrapper of ours runs.
stop_pid() {
    local p=$1 c
    kill -0 "$p" 2>/dev/null || return 0
    for c in $(pgrep -P "$p" 2>/dev/null || true); do
        kill -TERM "$c" 2>/dev/null || true
    done
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting a throwaway Postgres ($WORK/pg)"
eval "$(bash "$ROOT/scripts/pg-harness.sh" start "$WORK/pg" 2>"$WORK/pg-harness.log")" ||
    { cat "$WORK/pg-harness.log" >&2; die "Postgres did not start"; }
PG_STARTED=1
ADMIN_URL=$DATABASE_URL
unset DATABASE_URL

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        port_in_use "$p" || {
            REPLY=$p
            return 0
        }
    done
    die "no free TCP port"
}

# ---------------------------------------------------------------- helpers

# new_db NAME: a fresh database with the schema and one event requiring a PDF and an image.
# Sets DB_URL and EVENT_ID.
new_db() {
    local name=$1
    psql -q "$ADMIN_URL" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
    DB_URL="${ADMIN_URL%/*}/$name"
    DATABASE_URL=$DB_URL "$EV" migrate >/dev/null
    EVENT_ID=$(DATABASE_URL=$DB_URL "$EV" event add --name "Green City Challenge ($name)" \
        --theme "Ideas that make cities greener: energy, transport, nature in the city" \
        --rules "Projects must be realistic and describe a budget and a timeline." \
        --require-pdf --require-image)
}

# load N: N submissions with one PDF and one PNG each (distinct bytes), in two statements.
load() {
    local n=$1 t0
    now_ms
    t0=$REPLY
    psql -q -v ON_ERROR_STOP=1 "$DB_URL" -c "INSERT INTO submissions (event_id, title, description)
        SELECT $EVENT_ID, 'Solar bus stops #' || g,
               'Retrofitting 40 bus stops with solar canopies and batteries (bench ' || g || ').'
        FROM generate_series(1, $n) g" >/dev/null
    psql -tAq -v ON_ERROR_STOP=1 "$DB_URL" -c "SELECT id FROM submissions ORDER BY id" |
        "$GEN" 2>/dev/null |
        psql -q -v ON_ERROR_STOP=1 "$DB_URL" -c "COPY submission_files (submission_id, kind, filename, content)
            FROM STDIN (FORMAT binary)" >/dev/null
    psql -q "$DB_URL" -c "VACUUM ANALYZE" >/dev/null
    now_ms
    say "loaded $n submissions ($((n * 2)) files) in $((REPLY - t0))ms"
}

# start_sim DIR FLAGS...: provider-sim logging every request (debug) to DIR/sim.log.
# Sets SIM (base URL) and SIM_PID.
start_sim() {
    local dir=$1
    shift
    rm -f "$dir/sim.port"
    "$SIM_BIN" --port 0 --port-file "$dir/sim.port" --log-level debug "$@" 2>"$dir/sim.log" &
    SIM_PID=$!
    for _ in $(seq 100); do
        [ -s "$dir/sim.port" ] && break
        sleep 0.05
    done
    [ -s "$dir/sim.port" ] || die "provider-sim did not start (see $dir/sim.log)"
    SIM="http://127.0.0.1:$(cat "$dir/sim.port")"
}

stop_sim() {
    stop_pid "$SIM_PID"
}

# serve_env: the variables every run gets (on top of the scenario's own); the service runs
# under `env -i`, so nothing from the caller's environment leaks into a result.
serve_env() {
    BASE_ENV=(PATH="$PATH" DATABASE_URL="$DB_URL" LOG_LEVEL=warn STATS_ADDR=127.0.0.1
        GEMINI_API_KEY="$KEY" GROQ_API_KEY="$KEY"
        GEMINI_BASE_URL="$SIM/gemini/v1beta" GROQ_BASE_URL="$SIM/groq/openai/v1")
}

# start_serve DIR TAG ENV...: `serve --drain` under GNU time (its own rusage: user, sys,
# max RSS) and a timeout. Appends the wrapper's pid to SERVE_PIDS.
start_serve() {
    local dir=$1 tag=$2
    shift 2
    serve_env
    env -i "${BASE_ENV[@]}" "$@" /usr/bin/time -o "$dir/time-$tag.txt" -f '%e %U %S %M %x' \
        timeout -s TERM "$TIMEOUT_S" "$EV" serve --drain 2>"$dir/serve-$tag.log" &
    SERVE_PIDS+=($!)
}

# wait_serves: waits for every SERVE_PIDS entry; fails loudly on a non-zero exit.
wait_serves() {
    local p rc=0
    for p in "${SERVE_PIDS[@]}"; do
        wait "$p" || rc=$?
    done
    SERVE_PIDS=()
    [ $rc -eq 0 ] || echo "warning: a serve process exited with $rc (see serve-*.log)" >&2
    SERVE_RC=$rc
}

# time_field DIR TAG N: field N of GNU time's line (1 wall s, 2 user s, 3 sys s, 4 max RSS KiB, 5 exit).
time_field() { awk -v n="$3" 'END { print $n }' "$1/time-$2.txt"; }

# analyse_sim_log LOG WINDOW_MS: JSON per provider from the sim's request log: calls, first
# and last request start, last end (start = log time - handling time, ms), statuses, and the
# most requests that started within any WINDOW_MS.
analyse_sim_log() {
    awk '
    function days(y, m, d,   era, yoe, mp, doy, doe) {
        y -= (m <= 2); era = int((y >= 0 ? y : y - 399) / 400); yoe = y - era * 400
        mp = (m > 2) ? m - 3 : m + 9; doy = int((153 * mp + 2) / 5) + d - 1
        doe = yoe * 365 + int(yoe / 4) - int(yoe / 100) + doy
        return era * 146097 + doe - 719468
    }
    /"msg":"POST (gemini|groq)\// {
        ts = substr($0, 8, 24)
        t = ((days(substr(ts,1,4)+0, substr(ts,6,2)+0, substr(ts,9,2)+0) * 24 + substr(ts,12,2)) * 60 \
             + substr(ts,15,2)) * 60 + substr(ts,18,2)
        t = t * 1000 + substr(ts,21,3)
        prov = ($0 ~ /"msg":"POST gemini/) ? "gemini" : "groq"
        if (!match($0, /-> [0-9]+ in [0-9]+ ms/)) next
        split(substr($0, RSTART + 3, RLENGTH - 3), f, " ")
        printf "%s %.0f %.0f %s\n", prov, t - f[3], t, f[1]
    }' "$1" | sort -k2,2n | awk -v W="$2" '
    {
        p = $1; n[p]++; s[p, n[p]] = $2
        if (n[p] == 1) first[p] = $2
        last[p] = $2; if ($3 > lend[p]) lend[p] = $3
        st[p, $4]++; if (!((p, $4) in seen)) { seen[p, $4] = 1; codes[p] = codes[p] " " $4 }
    }
    END {
        printf "{"
        for (k = 1; k <= 2; k++) {
            p = (k == 1) ? "gemini" : "groq"
            best = 0; j = 1
            for (i = 1; i <= n[p]; i++) {
                while (s[p, i] - s[p, j] >= W) j++
                if (i - j + 1 > best) best = i - j + 1
            }
            printf "%s\"%s\":{\"calls\":%d", (k == 2 ? "," : ""), p, n[p] + 0
            if (n[p] > 0)
                printf ",\"first_start_ms\":%.0f,\"last_start_ms\":%.0f,\"last_end_ms\":%.0f", first[p], last[p], lend[p]
            printf ",\"max_in_window\":%d,\"status\":{", best
            m = split(codes[p], c, " "); sep = ""
            for (i = 1; i <= m; i++) { printf "%s\"%s\":%d", sep, c[i], st[p, c[i]]; sep = "," }
            printf "}}"
        }
        printf "}\n"
    }'
}

# sim_stats: the sim's own counters (GET /control/stats).
sim_stats() { curl -sf -m 5 "$SIM/control/stats"; }

# proc_cpu_ticks PID [children]: user+sys clock ticks of a live process (fields 14, 15 of
# /proc/PID/stat), plus those of its reaped children (16, 17) with "children".
proc_cpu_ticks() {
    local f
    f=$(cat "/proc/$1/stat" 2>/dev/null) || {
        echo 0
        return
    }
    f=${f##*) } # drop "pid (comm) ": fields now start at 3 (state)
    awk -v c="${2:-}" '{ t = $12 + $13; if (c == "children") t += $14 + $15; print t }' <<<"$f"
}

# pg_cpu_ticks: CPU of the whole Postgres cluster so far: the postmaster with its reaped
# children (backends that exited) plus its live children.
pg_cpu_ticks() {
    local pm t c
    pm=$(head -n 1 "$WORK/pg/data/postmaster.pid")
    t=$(proc_cpu_ticks "$pm" children)
    for c in $(pgrep -P "$pm" 2>/dev/null || true); do
        t=$((t + $(proc_cpu_ticks "$c")))
    done
    echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)

# db_xacts DB: transactions committed or rolled back in database DB so far (every
# autocommit statement is one), from the statistics of sessions that have ended.
db_xacts() {
    psql -tAq "$ADMIN_URL" -c "SELECT pg_stat_force_next_flush()" >/dev/null 2>&1 || true
    psql -tAq "$ADMIN_URL" -c "SELECT coalesce(sum(xact_commit + xact_rollback), 0)
        FROM pg_stat_database WHERE datname = '$1'"
}

# settle_backends DB: waits (up to 5 s) until no client backend of database DB is left, so a
# CPU snapshot neither misses a backend that is exiting nor counts one twice.
settle_backends() {
    local pm
    pm=$(head -n 1 "$WORK/pg/data/postmaster.pid")
    for _ in $(seq 100); do
        pgrep -P "$pm" -f "^postgres: postgres $1 " >/dev/null 2>&1 || return 0
        sleep 0.05
    done
}

# db_summary: final statuses and claim counts of every submission, as JSON.
db_summary() {
    psql -tAq "$DB_URL" -c "SELECT json_build_object(
        'total', count(*),
        'by_status', (SELECT coalesce(json_object_agg(status, n), '{}') FROM
                        (SELECT status, count(*) n FROM submissions GROUP BY status) x),
        'lost', count(*) FILTER (WHERE status IN ('pending', 'processing')),
        'claimed_more_than_once', count(*) FILTER (WHERE attempts > 1),
        'max_attempts_seen', max(attempts),
        'lease_expiries', sum(lease_expiries),
        'results_http_attempts', (SELECT coalesce(sum(http_attempts), 0) FROM validation_results),
        'results_cached', (SELECT count(*) FROM validation_results WHERE cached),
        'results_by_provider', (SELECT coalesce(json_object_agg(coalesce(provider, 'none'), n), '{}')
                                FROM (SELECT provider, count(*) n FROM validation_results
                                      GROUP BY provider) y))
        FROM submissions"
}

# settings_json ENV...: the scenario's settings (NAME=VALUE words) as one JSON object.
settings_json() {
    printf '%s\n' "$@" | jq -R 'capture("^(?<k>[^=]+)=(?<v>.*)$") | {(.k): .v}' | jq -s 'add // {}'
}

# write_result NAME JSON: bench/results/NAME.json (pretty) and the list for the table.
write_result() {
    mkdir -p "$RESULTS"
    printf '%s\n' "$2" | jq . >"$RESULTS/$1.json"
    DONE+=("$1")
}

host_json() {
    jq -n --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson cpus "$(nproc)" \
        --arg kernel "$(uname -r)" --arg commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        --arg when "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        '{when: $when, commit: $commit, cpus: $cpus, kernel: $kernel, loadavg_at_start: $load}'
}

# ---------------------------------------------------------------- scenarios

# rate_run NAME N OUTAGE(0|1): shared by rate-bound and outage.
rate_run() {
    local name=$1 n=$2 outage=$3 dir="$WORK/$1"
    mkdir -p "$dir"
    local rpm=600 sf=0.9 window_s=10 lat=200
    local groq_rpm=0
    [ "$outage" = 1 ] && groq_rpm=300
    new_db "bench_${name//-/_}"
    load "$n"
    start_sim "$dir" --gemini-rpm $rpm --gemini-window-s $window_s --groq-rpm $groq_rpm \
        --groq-window-s $window_s --latency-ms $lat
    pick_port
    local port=$REPLY
    local envs=(GEMINI_RPM_LIMIT="$rpm" RATE_LIMIT_SAFETY_FACTOR="$sf" GEMINI_MAX_CONCURRENT=16
        DEFAULT_MAX_WORKERS=6 STATS_PORT="$port")
    if [ "$outage" = 1 ]; then
        envs+=(GROQ_RPM_LIMIT="$groq_rpm" GROQ_RATE_LIMIT_SAFETY_FACTOR=0.8 GROQ_MAX_CONCURRENT=1
            GEMINI_CIRCUIT_BREAKER_COOLDOWN=5 GROQ_CIRCUIT_BREAKER_COOLDOWN=5)
    else
        envs+=(GROQ_MAX_CONCURRENT=16)
    fi
    local rate
    rate=$(awk -v r=$rpm -v f=$sf 'BEGIN { printf "%.6f", r * f / 60 }')
    say "$name: $n submissions, Gemini limit $rpm RPM x $sf = $rate calls/s, latency ${lat} ms"

    SERVE_PIDS=()
    now_ms
    local t_serve=$REPLY
    start_serve "$dir" 1 "${envs[@]}"

    local poll_pid="" ctl_pid=""
    if [ "$outage" = 1 ]; then
        # Breaker state of /stats every 100 ms, with our clock.
        (
            while :; do
                now_ms
                j=$(curl -s -m 1 "http://127.0.0.1:$port/stats" 2>/dev/null | tr -d '\n') || true
                [ -n "$j" ] && printf '%s %s\n' "$REPLY" "$j"
                sleep 0.1
            done
        ) >"$dir/polls.txt" &
        poll_pid=$!
        # The outage: Gemini overloaded during the middle third of the fault-free duration
        # (n x 3 calls at the effective rate), counted from the first Gemini request.
        local third_ms
        third_ms=$(awk -v n="$n" -v r="$rate" 'BEGIN { printf "%.0f", n * 3 / r * 1000 / 3 }')
        (
            for _ in $(seq 600); do
                c=$(curl -s -m 1 "$SIM/control/stats" | jq -r '.gemini.requests' 2>/dev/null || echo 0)
                [ "${c:-0}" -gt 0 ] && break
                sleep 0.05
            done
            now_ms
            echo "first_seen $REPLY"
            sleep "$(awk -v t="$third_ms" 'BEGIN { printf "%.3f", t / 1000 }')"
            curl -sf -m 5 -XPOST "$SIM/control/gemini" -d '{"fault":"overloaded"}' >/dev/null
            now_ms
            echo "outage_start $REPLY"
            sleep "$(awk -v t="$third_ms" 'BEGIN { printf "%.3f", t / 1000 }')"
            curl -sf -m 5 -XPOST "$SIM/control/gemini" -d '{"fault":"none"}' >/dev/null
            now_ms
            echo "outage_end $REPLY"
        ) >"$dir/outage.txt" &
        ctl_pid=$!
    fi

    wait_serves
    now_ms
    local t_done=$REPLY
    if [ -n "$ctl_pid" ]; then
        # The run may end before the outage does (it should not); never leave it running.
        stop_pid "$ctl_pid"
        stop_pid "$poll_pid"
    fi
    local sims calls db
    sims=$(sim_stats)
    stop_sim
    calls=$(analyse_sim_log "$dir/sim.log" $((window_s * 1000)))
    db=$(db_summary)
    local wall user sys rss
    wall=$(time_field "$dir" 1 1)
    user=$(time_field "$dir" 1 2)
    sys=$(time_field "$dir" 1 3)
    rss=$(time_field "$dir" 1 4)

    local common
    common=$(jq -n --arg name "$name" --argjson n "$n" --argjson host "$(host_json)" \
        --argjson settings "$(settings_json "${envs[@]}" STAGGER_MIN_MS=100 STAGGER_MAX_MS=500 \
            WORKER_STAGGER_MS=250)" \
        --arg simflags "--gemini-rpm $rpm --gemini-window-s $window_s --groq-rpm $groq_rpm --groq-window-s $window_s --latency-ms $lat" \
        --argjson sim "$sims" --argjson calls "$calls" --argjson db "$db" \
        --argjson wall "$wall" --argjson user "$user" --argjson sys "$sys" --argjson rss "$rss" \
        --argjson rate "$rate" --argjson serve_rc "$SERVE_RC" \
        '{scenario: $name, submissions: $n, host: $host, settings: $settings, sim_flags: $simflags,
          configured_rate_per_s: $rate, serve_exit: $serve_rc,
          serve: {wall_s: $wall, user_s: $user, sys_s: $sys, max_rss_kib: $rss},
          sim_calls: $calls, sim_stats: {gemini: ($sim.gemini | del(.last_malformed)),
                                         groq: ($sim.groq | del(.last_malformed))},
          db: $db}')

    if [ "$outage" = 0 ]; then
        RESULT=$(jq '. as $r | $r.sim_calls.gemini as $g
            | (if $g.calls > 1 then ($g.calls - 1) / (($g.last_start_ms - $g.first_start_ms) / 1000) else 0 end) as $ach
            | ($r.sim_stats.gemini.rate_limited + $r.sim_stats.groq.rate_limited) as $r429
            | ($r.sim_stats.gemini.max_in_flight) as $mif
            | . + {figures: {
                achieved_calls_per_s: $ach,
                efficiency: ($ach / $r.configured_rate_per_s),
                gemini_calls: $g.calls, groq_calls: $r.sim_calls.groq.calls,
                steady_span_s: (($g.last_start_ms - $g.first_start_ms) / 1000),
                wall_s: $r.serve.wall_s,
                http_429: $r429,
                max_calls_in_any_window: $g.max_in_window,
                window_allows: (600 * 10 / 60 | floor),
                gemini_max_in_flight: $mif,
                lost: $r.db.lost},
              targets: [
                {name: "efficiency >= 0.95", value: ($ach / $r.configured_rate_per_s),
                 met: (($ach / $r.configured_rate_per_s) >= 0.95)},
                {name: "zero 429s", value: $r429, met: ($r429 == 0)},
                {name: "no cap exceeded (gemini <= 16)", value: $mif, met: ($mif <= 16)},
                {name: "no submission lost", value: $r.db.lost, met: ($r.db.lost == 0)}]}' <<<"$common")
    else
        local first_seen out_start out_end
        first_seen=$(awk '$1 == "first_seen" { print $2 }' "$dir/outage.txt")
        out_start=$(awk '$1 == "outage_start" { print $2 }' "$dir/outage.txt")
        out_end=$(awk '$1 == "outage_end" { print $2 }' "$dir/outage.txt")
        [ -n "$out_start" ] || out_start=null
        [ -n "$out_end" ] || out_end=$t_done
        # Breaker transitions (Gemini and Groq) from the polls, with our timestamps.
        local trans
        trans=$(awk '{ t = $1; $1 = ""; print "{\"t\":" t ",\"s\":" $0 "}" }' "$dir/polls.txt" |
            jq -s -c '[.[] | {t, g: .s.providers.gemini.breaker, q: .s.providers.groq.breaker}]
                | reduce .[] as $p ({prev_g: null, prev_q: null, out: []};
                    (if $p.g != .prev_g then .out += [{t: $p.t, provider: "gemini", to: $p.g}] else . end)
                    | (if $p.q != .prev_q then .out += [{t: $p.t, provider: "groq", to: $p.q}] else . end)
                    | .prev_g = $p.g | .prev_q = $p.q) | .out')
        local during
        during=$(psql -tAq "$DB_URL" -c "SELECT json_build_object(
            'judged', count(*),
            'judged_via_groq', count(*) FILTER (WHERE via_groq),
            'validated', count(*) FILTER (WHERE status = 'validated'))
            FROM (SELECT s.id, s.status, bool_or(r.provider = 'groq') via_groq,
                         max(extract(epoch FROM r.created_at) * 1000) done_ms
                  FROM submissions s JOIN validation_results r ON r.submission_id = s.id
                  WHERE s.status IN ('validated', 'rejected') GROUP BY s.id, s.status) x
            WHERE done_ms BETWEEN $out_start AND $out_end")
        RESULT=$(jq --argjson first "${first_seen:-null}" --argjson os "$out_start" \
            --argjson oe "$out_end" --argjson trans "$trans" --argjson during "$during" \
            --argjson tserve "$t_serve" '. as $r
            | ([$trans[] | select(.provider == "gemini" and .to == "open" and .t >= $os)][0].t) as $open
            | ([$trans[] | select(.provider == "gemini" and .to == "closed" and .t >= $oe)][0].t) as $closed
            | ($r.sim_stats.gemini.rate_limited + $r.sim_stats.groq.rate_limited) as $r429
            | . + {outage: {first_gemini_call_seen_ms: $first, start_ms: $os, end_ms: $oe,
                            duration_s: (($oe - $os) / 1000), serve_started_ms: $tserve,
                            breaker_transitions: [$trans[] | .t_rel_outage_s = ((.t - $os) / 1000)]},
              figures: {
                judged_during_outage: $during.judged,
                judged_during_outage_via_groq: $during.judged_via_groq,
                outage_start_to_breaker_open_s: (if $open then ($open - $os) / 1000 else null end),
                recovery_to_breaker_closed_s: (if $closed then ($closed - $oe) / 1000 else null end),
                http_429: $r429,
                gemini_503: ($r.sim_calls.gemini.status["503"] // 0),
                groq_calls: $r.sim_calls.groq.calls,
                fallbacks_results_groq: ($r.db.results_by_provider.groq // 0),
                needs_review: ($r.db.by_status.needs_review // 0),
                wall_s: $r.serve.wall_s,
                lost: $r.db.lost},
              targets: [
                {name: "0 lost (every submission final)", value: $r.db.lost, met: ($r.db.lost == 0)}]}' \
            <<<"$common")
    fi
    write_result "$name" "$RESULT"
}

scenario_rate_bound() { rate_run rate-bound 150 0; }
scenario_outage() { rate_run outage 150 1; }

scenario_concurrency_bound() {
    local name=concurrency-bound n=60 dir="$WORK/concurrency-bound" lat=1000 cap=2
    mkdir -p "$dir"
    new_db bench_concurrency_bound
    load "$n"
    start_sim "$dir" --gemini-rpm 0 --groq-rpm 0 --latency-ms $lat
    local envs=(GEMINI_RPM_LIMIT=0 GROQ_RPM_LIMIT=0 GEMINI_MAX_CONCURRENT="$cap" GROQ_MAX_CONCURRENT=1
        DEFAULT_MAX_WORKERS=6 STATS_PORT=0)
    say "$name: $n submissions, Gemini cap $cap, latency ${lat} ms, no RPM limit"
    SERVE_PIDS=()
    start_serve "$dir" 1 "${envs[@]}"
    wait_serves
    local sims calls db
    sims=$(sim_stats)
    stop_sim
    calls=$(analyse_sim_log "$dir/sim.log" 1000)
    db=$(db_summary)
    RESULT=$(jq -n --arg name "$name" --argjson n "$n" --argjson host "$(host_json)" \
        --argjson settings "$(settings_json "${envs[@]}" STAGGER_MIN_MS=100 STAGGER_MAX_MS=500 \
            WORKER_STAGGER_MS=250)" \
        --arg simflags "--gemini-rpm 0 --groq-rpm 0 --latency-ms $lat" \
        --argjson sim "$sims" --argjson calls "$calls" --argjson db "$db" \
        --argjson wall "$(time_field "$dir" 1 1)" --argjson cap "$cap" --argjson lat "$lat" \
        --argjson serve_rc "$SERVE_RC" '
        $calls.gemini as $g
        | ($g.calls / (($g.last_end_ms - $g.first_start_ms) / 1000)) as $ach
        | ($cap / ($lat / 1000)) as $ideal
        | ($sim.gemini.rate_limited + $sim.groq.rate_limited) as $r429
        | {scenario: $name, submissions: $n, host: $host, settings: $settings, sim_flags: $simflags,
           serve_exit: $serve_rc, serve: {wall_s: $wall}, sim_calls: $calls,
           sim_stats: {gemini: ($sim.gemini | del(.last_malformed)), groq: ($sim.groq | del(.last_malformed))},
           db: $db,
           figures: {achieved_calls_per_s: $ach, ideal_calls_per_s: $ideal, efficiency: ($ach / $ideal),
                     gemini_calls: $g.calls, groq_calls: $calls.groq.calls,
                     busy_span_s: (($g.last_end_ms - $g.first_start_ms) / 1000), wall_s: $wall,
                     gemini_max_in_flight: $sim.gemini.max_in_flight,
                     groq_max_in_flight: $sim.groq.max_in_flight, http_429: $r429, lost: $db.lost},
           targets: [
             {name: "efficiency >= 0.95", value: ($ach / $ideal), met: (($ach / $ideal) >= 0.95)},
             {name: "zero 429s", value: $r429, met: ($r429 == 0)},
             {name: "no cap exceeded (gemini <= 2, groq <= 1)",
              value: (($sim.gemini.max_in_flight | tostring) + "/" + ($sim.groq.max_in_flight | tostring)),
              met: ($sim.gemini.max_in_flight <= $cap and $sim.groq.max_in_flight <= 1)},
             {name: "no submission lost", value: $db.lost, met: ($db.lost == 0)}]}')
    write_result "$name" "$RESULT"
}

# overhead_run NAME NPROCS: zero latency, no limits, caps 6, no staggers; sets RESULT_RAW.
overhead_run() {
    local name=$1 procs=$2 n=${3:-2000} dir="$WORK/$1"
    mkdir -p "$dir"
    new_db "bench_${name//-/_}"
    load "$n"
    start_sim "$dir" --gemini-rpm 0 --groq-rpm 0 --latency-ms 0
    local envs=(GEMINI_RPM_LIMIT=0 GROQ_RPM_LIMIT=0 GEMINI_MAX_CONCURRENT=6 GROQ_MAX_CONCURRENT=6
        DEFAULT_MAX_WORKERS=6 STAGGER_MIN_MS=0 STAGGER_MAX_MS=0 WORKER_STAGGER_MS=0 STATS_PORT=0
        "${OVERHEAD_EXTRA[@]}")
    say "$name: $n submissions, $procs serve process(es), zero latency, no limits ${OVERHEAD_EXTRA[*]}"
    SERVE_PIDS=()
    local pg0 sim0
    settle_backends "bench_${name//-/_}"
    pg0=$(pg_cpu_ticks)
    sim0=$(proc_cpu_ticks "$SIM_PID")
    local x0
    x0=$(db_xacts "bench_${name//-/_}")
    now_ms
    local t0=$REPLY i
    for i in $(seq "$procs"); do
        start_serve "$dir" "$i" "${envs[@]}"
    done
    wait_serves
    now_ms
    local t1=$REPLY
    local pg_s sim_s
    settle_backends "bench_${name//-/_}"
    pg_s=$(awk -v a="$pg0" -v b="$(pg_cpu_ticks)" -v hz="$CLK_TCK" 'BEGIN { print (b - a) / hz }')
    sim_s=$(awk -v a="$sim0" -v b="$(proc_cpu_ticks "$SIM_PID")" -v hz="$CLK_TCK" 'BEGIN { print (b - a) / hz }')
    local xacts
    xacts=$(($(db_xacts "bench_${name//-/_}") - x0))
    local sims db procs_json="[]"
    sims=$(sim_stats)
    stop_sim
    db=$(db_summary)
    for i in $(seq "$procs"); do
        procs_json=$(jq -c --argjson w "$(time_field "$dir" "$i" 1)" --argjson u "$(time_field "$dir" "$i" 2)" \
            --argjson s "$(time_field "$dir" "$i" 3)" --argjson m "$(time_field "$dir" "$i" 4)" \
            '. + [{wall_s: $w, user_s: $u, sys_s: $s, max_rss_kib: $m}]' <<<"$procs_json")
    done
    RESULT_RAW=$(jq -n --arg name "$name" --argjson n "$n" --argjson host "$(host_json)" \
        --argjson settings "$(settings_json "${envs[@]}")" \
        --arg simflags "--gemini-rpm 0 --groq-rpm 0 --latency-ms 0" \
        --argjson sim "$sims" --argjson db "$db" --argjson procs "$procs_json" \
        --argjson span "$((t1 - t0))" --argjson serve_rc "$SERVE_RC" \
        --argjson pg_s "$pg_s" --argjson sim_s "$sim_s" --argjson cpus "$(nproc)" \
        --argjson xacts "$xacts" '
        ([$procs[] | .user_s + .sys_s] | add) as $cpu
        | {scenario: $name, submissions: $n, processes: ($procs | length), host: $host,
           settings: $settings, sim_flags: $simflags, serve_exit: $serve_rc, serve: $procs,
           sim_stats: {gemini: ($sim.gemini | del(.last_malformed)), groq: ($sim.groq | del(.last_malformed))},
           db: $db,
           figures: {wall_s: ($span / 1000),
                     submissions_per_s: ($n / ($span / 1000)),
                     cpu_ms_per_submission: ($cpu * 1000 / $n),
                     cpu_user_s: ([$procs[].user_s] | add), cpu_sys_s: ([$procs[].sys_s] | add),
                     peak_rss_mib: ([$procs[].max_rss_kib] | max / 1024),
                     box_cpu_s_validator: $cpu, box_cpu_s_postgres: $pg_s,
                     box_cpu_s_provider_sim: $sim_s, box_cpu_s_available: ($cpus * $span / 1000),
                     sim_requests: ($sim.gemini.requests + $sim.groq.requests),
                     db_transactions: $xacts,
                     db_transactions_per_provider_call:
                       ($xacts / ([($sim.gemini.requests + $sim.groq.requests), 1] | max)),
                     http_429: ($sim.gemini.rate_limited + $sim.groq.rate_limited),
                     lost: $db.lost}}')
}

scenario_overhead() {
    overhead_run overhead 1
    RESULT=$(jq '. as $r | .figures as $f | . + {targets: [
        {name: "CPU <= 2 ms per submission", value: $f.cpu_ms_per_submission,
         met: ($f.cpu_ms_per_submission <= 2)},
        {name: "peak RSS <= 64 MB (6 workers)", value: $f.peak_rss_mib, met: ($f.peak_rss_mib <= 64)},
        {name: "all validated", value: ($r.db.by_status.validated // 0),
         met: (($r.db.by_status.validated // 0) == $r.submissions)}]}' <<<"$RESULT_RAW")
    write_result overhead "$RESULT"
    OVERHEAD_SPS=$(jq '.figures.submissions_per_s' <<<"$RESULT")
}

scenario_replicas() {
    if [ -z "${OVERHEAD_SPS:-}" ]; then
        say "replicas: measuring the single-process baseline first (the overhead run)"
        overhead_run replicas-baseline 1
        OVERHEAD_SPS=$(jq '.figures.submissions_per_s' <<<"$RESULT_RAW")
    fi
    overhead_run replicas 3
    RESULT=$(jq --argjson one "$OVERHEAD_SPS" '. as $r | .figures as $f
        | ($r.db.claimed_more_than_once) as $dbl
        | ($f.sim_requests - 3 * $r.submissions) as $extra
        | . + {figures: ($f + {one_process_submissions_per_s: $one,
                                throughput_vs_one_process: ($f.submissions_per_s / $one),
                                double_processed: $dbl, extra_provider_calls: $extra}),
               targets: [
                 {name: "0 double-processed (attempts > 1)", value: $dbl, met: ($dbl == 0)},
                 {name: "0 extra provider calls (sim requests - 3 x N)", value: $extra, met: ($extra == 0)},
                 {name: "no submission lost", value: $r.db.lost, met: ($r.db.lost == 0)}]}' \
        <<<"$RESULT_RAW")
    write_result replicas "$RESULT"
}

# ---------------------------------------------------------------- the organisers' API

# api: N uploads of one ~100 KB PDF and one ~50 KB PNG each through POST
# /v1/events/ID/submissions (BENCH_API_CLIENTS curl processes at a time), judged by the same
# serve at zero provider latency; then the same N loaded by SQL and judged (the overhead
# path) as the baseline. Added CPU per submission = serve CPU per submission through the
# API minus the baseline's.
scenario_api() {
    local n=${BENCH_API_N:-400} par=${BENCH_API_CLIENTS:-4} dir="$WORK/api"
    mkdir -p "$dir/uploads"
    overhead_run api-baseline 1 "$n"
    local base
    base=$(jq -c '.figures' <<<"$RESULT_RAW")
    new_db bench_api
    "$GEN" --sample "$dir" >/dev/null
    start_sim "$dir" --gemini-rpm 0 --groq-rpm 0 --latency-ms 0
    local token port pid
    token=$(DATABASE_URL=$DB_URL "$EV" token create --name bench --event "$EVENT_ID" | head -n 1)
    pick_port
    port=$REPLY
    local envs=(GEMINI_RPM_LIMIT=0 GROQ_RPM_LIMIT=0 GEMINI_MAX_CONCURRENT=6 GROQ_MAX_CONCURRENT=6
        DEFAULT_MAX_WORKERS=6 STAGGER_MIN_MS=0 STAGGER_MAX_MS=0 WORKER_STAGGER_MS=0 STATS_PORT=0
        UPLOAD_DIR="$dir/uploads" API_ADDR=127.0.0.1 API_PORT="$port" API_UPLOADS_PER_MINUTE=0)
    serve_env
    env -i "${BASE_ENV[@]}" "${envs[@]}" "$EV" serve 2>"$dir/serve.log" &
    pid=$!
    for _ in $(seq 200); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && break
        sleep 0.05
    done
    say "api: $n uploads (PDF $(stat -c %s "$dir/sample.pdf") B + PNG $(stat -c %s "$dir/sample.png") B), $par clients"
    local pg0 t0 t1 t2 cpu_up cpu_all
    settle_backends bench_api
    pg0=$(pg_cpu_ticks)
    now_ms
    t0=$REPLY
    seq 1 "$n" | xargs -P "$par" -I{} curl -s -o /dev/null -w '%{http_code}\n' \
        -H "Authorization: Bearer $token" -F "title=Solar bus stops #{}" \
        -F "description=Retrofitting 40 bus stops with solar canopies and batteries (bench {})." \
        -F "pdf=@$dir/sample.pdf" -F "image=@$dir/sample.png" \
        "http://127.0.0.1:$port/v1/events/$EVENT_ID/submissions" >"$dir/codes.txt"
    now_ms
    t1=$REPLY
    cpu_up=$(proc_cpu_ticks "$pid")
    for _ in $(seq $((TIMEOUT_S * 10))); do
        [ "$(psql -tAq "$DB_URL" -c "SELECT count(*) FROM submissions WHERE status IN ('pending', 'processing')")" = 0 ] && break
        sleep 0.1
    done
    now_ms
    t2=$REPLY
    cpu_all=$(proc_cpu_ticks "$pid")
    local rss
    rss=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
    stop_pid "$pid"
    settle_backends bench_api
    local pg_s
    pg_s=$(awk -v a="$pg0" -v b="$(pg_cpu_ticks)" -v hz="$CLK_TCK" 'BEGIN { print (b - a) / hz }')
    stop_sim
    local accepted db
    accepted=$(grep -c '^202$' "$dir/codes.txt" || true)
    db=$(db_summary)
    RESULT=$(jq -n --argjson n "$n" --argjson par "$par" --argjson host "$(host_json)" \
        --argjson settings "$(settings_json "${envs[@]}")" --argjson base "$base" --argjson db "$db" \
        --argjson accepted "$accepted" --argjson up_ms "$((t1 - t0))" --argjson all_ms "$((t2 - t0))" \
        --argjson cpu_up "$cpu_up" --argjson cpu_all "$cpu_all" --argjson hz "$CLK_TCK" \
        --argjson rss "$rss" --argjson pg_s "$pg_s" --argjson cpus "$(nproc)" \
        --argjson pdf "$(stat -c %s "$dir/sample.pdf")" --argjson png "$(stat -c %s "$dir/sample.png")" '
        ($cpu_all / $hz * 1000 / $n) as $api_cpu
        | {scenario: "api", submissions: $n, clients: $par, host: $host, settings: $settings,
           file_bytes: {pdf: $pdf, png: $png}, db: $db, baseline: $base,
           figures: {uploads_accepted: $accepted,
                     upload_wall_s: ($up_ms / 1000),
                     uploads_per_s: ($n / ($up_ms / 1000)),
                     upload_mb_per_s: ($n * ($pdf + $png) / 1048576 / ($up_ms / 1000)),
                     judged_wall_s: ($all_ms / 1000),
                     submissions_per_s_end_to_end: ($n / ($all_ms / 1000)),
                     cpu_ms_per_submission_upload_phase: ($cpu_up / $hz * 1000 / $n),
                     cpu_ms_per_submission_api: $api_cpu,
                     cpu_ms_per_submission_sql_loaded: $base.cpu_ms_per_submission,
                     added_cpu_ms_per_submission: ($api_cpu - $base.cpu_ms_per_submission),
                     box_cpu_s_postgres: $pg_s,
                     box_cpu_s_available: ($cpus * $all_ms / 1000),
                     peak_rss_mib: ($rss / 1024),
                     lost: $db.lost},
           targets: [
             {name: "every upload accepted (202)", value: $accepted, met: ($accepted == $n)},
             {name: "all validated", value: ($db.by_status.validated // 0),
              met: (($db.by_status.validated // 0) == $n)}]}')
    write_result api "$RESULT"
}

# ---------------------------------------------------------------- cluster scenarios
#
# Several `serve --drain` on one database, every one configured with the WHOLE quota (as a
# copied configuration is): the replicas must behave as one client (docs/cluster.md). Each
# scenario also runs one process on the same load, so the figures are ratios.

# replicas_rate_run NAME PROCS: the rate-bound load on PROCS processes; sets RESULT_RAW.
replicas_rate_run() {
    local name=$1 procs=$2 n=150 dir="$WORK/$1"
    local rpm=600 sf=0.9 window_s=10 lat=200
    mkdir -p "$dir"
    new_db "bench_${name//-/_}"
    load "$n"
    start_sim "$dir" --gemini-rpm $rpm --gemini-window-s $window_s --groq-rpm 0 --latency-ms $lat
    local envs=(GEMINI_RPM_LIMIT="$rpm" RATE_LIMIT_SAFETY_FACTOR="$sf" GEMINI_MAX_CONCURRENT=16
        GROQ_MAX_CONCURRENT=16 DEFAULT_MAX_WORKERS=6 STATS_PORT=0)
    local rate
    rate=$(awk -v r=$rpm -v f=$sf 'BEGIN { printf "%.6f", r * f / 60 }')
    say "$name: $n submissions, $procs process(es), each with Gemini $rpm RPM x $sf"
    SERVE_PIDS=()
    local x0 t0 i
    x0=$(db_xacts "bench_${name//-/_}")
    now_ms
    t0=$REPLY
    for i in $(seq "$procs"); do
        start_serve "$dir" "$i" "${envs[@]}"
    done
    wait_serves
    now_ms
    local span=$((REPLY - t0)) sims calls db xacts
    settle_backends "bench_${name//-/_}"
    xacts=$(($(db_xacts "bench_${name//-/_}") - x0))
    sims=$(sim_stats)
    stop_sim
    calls=$(analyse_sim_log "$dir/sim.log" $((window_s * 1000)))
    db=$(db_summary)
    RESULT_RAW=$(jq -n --arg name "$name" --argjson n "$n" --argjson procs "$procs" \
        --argjson host "$(host_json)" --argjson settings "$(settings_json "${envs[@]}")" \
        --arg simflags "--gemini-rpm $rpm --gemini-window-s $window_s --groq-rpm 0 --latency-ms $lat" \
        --argjson sim "$sims" --argjson calls "$calls" --argjson db "$db" --argjson rate "$rate" \
        --argjson span "$span" --argjson xacts "$xacts" --argjson serve_rc "$SERVE_RC" \
        --argjson allows "$((rpm * window_s / 60))" '
        $calls.gemini as $g
        | (if $g.calls > 1 then ($g.calls - 1) / (($g.last_start_ms - $g.first_start_ms) / 1000) else 0 end) as $ach
        | {scenario: $name, submissions: $n, processes: $procs, host: $host, settings: $settings,
           sim_flags: $simflags, configured_rate_per_s: $rate, serve_exit: $serve_rc,
           sim_calls: $calls, sim_stats: {gemini: ($sim.gemini | del(.last_malformed)),
                                          groq: ($sim.groq | del(.last_malformed))}, db: $db,
           figures: {achieved_calls_per_s: $ach, efficiency: ($ach / $rate),
                     wall_s: ($span / 1000), gemini_calls: $g.calls, groq_calls: $calls.groq.calls,
                     http_429: ($sim.gemini.rate_limited + $sim.groq.rate_limited),
                     max_calls_in_any_window: $g.max_in_window, window_allows: $allows,
                     db_transactions_per_gemini_call: ($xacts / ([$g.calls, 1] | max)),
                     lost: $db.lost}}')
}

scenario_replicas_rate_bound() {
    replicas_rate_run replicas-rate-bound-one 1
    local one=$RESULT_RAW
    write_result replicas-rate-bound-one "$(jq '. + {targets: []}' <<<"$one")"
    replicas_rate_run replicas-rate-bound 3
    RESULT=$(jq --argjson one "$one" '. as $r | .figures as $f | $one.figures as $o
        | . + {figures: ($f + {one_process_calls_per_s: $o.achieved_calls_per_s,
                               one_process_wall_s: $o.wall_s,
                               rate_vs_one_process: ($f.achieved_calls_per_s / $o.achieved_calls_per_s),
                               wall_vs_one_process: ($f.wall_s / $o.wall_s),
                               one_process_db_transactions_per_gemini_call: $o.db_transactions_per_gemini_call}),
          targets: [
            {name: "zero 429s", value: $f.http_429, met: ($f.http_429 == 0)},
            {name: "no fallback calls (Groq)", value: $f.groq_calls, met: ($f.groq_calls == 0)},
            {name: "efficiency >= 0.98 of RPM x safety", value: $f.efficiency, met: ($f.efficiency >= 0.98)},
            {name: "rate >= 0.97 x one process", value: ($f.achieved_calls_per_s / $o.achieved_calls_per_s),
             met: (($f.achieved_calls_per_s / $o.achieved_calls_per_s) >= 0.97)},
            {name: "wall <= 1.05 x one process", value: ($f.wall_s / $o.wall_s),
             met: (($f.wall_s / $o.wall_s) <= 1.05)},
            {name: "window never above the quota", value: $f.max_calls_in_any_window,
             met: ($f.max_calls_in_any_window <= $f.window_allows)},
            {name: "no submission lost", value: $f.lost, met: ($f.lost == 0)}]}' <<<"$RESULT_RAW")
    write_result replicas-rate-bound "$RESULT"
}

scenario_replicas_concurrency() {
    local name=replicas-concurrency n=40 dir="$WORK/replicas-concurrency" lat=1000 procs=3 i
    mkdir -p "$dir"
    new_db bench_replicas_concurrency
    load "$n"
    start_sim "$dir" --gemini-rpm 0 --groq-rpm 0 --latency-ms $lat
    local envs=(GEMINI_RPM_LIMIT=0 GROQ_RPM_LIMIT=0 GEMINI_MAX_CONCURRENT=2 GROQ_MAX_CONCURRENT=1
        DEFAULT_MAX_WORKERS=6 STATS_PORT=0)
    say "$name: $n submissions, $procs processes, each with caps 2 (Gemini) and 1 (Groq), latency ${lat} ms"
    SERVE_PIDS=()
    for i in $(seq $procs); do
        start_serve "$dir" "$i" "${envs[@]}"
    done
    wait_serves
    local sims calls db
    sims=$(sim_stats)
    stop_sim
    calls=$(analyse_sim_log "$dir/sim.log" 1000)
    db=$(db_summary)
    RESULT=$(jq -n --arg name "$name" --argjson n "$n" --argjson host "$(host_json)" \
        --argjson settings "$(settings_json "${envs[@]}")" --argjson procs $procs \
        --arg simflags "--gemini-rpm 0 --groq-rpm 0 --latency-ms $lat" \
        --argjson sim "$sims" --argjson calls "$calls" --argjson db "$db" --argjson lat "$lat" \
        --argjson serve_rc "$SERVE_RC" '
        $calls.gemini as $g
        | ($g.calls / (($g.last_end_ms - $g.first_start_ms) / 1000)) as $ach
        | (2 / ($lat / 1000)) as $ideal
        | {scenario: $name, submissions: $n, processes: $procs, host: $host, settings: $settings,
           sim_flags: $simflags, serve_exit: $serve_rc, sim_calls: $calls,
           sim_stats: {gemini: ($sim.gemini | del(.last_malformed)), groq: ($sim.groq | del(.last_malformed))},
           db: $db,
           figures: {achieved_calls_per_s: $ach, ideal_calls_per_s: $ideal, efficiency: ($ach / $ideal),
                     gemini_calls: $g.calls, groq_calls: $calls.groq.calls,
                     gemini_max_in_flight: $sim.gemini.max_in_flight,
                     groq_max_in_flight: $sim.groq.max_in_flight,
                     http_429: ($sim.gemini.rate_limited + $sim.groq.rate_limited), lost: $db.lost},
           targets: [
             {name: "sim max in flight <= caps (gemini 2, groq 1)",
              value: (($sim.gemini.max_in_flight | tostring) + "/" + ($sim.groq.max_in_flight | tostring)),
              met: ($sim.gemini.max_in_flight <= 2 and $sim.groq.max_in_flight <= 1)},
             {name: "no submission lost", value: $db.lost, met: ($db.lost == 0)}]}')
    write_result "$name" "$RESULT"
}

# replicas_outage_run NAME PROCS: the outage load (Gemini overloaded in the middle third) on
# PROCS processes; sets RESULT_RAW.
replicas_outage_run() {
    local name=$1 procs=$2 n=150 dir="$WORK/$1" i
    local rpm=600 sf=0.9 window_s=10 lat=200 groq_rpm=300
    mkdir -p "$dir"
    new_db "bench_${name//-/_}"
    load "$n"
    start_sim "$dir" --gemini-rpm $rpm --gemini-window-s $window_s --groq-rpm $groq_rpm \
        --groq-window-s $window_s --latency-ms $lat
    local envs=(GEMINI_RPM_LIMIT="$rpm" RATE_LIMIT_SAFETY_FACTOR="$sf" GEMINI_MAX_CONCURRENT=16
        GROQ_RPM_LIMIT="$groq_rpm" GROQ_RATE_LIMIT_SAFETY_FACTOR=0.8 GROQ_MAX_CONCURRENT=1
        GEMINI_CIRCUIT_BREAKER_COOLDOWN=5 GROQ_CIRCUIT_BREAKER_COOLDOWN=5 DEFAULT_MAX_WORKERS=6
        STATS_PORT=0)
    local rate third_ms
    rate=$(awk -v r=$rpm -v f=$sf 'BEGIN { printf "%.6f", r * f / 60 }')
    third_ms=$(awk -v n="$n" -v r="$rate" 'BEGIN { printf "%.0f", n * 3 / r * 1000 / 3 }')
    say "$name: $n submissions, $procs process(es), Gemini down for ${third_ms} ms mid-run"
    SERVE_PIDS=()
    for i in $(seq "$procs"); do
        start_serve "$dir" "$i" "${envs[@]}"
    done
    (
        for _ in $(seq 600); do
            c=$(curl -s -m 1 "$SIM/control/stats" | jq -r '.gemini.requests' 2>/dev/null || echo 0)
            [ "${c:-0}" -gt 0 ] && break
            sleep 0.05
        done
        sleep "$(awk -v t="$third_ms" 'BEGIN { printf "%.3f", t / 1000 }')"
        curl -sf -m 5 -XPOST "$SIM/control/gemini" -d '{"fault":"overloaded"}' >/dev/null
        now_ms
        echo "outage_start $REPLY"
        sleep "$(awk -v t="$third_ms" 'BEGIN { printf "%.3f", t / 1000 }')"
        curl -sf -m 5 -XPOST "$SIM/control/gemini" -d '{"fault":"none"}' >/dev/null
        now_ms
        echo "outage_end $REPLY"
    ) >"$dir/outage.txt" &
    local ctl_pid=$!
    wait_serves
    stop_pid "$ctl_pid"
    local sims calls db os oe
    sims=$(sim_stats)
    stop_sim
    calls=$(analyse_sim_log "$dir/sim.log" $((window_s * 1000)))
    db=$(db_summary)
    os=$(awk '$1 == "outage_start" { print $2 }' "$dir/outage.txt")
    oe=$(awk '$1 == "outage_end" { print $2 }' "$dir/outage.txt")
    RESULT_RAW=$(jq -n --arg name "$name" --argjson n "$n" --argjson procs "$procs" \
        --argjson host "$(host_json)" --argjson settings "$(settings_json "${envs[@]}")" \
        --argjson sim "$sims" --argjson calls "$calls" --argjson db "$db" \
        --argjson os "${os:-null}" --argjson oe "${oe:-null}" --argjson serve_rc "$SERVE_RC" '
        {scenario: $name, submissions: $n, processes: $procs, host: $host, settings: $settings,
         serve_exit: $serve_rc, sim_calls: $calls,
         sim_stats: {gemini: ($sim.gemini | del(.last_malformed)), groq: ($sim.groq | del(.last_malformed))},
         db: $db, outage: {start_ms: $os, end_ms: $oe,
                           duration_s: (if $os and $oe then ($oe - $os) / 1000 else null end)},
         figures: {gemini_calls_during_outage: ($calls.gemini.status["503"] // 0),
                   gemini_calls: $calls.gemini.calls, groq_calls: $calls.groq.calls,
                   http_429: ($sim.gemini.rate_limited + $sim.groq.rate_limited),
                   needs_review: ($db.by_status.needs_review // 0), lost: $db.lost}}')
}

scenario_replicas_outage() {
    replicas_outage_run replicas-outage-one 1
    local one=$RESULT_RAW
    write_result replicas-outage-one "$(jq '. + {targets: []}' <<<"$one")"
    replicas_outage_run replicas-outage 3
    # One process's calls during the outage, plus at most one half-open probe per
    # cool-down (5 s) of the outage for the whole cluster.
    RESULT=$(jq --argjson one "$one" '. as $r | .figures as $f | $one.figures as $o
        | ((($r.outage.duration_s // 0) / 5 | ceil) + 1) as $probes
        | . + {figures: ($f + {one_process_gemini_calls_during_outage: $o.gemini_calls_during_outage,
                               probes_allowed: $probes}),
          targets: [
            {name: "outage calls <= one process + probes",
             value: (($f.gemini_calls_during_outage | tostring) + " <= " + ($o.gemini_calls_during_outage | tostring) + " + " + ($probes | tostring)),
             met: ($f.gemini_calls_during_outage <= $o.gemini_calls_during_outage + $probes)},
            {name: "no submission lost", value: $f.lost, met: ($f.lost == 0)}]}' <<<"$RESULT_RAW")
    write_result replicas-outage "$RESULT"
}

# The price of coordinating, on the overhead load (no rate limit, caps 6): the same run with
# CLUSTER_COORDINATION off and on. Statements per provider call come from Postgres's own
# transaction count; CPU from the processes' accounting.
scenario_coordination_cost() {
    OVERHEAD_EXTRA=(CLUSTER_COORDINATION=false)
    overhead_run coordination-off 1
    local off=$RESULT_RAW
    OVERHEAD_EXTRA=(CLUSTER_COORDINATION=true)
    overhead_run coordination-on 1
    OVERHEAD_EXTRA=()
    RESULT=$(jq --argjson off "$off" '.figures as $f | $off.figures as $o
        | . + {scenario: "coordination-cost",
               figures: {submissions_per_s_on: $f.submissions_per_s, submissions_per_s_off: $o.submissions_per_s,
                         throughput_on_vs_off: ($f.submissions_per_s / $o.submissions_per_s),
                         cpu_ms_per_submission_on: $f.cpu_ms_per_submission,
                         cpu_ms_per_submission_off: $o.cpu_ms_per_submission,
                         postgres_cpu_s_on: $f.box_cpu_s_postgres, postgres_cpu_s_off: $o.box_cpu_s_postgres,
                         db_transactions_per_call_on: $f.db_transactions_per_provider_call,
                         db_transactions_per_call_off: $o.db_transactions_per_provider_call,
                         coordination_statements_per_call:
                           ($f.db_transactions_per_provider_call - $o.db_transactions_per_provider_call)},
               off_run: $off,
               targets: [
                 {name: "throughput >= 0.9 x uncoordinated", value: ($f.submissions_per_s / $o.submissions_per_s),
                  met: (($f.submissions_per_s / $o.submissions_per_s) >= 0.9)},
                 {name: "all validated", value: ($f.lost), met: ($f.lost == 0)}]}' <<<"$RESULT_RAW")
    write_result coordination-cost "$RESULT"
}

# ---------------------------------------------------------------- quota scenarios
#
# Each runs the same load twice on the same simulator settings: with the learned limits
# (ADAPTIVE_LIMITS=true, the design of docs/quota.md) and with the fixed rate they replace
# (ADAPTIVE_LIMITS=false). Q_SIM: simulator flags; Q_ENVS: service settings; Q_PROV: the
# provider whose quota binds; Q_CONTROL: a function run in the background once the first
# call reached the sim (it may change the sim's quota mid-run and logs "<name> <ms>" lines).

# calls_of LOG PROV: "start_ms status" of every request to PROV, sorted by start.
calls_of() {
    awk -v P="$2" '
    function days(y, m, d,   era, yoe, mp, doy, doe) {
        y -= (m <= 2); era = int((y >= 0 ? y : y - 399) / 400); yoe = y - era * 400
        mp = (m > 2) ? m - 3 : m + 9; doy = int((153 * mp + 2) / 5) + d - 1
        doe = yoe * 365 + int(yoe / 4) - int(yoe / 100) + doy
        return era * 146097 + doe - 719468
    }
    $0 ~ ("\"msg\":\"POST " P "/") {
        ts = substr($0, 8, 24)
        t = ((days(substr(ts,1,4)+0, substr(ts,6,2)+0, substr(ts,9,2)+0) * 24 + substr(ts,12,2)) * 60 \
             + substr(ts,15,2)) * 60 + substr(ts,18,2)
        t = t * 1000 + substr(ts,21,3)
        if (!match($0, /-> [0-9]+ in [0-9]+ ms/)) next
        split(substr($0, RSTART + 3, RLENGTH - 3), f, " ")
        printf "%.0f %s\n", t - f[3], f[1]
    }' "$1" | sort -n
}

# window_stats CALLS FROM_MS TO_MS: JSON {ok, r429, span_s, ok_per_s} of calls starting in
# [FROM, TO] (TO empty: to the last call).
window_stats() {
    awk -v a="$2" -v b="${3:-}" '
    $1 >= a && (b == "" || $1 <= b) { n++; if ($2 == 200) ok++; else if ($2 == 429) r++
                                      if (n == 1) f = $1; l = $1 }
    END { span = (b == "" ? l : b) - a; if (span <= 0) span = 1
          printf "{\"calls\":%d,\"ok\":%d,\"r429\":%d,\"span_s\":%.3f,\"ok_per_s\":%.4f}\n",
                 n, ok, r, span / 1000, ok / (span / 1000) }' "$1"
}

# quota_once NAME DESIGN N: one run; sets QRES (JSON).
quota_once() {
    local name=$1 design=$2 n=$3 dir="$WORK/$1-$2"
    mkdir -p "$dir"
    new_db "bench_${name//-/_}_$design"
    load "$n"
    start_sim "$dir" "${Q_SIM[@]}"
    pick_port
    local port=$REPLY adaptive=true
    [ "$design" = fixed ] && adaptive=false
    local base=("${Q_ENVS[@]}")
    # The design a scenario replaces may differ by more than the switch (no token limit).
    [ "$design" = fixed ] && [ ${#Q_FIXED_ENVS[@]} -gt 0 ] && base=("${Q_FIXED_ENVS[@]}")
    local envs=("${base[@]}" ADAPTIVE_LIMITS="$adaptive" STATS_PORT="$port")
    say "$name ($design): $n submissions, sim ${Q_SIM[*]}"
    SERVE_PIDS=()
    start_serve "$dir" 1 "${envs[@]}"
    (
        while :; do
            now_ms
            j=$(curl -s -m 1 "http://127.0.0.1:$port/stats" 2>/dev/null | tr -d '\n') || true
            [ -n "$j" ] && printf '%s %s\n' "$REPLY" "$j"
            sleep 0.2
        done
    ) >"$dir/polls.txt" &
    local poll_pid=$! ctl_pid=""
    # The simulator's own count of tokens in its last minute, every second.
    (
        while :; do
            now_ms
            j=$(curl -s -m 1 "$SIM/control/stats" 2>/dev/null | jq -c "[.gemini.tokens_minute, .groq.tokens_minute]" 2>/dev/null) || true
            [ -n "$j" ] && printf '%s %s\n' "$REPLY" "$j"
            sleep 1
        done
    ) >"$dir/sim-polls.txt" &
    local simpoll_pid=$!
    if [ -n "${Q_CONTROL:-}" ]; then
        (
            for _ in $(seq 1200); do
                c=$(curl -s -m 1 "$SIM/control/stats" | jq -r ".$Q_PROV.requests" 2>/dev/null || echo 0)
                [ "${c:-0}" -gt 0 ] && break
                sleep 0.05
            done
            "$Q_CONTROL"
        ) >"$dir/control.txt" &
        ctl_pid=$!
    fi
    wait_serves
    [ -n "$ctl_pid" ] && stop_pid "$ctl_pid"
    stop_pid "$poll_pid"
    stop_pid "$simpoll_pid"
    local sims db
    sims=$(sim_stats)
    stop_sim
    db=$(db_summary)
    calls_of "$dir/sim.log" "$Q_PROV" >"$dir/calls.txt"
    local first last
    first=$(awk 'NR == 1 { print $1 }' "$dir/calls.txt")
    last=$(awk 'END { print $1 }' "$dir/calls.txt")
    [ -n "$first" ] || die "$name ($design): no call reached $Q_PROV (see $dir)"
    # Breaker states and learned rates seen by the poller, for the binding provider.
    local polls
    polls=$(awk '{ t = $1; $1 = ""; print "{\"t\":" t ",\"s\":" $0 "}" }' "$dir/polls.txt" |
        jq -s -c --arg p "$Q_PROV" --argjson first "$first" '
            [.[] | {t: ((.t - $first) / 1000), b: .s.providers[$p].breaker,
                    rpm: .s.providers[$p].rpm_limit, tpm: .s.providers[$p].tpm_used}]
            | {breaker_not_closed_polls: ([.[] | select(.b != "closed")] | length),
               polls: length,
               learned_rpm_trace: [.[] | select((.t * 5 | floor) % 25 == 0) | {t, rpm, tpm}]}')
    local control="{}"
    if [ -s "$dir/control.txt" ]; then
        control=$(awk '{ printf "%s\"%s\":%s", (NR > 1 ? "," : "{"), $1, $2 } END { print "}" }' \
            "$dir/control.txt")
    fi
    # OK calls per 61 s period from the first call (a token minute is a sliding window, so
    # its calls come in waves of that period once the limit binds).
    local periods
    periods=$(awk -v f="$first" '$2 == 200 { n[int(($1 - f) / 61000)]++; if (int(($1 - f) / 61000) > m) m = int(($1 - f) / 61000) }
        END { printf "["; for (i = 0; i <= m; i++) printf "%s%d", (i ? "," : ""), n[i] + 0; print "]" }' "$dir/calls.txt")
    # Tokens in the sim's last minute, sampled from one minute after the first call to the
    # start of the last 61 s period (once the backlog is gone the demand, not the limit,
    # decides): mean and largest, per provider.
    local tokmin nper
    nper=$(jq length <<<"$periods")
    local tend=$((first + 61000 * (nper > 2 ? nper - 1 : 2)))
    tokmin=$(awk -v a=$((first + 61000)) -v b="$tend" '$1 >= a && $1 <= b { print $2 }' "$dir/sim-polls.txt" |
        jq -s -c '{samples: length,
                   gemini_mean: (if length > 0 then (map(.[0]) | add / length) else null end),
                   groq_mean: (if length > 0 then (map(.[1]) | add / length) else null end),
                   gemini_max: (map(.[0]) | max), groq_max: (map(.[1]) | max)}')
    QRES=$(jq -n --arg design "$design" --argjson settings "$(settings_json "${envs[@]}")" \
        --argjson periods "$periods" --argjson tokmin "$tokmin" \
        --arg simflags "${Q_SIM[*]}" --argjson sim "$sims" --argjson db "$db" \
        --argjson first "$first" --argjson last "$last" --argjson polls "$polls" \
        --argjson control "$control" --argjson all "$(window_stats "$dir/calls.txt" "$first" "")" \
        --argjson after30 "$(window_stats "$dir/calls.txt" $((first + 30000)) "")" \
        --argjson after61 "$(window_stats "$dir/calls.txt" $((first + 61000)) "")" \
        --argjson wall "$(time_field "$dir" 1 1)" --argjson serve_rc "$SERVE_RC" \
        '{design: $design, settings: $settings, sim_flags: $simflags, serve_exit: $serve_rc,
          wall_s: $wall, first_call_ms: $first, last_call_ms: $last, control_ms: $control,
          calls: $all, after_30s: $after30, after_61s: $after61, polls: $polls,
          ok_per_61s_period: $periods, sim_tokens_minute: $tokmin,
          sim_stats: {gemini: ($sim.gemini | del(.last_malformed)), groq: ($sim.groq | del(.last_malformed))},
          db: $db}')
    Q_CALLS_FILE="$dir/calls.txt"
}

# quota_pair NAME N: both designs; sets Q_ADAPTIVE, Q_FIXED, Q_ADAPTIVE_CALLS.
quota_pair() {
    quota_once "$1" adaptive "$2"
    Q_ADAPTIVE=$QRES
    Q_ADAPTIVE_CALLS=$Q_CALLS_FILE
    quota_once "$1" fixed "$2"
    Q_FIXED=$QRES
}

# The real quota in all request scenarios: Gemini 600 per minute over a sliding 10 s window
# (at most 100 requests in any 10 s), 200 ms latency; Groq unlimited (the fallback).
Q_FIXED_ENVS=()
Q_BASE_SIM=(--gemini-rpm 600 --gemini-window-s 10 --groq-rpm 0 --latency-ms 200)
Q_BASE_ENVS=(RATE_LIMIT_SAFETY_FACTOR=1.0 GEMINI_MAX_CONCURRENT=16 GROQ_MAX_CONCURRENT=16
    DEFAULT_MAX_WORKERS=12 GROQ_RPM_LIMIT=0)

quota_result() {
    local name=$1 figures=$2 targets=$3
    RESULT=$(jq -n --arg name "$name" --argjson host "$(host_json)" --argjson a "$Q_ADAPTIVE" \
        --argjson f "$Q_FIXED" "{scenario: \$name, host: \$host, adaptive: \$a, fixed: \$f}
        | . + {figures: ($figures)} | . + {targets: ($targets)}")
    write_result "$name" "$RESULT"
}

scenario_adaptive_exact() {
    Q_PROV=gemini Q_CONTROL=""
    Q_SIM=("${Q_BASE_SIM[@]}")
    Q_ENVS=("${Q_BASE_ENVS[@]}" GEMINI_RPM_LIMIT=600)
    quota_pair adaptive-exact 200
    quota_result adaptive-exact '
        def eff(c): c.ok_per_s / 10;
        def per1000(c): (if c.calls > 0 then c.r429 * 1000 / c.calls else 0 end);
        {real_quota_per_s: 10,
         adaptive_quota_used: eff(.adaptive.calls), fixed_quota_used: eff(.fixed.calls),
         adaptive_429_per_1000_calls: per1000(.adaptive.calls),
         fixed_429_per_1000_calls: per1000(.fixed.calls),
         adaptive_breaker_not_closed_polls: .adaptive.polls.breaker_not_closed_polls,
         fixed_breaker_not_closed_polls: .fixed.polls.breaker_not_closed_polls,
         adaptive_lost: .adaptive.db.lost, fixed_lost: .fixed.db.lost}' '
        [{name: "adaptive >= 0.97 of the real quota", value: .figures.adaptive_quota_used,
          met: (.figures.adaptive_quota_used >= 0.97)},
         {name: "adaptive <= 1 429 per 1000 calls", value: .figures.adaptive_429_per_1000_calls,
          met: (.figures.adaptive_429_per_1000_calls <= 1)},
         {name: "adaptive breaker closed throughout", value: .figures.adaptive_breaker_not_closed_polls,
          met: (.figures.adaptive_breaker_not_closed_polls == 0)},
         {name: "0 lost", value: .figures.adaptive_lost, met: (.figures.adaptive_lost == 0)}]'
}

scenario_adaptive_overestimated() {
    Q_PROV=gemini Q_CONTROL=""
    Q_SIM=("${Q_BASE_SIM[@]}")
    Q_ENVS=("${Q_BASE_ENVS[@]}" GEMINI_RPM_LIMIT=1200)
    quota_pair adaptive-overestimated 250
    quota_result adaptive-overestimated '
        def eff(c): c.ok_per_s / 10;
        def frac(c): (if c.calls > 0 then c.r429 / c.calls else 0 end);
        {real_quota_per_s: 10, ceiling_per_s: 20,
         adaptive_quota_used_after_30s: eff(.adaptive.after_30s),
         fixed_quota_used_after_30s: eff(.fixed.after_30s),
         adaptive_429_fraction_after_30s: frac(.adaptive.after_30s),
         fixed_429_fraction_after_30s: frac(.fixed.after_30s),
         adaptive_429_first_30s: (.adaptive.calls.r429 - .adaptive.after_30s.r429),
         adaptive_gemini_calls: .adaptive.calls.calls, fixed_gemini_calls: .fixed.calls.calls,
         adaptive_groq_calls: .adaptive.sim_stats.groq.requests, fixed_groq_calls: .fixed.sim_stats.groq.requests,
         adaptive_breaker_not_closed_polls: .adaptive.polls.breaker_not_closed_polls,
         fixed_breaker_not_closed_polls: .fixed.polls.breaker_not_closed_polls,
         adaptive_lost: .adaptive.db.lost, fixed_lost: .fixed.db.lost}' '
        [{name: "adaptive after 30 s: <= 2 % 429s", value: .figures.adaptive_429_fraction_after_30s,
          met: (.figures.adaptive_429_fraction_after_30s <= 0.02)},
         {name: "adaptive after 30 s: >= 0.9 of the real quota", value: .figures.adaptive_quota_used_after_30s,
          met: (.figures.adaptive_quota_used_after_30s >= 0.9)},
         {name: "adaptive breaker closed throughout", value: .figures.adaptive_breaker_not_closed_polls,
          met: (.figures.adaptive_breaker_not_closed_polls == 0)},
         {name: "0 lost", value: .figures.adaptive_lost, met: (.figures.adaptive_lost == 0)}]'
}

# The quota halves 30 s after the first call and comes back 40 s later.
quota_cut_control() {
    sleep 30
    curl -sf -m 5 -XPOST "$SIM/control/gemini" -d '{"rpm":300}' >/dev/null
    now_ms
    echo "cut $REPLY"
    sleep 40
    curl -sf -m 5 -XPOST "$SIM/control/gemini" -d '{"rpm":600}' >/dev/null
    now_ms
    echo "restored $REPLY"
}

scenario_adaptive_quota_cut() {
    Q_PROV=gemini Q_CONTROL=quota_cut_control
    Q_SIM=("${Q_BASE_SIM[@]}")
    Q_ENVS=("${Q_BASE_ENVS[@]}" GEMINI_RPM_LIMIT=600)
    quota_pair adaptive-quota-cut 400
    # Phases, each judged after 10 s of settling: before the cut (quota 10/s), during it (5/s),
    # and the last 20 s of the run once the quota is back (10/s).
    local c r e
    c=$(jq '.control_ms.cut' <<<"$Q_ADAPTIVE")
    r=$(jq '.control_ms.restored' <<<"$Q_ADAPTIVE")
    e=$(jq '.last_call_ms' <<<"$Q_ADAPTIVE")
    local phases
    phases=$(jq -n --argjson before "$(window_stats "$Q_ADAPTIVE_CALLS" "$(jq '.first_call_ms + 10000' <<<"$Q_ADAPTIVE")" "$c")" \
        --argjson cut "$(window_stats "$Q_ADAPTIVE_CALLS" $((c + 10000)) "$r")" \
        --argjson back "$(window_stats "$Q_ADAPTIVE_CALLS" $((e - 20000)) "$e")" \
        --argjson back_s "$(((e - r) / 1000))" \
        '{before_cut: $before, during_cut: $cut, last_20s_after_restore: $back, restore_to_end_s: $back_s}')
    Q_ADAPTIVE=$(jq --argjson p "$phases" '. + {phases: $p}' <<<"$Q_ADAPTIVE")
    quota_result adaptive-quota-cut '
        {adaptive_before_cut_quota_used: (.adaptive.phases.before_cut.ok_per_s / 10),
         adaptive_during_cut_quota_used: (.adaptive.phases.during_cut.ok_per_s / 5),
         adaptive_after_restore_quota_used: (.adaptive.phases.last_20s_after_restore.ok_per_s / 10),
         adaptive_restore_to_end_s: .adaptive.phases.restore_to_end_s,
         adaptive_429s: .adaptive.calls.r429, fixed_429s: .fixed.calls.r429,
         adaptive_groq_calls: .adaptive.sim_stats.groq.requests, fixed_groq_calls: .fixed.sim_stats.groq.requests,
         adaptive_breaker_not_closed_polls: .adaptive.polls.breaker_not_closed_polls,
         fixed_breaker_not_closed_polls: .fixed.polls.breaker_not_closed_polls,
         adaptive_lost: .adaptive.db.lost, fixed_lost: .fixed.db.lost}' '
        [{name: "follows the cut down (>= 0.85 of the halved quota, no storm)",
          value: .figures.adaptive_during_cut_quota_used,
          met: (.figures.adaptive_during_cut_quota_used >= 0.85 and .figures.adaptive_during_cut_quota_used <= 1.05)},
         {name: "follows it back up (>= 0.9 of the quota at the end)",
          value: .figures.adaptive_after_restore_quota_used,
          met: (.figures.adaptive_after_restore_quota_used >= 0.9)},
         {name: "0 lost", value: .figures.adaptive_lost, met: (.figures.adaptive_lost == 0)}]'
}

scenario_tpm_bound() {
    local tpm=20000
    Q_PROV=groq Q_CONTROL=""
    Q_SIM=(--gemini-rpm 0 --groq-rpm 0 --groq-tpm "$tpm" --latency-ms 200)
    # Groq alone (no Gemini key), limited by tokens only.
    # A check may wait up to a minute for tokens (the whole window) instead of 10 s.
    Q_ENVS=(GEMINI_API_KEY= GROQ_RPM_LIMIT=0 GROQ_TPM_LIMIT="$tpm" GROQ_MAX_CONCURRENT=8
        DEFAULT_MAX_WORKERS=8 RETRY_MAX_WAIT_MS=60000)
    # The design it replaces: no token limit at all (requests only, here unlimited).
    Q_FIXED_ENVS=(GEMINI_API_KEY= GROQ_RPM_LIMIT=0 GROQ_TPM_LIMIT=0 GROQ_MAX_CONCURRENT=8
        DEFAULT_MAX_WORKERS=8 RETRY_MAX_WAIT_MS=60000)
    quota_pair tpm-bound 45
    Q_FIXED_ENVS=()
    # Tokens per minute while the limit binds: the sim's own count of tokens in its last
    # minute, sampled every second from one minute after the first call to the start of the
    # last 61 s period, averaged, / the limit.
    quota_result tpm-bound "
        def tok_per_call(r): (r.sim_stats.groq.tokens_in + r.sim_stats.groq.tokens_out) / r.sim_stats.groq.ok;
        {tpm_limit: $tpm,
         adaptive_tokens_per_call: tok_per_call(.adaptive),
         adaptive_ok_per_61s_period: .adaptive.ok_per_61s_period,
         adaptive_token_rate_used: (.adaptive.sim_tokens_minute.groq_mean / $tpm),
         adaptive_tokens_minute_max: .adaptive.sim_tokens_minute.groq_max,
         fixed_token_rate_used: (.fixed.sim_tokens_minute.groq_mean / $tpm),
         adaptive_429s: .adaptive.calls.r429, fixed_429s: .fixed.calls.r429,
         adaptive_lost: .adaptive.db.lost, fixed_lost: .fixed.db.lost}" '
        [{name: ">= 0.95 of the token rate", value: .figures.adaptive_token_rate_used,
          met: (.figures.adaptive_token_rate_used >= 0.95)},
         {name: "0 429s", value: .figures.adaptive_429s, met: (.figures.adaptive_429s == 0)},
         {name: "0 lost", value: .figures.adaptive_lost, met: (.figures.adaptive_lost == 0)}]'
}

# The same binding request quota (Gemini 120 per minute over 10 s), the same submissions,
# asked check by check (CHECK_MODE=separate) and all at once (combined).
scenario_combined() {
    local n=60
    Q_PROV=gemini Q_CONTROL=""
    Q_SIM=(--gemini-rpm 120 --gemini-window-s 10 --groq-rpm 0 --latency-ms 200)
    Q_ENVS=("${Q_BASE_ENVS[@]}" GEMINI_RPM_LIMIT=120 CHECK_MODE=separate)
    quota_once combined separate "$n"
    Q_ADAPTIVE=$QRES
    Q_ENVS=("${Q_BASE_ENVS[@]}" GEMINI_RPM_LIMIT=120 CHECK_MODE=combined)
    quota_once combined combined "$n"
    Q_FIXED=$QRES
    # Submissions per minute from the first call's start to the last call's end (+latency).
    quota_result combined "
        def spm(r): $n / (((r.last_call_ms - r.first_call_ms) + 200) / 1000) * 60;
        {request_quota_per_min: 120, submissions: $n,
         separate_submissions_per_min: spm(.adaptive), combined_submissions_per_min: spm(.fixed),
         combined_vs_separate: (spm(.fixed) / spm(.adaptive)),
         separate_calls: .adaptive.calls.calls, combined_calls: .fixed.calls.calls,
         separate_input_tokens_per_submission: (.adaptive.sim_stats.gemini.tokens_in / $n),
         combined_input_tokens_per_submission: (.fixed.sim_stats.gemini.tokens_in / $n),
         separate_429s: .adaptive.calls.r429, combined_429s: .fixed.calls.r429,
         separate_validated: (.adaptive.db.by_status.validated // 0),
         combined_validated: (.fixed.db.by_status.validated // 0),
         separate_lost: .adaptive.db.lost, combined_lost: .fixed.db.lost}" '
        [{name: "combined >= 2.8 x the submissions per minute of separate",
          value: .figures.combined_vs_separate, met: (.figures.combined_vs_separate >= 2.8)},
         {name: "same verdicts (all validated in both modes)",
          value: "\(.figures.separate_validated)/\(.figures.combined_validated)",
          met: (.figures.separate_validated == .figures.submissions and
                .figures.combined_validated == .figures.submissions)},
         {name: "0 lost", value: (.figures.separate_lost + .figures.combined_lost),
          met: ((.figures.separate_lost + .figures.combined_lost) == 0)}]'
    # In this scenario "adaptive" holds the separate run and "fixed" the combined one.
    RESULT=$(jq '. + {separate: .adaptive, combined: .fixed} | del(.adaptive, .fixed)' \
        "$RESULTS/combined.json")
    printf '%s\n' "$RESULT" >"$RESULTS/combined.json"
}

# Not a queue run: the CPU of each local step on the library itself (bench/micro.c).
scenario_micro() {
    local dir="$WORK/micro"
    mkdir -p "$dir" "$RESULTS"
    # shellcheck disable=SC2046 # pkg-config prints several words on purpose
    cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -I"$ROOT/include" -o "$BUILD/bench-micro" \
        "$BENCH/micro.c" "$BUILD/libev.a" \
        $(pkg-config --cflags --libs libcurl json-c libpq libmicrohttpd poppler-glib) \
        -lmagic -lpthread -lm
    "$GEN" --sample "$dir"
    say "micro: CPU of each local step of one submission"
    "$BUILD/bench-micro" "$dir/sample.pdf" "$dir/sample.png" | tee "$RESULTS/micro.txt"
    echo "(load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs)" | tee -a "$RESULTS/micro.txt"
}

# ---------------------------------------------------------------- run and report

DONE=()
OVERHEAD_EXTRA=()
T_START=$SECONDS
for s in "${SCENARIOS[@]}"; do
    "scenario_${s//-/_}"
done
[ ${#DONE[@]} -gt 0 ] || exit 0

{
    echo
    printf '%-18s %-46s %-14s %s\n' scenario "figure / target" value result
    printf '%-18s %-46s %-14s %s\n' ------------------ ---------------------------------------------- -------------- ------
    for s in "${DONE[@]}"; do
        jq -r '
        def fmt: if type == "number" then (if . == floor then tostring
                 else ((. * 10000 | round) / 10000 | tostring) end)
                 elif . == null then "-" else tostring end;
        .scenario as $s
        | ((.figures | to_entries[] | [$s, .key, (.value | fmt), ""]),
           (.targets[] | [$s, "TARGET " + .name, (.value | fmt), (if .met then "met" else "MISSED" end)]))
        | @tsv' "$RESULTS/$s.json" |
            while IFS=$'\t' read -r a b c d; do
                printf '%-18s %-46s %-14s %s\n' "$a" "$b" "$c" "$d"
            done
    done
    echo
    echo "results: bench/results/<scenario>.json; whole run $((SECONDS - T_START)) s;" \
        "load average now $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
}
