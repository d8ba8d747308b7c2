#!/usr/bin/env bash
# e2e_valgrind.sh - the main path under valgrind: no memory errors, no leaks.
#
# `serve --drain` runs under memcheck on a small batch that touches every main
# path: PDFs and images loaded from bytea and checked (libmagic, poppler), LLM
# checks through the router (Gemini, and Groq after a fallback), a local
# rejection, the verdict cache, the stats server and a clean shutdown.
# Skipped for sanitizer builds (valgrind cannot run ASan/TSan binaries).
# shellcheck source=tests/faults/lib.sh
. "$(dirname "$0")/lib.sh"
if grep -Eq '^EV_SANITIZE:STRING=.+' "$EV_BUILD_DIR/CMakeCache.txt" 2>/dev/null; then
    echo "SKIP: $FT_NAME: sanitizer build; valgrind runs on the plain build only"
    exit 0
fi
command -v valgrind >/dev/null || { echo "FAIL: $FT_NAME: valgrind is not installed"; exit 1; }
ft_init

ft_pg_start
ft_sim_start --latency-ms 10 --gemini-fail-next 2 --gemini-fault overloaded
export DEFAULT_MAX_WORKERS=1 MAX_RETRIES=0 # one worker: the cache hit is deterministic
EVENT=$(ft_event) || ft_fatal "event add failed"
EX="$EV_SOURCE_DIR/examples/files"
for i in 1 2; do # the second is identical: answered from the cache
    "$EV_BIN" submit --event "$EVENT" --title "Solar bus stops" --description "Solar canopies." \
        --pdf "$EX/solar-bus-stops.pdf" --image "$EX/canopy.png" >/dev/null 2>>"$FT_DIR/cli.err" ||
        ft_fatal "submit $i failed"
done
"$EV_BIN" submit --event "$EVENT" --title "Slides" --pdf "$EX/slides.pdf" >/dev/null 2>>"$FT_DIR/cli.err" ||
    ft_fatal "submit slides failed"
ft_insert "$EVENT" 3 image

timeout 600 valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --show-leak-kinds=definite,indirect --error-exitcode=99 \
    "$EV_BIN" serve --drain >"$FT_DIR/vg.out" 2>"$FT_DIR/vg.err"
rc=$?
FT_SERVE_LOGS+=("$FT_DIR/vg.err")
ft_check "serve --drain under valgrind exits 0: no memory error, no definite or indirect leak (exit $rc)" \
    test "$rc" = 0
ft_check "no valgrind report in its output" sh -c "! grep -q '^==[0-9]*==' '$FT_DIR/vg.err'"
ft_check "all 6 submissions final (5 validated, 1 rejected)" \
    test "$(ft_count "status = 'validated'")" = 5 -a "$(ft_count "status = 'rejected'")" = 1
ft_check "the fallback and the cache were exercised" \
    test "$(sql "SELECT count(*) FROM validation_results WHERE provider = 'groq'")" -ge 1 \
    -a "$(sql "SELECT count(*) FROM validation_results WHERE cached")" -ge 1
