#!/usr/bin/env bash
# scripts/run-local.sh - build and run event-validator locally, from a bare Debian machine.
#
#   scripts/run-local.sh            validate the sample submissions in examples/ and print
#                                   a table of verdicts (serve --drain), then stop
#   scripts/run-local.sh --serve    the same set-up, then keep serving until Ctrl-C
#                                   (stats on http://127.0.0.1:${STATS_PORT:-8080}/stats)
#
# 1. Installs missing Debian packages (apt-get; sudo when not root).
# 2. Builds the release binary into build-release/.
# 3. Starts an embedded Postgres under .local/pg (created once, reused by later runs,
#    stopped cleanly on exit) and applies the migrations.
# 4. Providers: with GEMINI_API_KEY / GROQ_API_KEY (or their _FILE variants) set, the real
#    APIs are used. Without any key it starts provider-sim, a local fake of both APIs, and
#    says so: nothing is sent anywhere and nothing is spent.
# 5. Loads a sample event and the submissions of examples/ (through the CLI and through
#    plain SQL, as an upload front end would), validates them and prints the verdicts.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MODE=drain
case "${1:-}" in
--serve) MODE=serve ;;
"") ;;
-h | --help)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "usage: $0 [--serve]" >&2
    exit 2
    ;;
esac

say() { printf '\n==> %s\n' "$*"; }

# shellcheck source=scripts/deps.sh
. "$ROOT/scripts/deps.sh"
ev_install_packages "${EV_RUNTIME_PACKAGES[@]}"

say "building (build-release/)"
cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release -DEV_BUILD_TESTS=OFF >/dev/null
cmake --build "$ROOT/build-release" -j"$(nproc)" --target event-validator provider-sim >/dev/null
EV="$ROOT/build-release/event-validator"

