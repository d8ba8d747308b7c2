#!/usr/bin/env bash
# tests/fuzz/run.sh - builds the libFuzzer targets with clang and runs each one.
#
#   bash tests/fuzz/run.sh [seconds] [target...]
#
# Configures and builds build-fuzz/ (CC=clang, -DEV_FUZZ=ON -DEV_BUILD_TESTS=OFF;
# only the fuzz targets are built), then runs every target (or only the named
# ones: gemini groq models verdict retryhint config prompt image api_event api_upload) for
# `seconds` (default 20) on a COPY of its seed corpus tests/fuzz/corpus/<name>/, with its dictionary
# tests/fuzz/dict/<name>.dict. The committed corpus never grows.
#
# A crash, leak, timeout or broken FUZZ_CHECK stops that target: the input is
# kept under build-fuzz/fuzz-artifacts/<name>/ and its path printed. Each
# target's full log is build-fuzz/fuzz-logs/<name>.log. Exits non-zero when any
# target failed (or the build did). Knobs: EV_JOBS (build jobs, default 2),
# CC (default clang), EV_FUZZ_ARGS (extra libFuzzer flags).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SECONDS_PER_TARGET=${1:-20}
shift || true
ALL=(gemini groq models verdict retryhint config prompt image api_event api_upload)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi
JOBS=${EV_JOBS:-2}
BUILD="$ROOT/build-fuzz"
CC=${CC:-clang}
export CC

case "$SECONDS_PER_TARGET" in
'' | *[!0-9]*)
    echo "run.sh: seconds must be a whole number, got '$SECONDS_PER_TARGET'" >&2
    exit 2
    ;;
esac
for t in "${TARGETS[@]}"; do
    if [ ! -d "$ROOT/tests/fuzz/corpus/$t" ]; then
        echo "run.sh: unknown target '$t' (known: ${ALL[*]})" >&2
        exit 2
    fi
done
if ! command -v "$CC" >/dev/null 2>&1; then
    echo "run.sh: compiler '$CC' not found (install clang and libclang-rt-14-dev)" >&2
    exit 2
fi

echo "==== fuzz: configure and build $BUILD with $CC ===="
mkdir -p "$BUILD"
if ! cmake -S "$ROOT" -B "$BUILD" -DCMAKE_C_COMPILER="$CC" -DEV_FUZZ=ON -DEV_BUILD_TESTS=OFF \
    >"$BUILD/configure.log" 2>&1; then
    cat "$BUILD/configure.log" >&2
    echo "run.sh: cmake configure failed" >&2
    exit 1
fi
build_targets=()
for t in "${TARGETS[@]}"; do build_targets+=(--target "fuzz_$t"); done
if ! cmake --build "$BUILD" -j"$JOBS" "${build_targets[@]}"; then
    echo "run.sh: build failed" >&2
    exit 1
fi

WORK=$(mktemp -d /tmp/ev-fuzz.XXXXXX) || exit 1
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$BUILD/fuzz-logs" "$BUILD/fuzz-artifacts"
FAILED=()
SUMMARY=()
for t in "${TARGETS[@]}"; do
    corpus="$WORK/$t"
    artifacts="$BUILD/fuzz-artifacts/$t"
    log="$BUILD/fuzz-logs/$t.log"
    mkdir -p "$corpus" "$artifacts"
    cp -R "$ROOT/tests/fuzz/corpus/$t/." "$corpus/"
    dict=()
    [ -f "$ROOT/tests/fuzz/dict/$t.dict" ] && dict=(-dict="$ROOT/tests/fuzz/dict/$t.dict")
    echo "==== fuzz: $t for ${SECONDS_PER_TARGET}s ===="
    # shellcheck disable=SC2086  # EV_FUZZ_ARGS is a list of flags
    (cd "$WORK" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$BUILD/tests/fuzz/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
        -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "${dict[@]}" ${EV_FUZZ_ARGS:-} "$corpus") \
        >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$rc" -ne 0 ]; then
        crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        echo "---- last lines of $log:"
        tail -n 40 "$log"
        echo "run.sh: fuzz_$t FAILED (exit $rc); crash input: ${crash:-none written, see $log}"
        echo "run.sh: reproduce with: $BUILD/tests/fuzz/fuzz_$t ${crash:-<input>}"
        FAILED+=("$t")
        SUMMARY+=("fuzz_$t: FAILED ${crash:+($crash)}")
    else
        SUMMARY+=("fuzz_$t: ok, ${execs:-?} runs in ${SECONDS_PER_TARGET}s")
    fi
done

echo "==== fuzz: summary ===="
printf '  %s\n' "${SUMMARY[@]}"
if [ "${#FAILED[@]}" -ne 0 ]; then
    echo "run.sh: FAILED: ${FAILED[*]}"
    exit 1
fi
echo "run.sh: all fuzz targets passed"
exit 0