LOCAL="$ROOT/.local"
mkdir -p "$LOCAL/uploads"
[ "$(id -u)" -eq 0 ] && chmod 755 "$LOCAL"
SIM_PID=""
cleanup() {
    if [ -n "$SIM_PID" ]; then
        kill "$SIM_PID" 2>/dev/null || true
        wait "$SIM_PID" 2>/dev/null || true
    fi
    bash "$ROOT/scripts/pg-harness.sh" stop "$LOCAL/pg" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting Postgres (.local/pg)"
eval "$(bash "$ROOT/scripts/pg-harness.sh" start "$LOCAL/pg")"
ADMIN_URL=$DATABASE_URL
psql -q "$ADMIN_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = 'event_validator'" |
    grep -q 1 || psql -q "$ADMIN_URL" -c "CREATE DATABASE event_validator" >/dev/null
export DATABASE_URL="${ADMIN_URL%/*}/event_validator"
"$EV" migrate

if [ -z "${GEMINI_API_KEY:-}${GEMINI_API_KEY_FILE:-}${GROQ_API_KEY:-}${GROQ_API_KEY_FILE:-}" ]; then
    say "no GEMINI_API_KEY or GROQ_API_KEY set: using provider-sim, a local fake of both APIs"
    echo "    (nothing leaves this machine; set a key to use the real providers)"
    rm -f "$LOCAL/sim.port"
    "$ROOT/build-release/provider-sim" --port 0 --port-file "$LOCAL/sim.port" \
        --gemini-rpm 60 --groq-rpm 30 --latency-ms 300 --jitter-ms 200 --log-level warn &
    SIM_PID=$!
    for _ in $(seq 100); do [ -s "$LOCAL/sim.port" ] && break; sleep 0.1; done
    [ -s "$LOCAL/sim.port" ] || { echo "provider-sim did not start" >&2; exit 1; }
    SIM="http://127.0.0.1:$(cat "$LOCAL/sim.port")"
    export GEMINI_API_KEY=sim-local GROQ_API_KEY=sim-local
    export GEMINI_BASE_URL="$SIM/gemini/v1beta" GROQ_BASE_URL="$SIM/groq/openai/v1"
    export GEMINI_RPM_LIMIT=${GEMINI_RPM_LIMIT:-60} GROQ_RPM_LIMIT=${GROQ_RPM_LIMIT:-30}
else
    say "using the real providers (keys from the environment)"
fi
export UPLOAD_DIR="$LOCAL/uploads"
export LOG_LEVEL=${LOG_LEVEL:-warn}

say "loading the sample event and submissions (examples/)"
EX="$ROOT/examples/files"
EVENT=$("$EV" event add --name "Green City Challenge $(date +%Y%m%d-%H%M%S)" \
    --theme "Ideas that make cities greener: energy, transport, nature in the city" \
    --rules "Projects must be realistic and describe a budget and a timeline.")
"$EV" submit --event "$EVENT" --title "Solar-powered bus stops" \
    --description "Retrofitting 40 bus stops with solar canopies and batteries." \
    --pdf "$EX/solar-bus-stops.pdf" --image "$EX/canopy.png" >/dev/null
"$EV" submit --event "$EVENT" --title "Lasagna night" \
    --description "A cooking evening. OFFTOPIC for a green-city event." \
    --pdf "$EX/lasagna.pdf" >/dev/null
"$EV" submit --event "$EVENT" --title "Our slides" \
    --description "Urban beekeeping on office roofs." --pdf "$EX/slides.pdf" >/dev/null
"$EV" submit --event "$EVENT" --title "Rooftop gardens" \
    --description "Community vegetable gardens on school roofs." --image "$EX/photo.png" >/dev/null
# An upload front end writes rows directly; this one references a 5 MiB image on disk.
{ cat "$EX/canopy.png"; head -c $((5 * 1024 * 1024)) /dev/zero; } >"$LOCAL/uploads/street-trees.png"
psql -q "$DATABASE_URL" -v ON_ERROR_STOP=1 -v ev="$EVENT" >/dev/null <<'SQL'
WITH s AS (INSERT INTO submissions (event_id, title, description)
           VALUES (:ev, 'Street trees', 'Planting 500 street trees with sensors.') RETURNING id)
INSERT INTO submission_files (submission_id, kind, filename, storage_path)
SELECT id, 'image', 'street-trees.png', 'street-trees.png' FROM s;
INSERT INTO submissions (event_id, title, description)
VALUES (:ev, 'Bike lanes on Main Street', 'Protected bike lanes with planted separators.');
SQL

if [ "$MODE" = serve ]; then
    say "serving until Ctrl-C (stats: http://127.0.0.1:${STATS_PORT:-8080}/stats)"
    echo "    DATABASE_URL=$DATABASE_URL"
    "$EV" serve
    exit 0
fi

say "validating (serve --drain)"
API_PORT=${API_PORT:-0} STATS_PORT=${STATS_PORT:-0} "$EV" serve --drain

say "verdicts"
psql "$DATABASE_URL" -P pager=off -v ev="$EVENT" <<'SQL'
SELECT s.id, left(s.title, 24) AS title, s.status,
       coalesce(max(r.verdict) FILTER (WHERE r.check_name = 'theme'), '-') AS theme,
       coalesce(max(r.verdict) FILTER (WHERE r.check_name = 'pdf'), '-') AS pdf,
       coalesce(max(r.verdict) FILTER (WHERE r.check_name = 'image'), '-') AS image,
       left(coalesce(s.last_error, ''), 70) AS reason
FROM submissions s LEFT JOIN validation_results r ON r.submission_id = s.id
WHERE s.event_id = :ev GROUP BY s.id ORDER BY s.id;
SQL
echo "The data stays in .local/pg (Postgres is stopped now). To look around, run"
echo "  scripts/run-local.sh --serve    and in another shell, with the DATABASE_URL it prints:"
echo "  $EV show ID     curl -s http://127.0.0.1:${STATS_PORT:-8080}/stats"
