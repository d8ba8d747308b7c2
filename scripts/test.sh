#!/usr/bin/env bash
# scripts/test.sh - the whole test run, from a bare Debian machine to a verdict.
#
#   bash scripts/test.sh
#
# 1. Installs the Debian packages the build and the tests need, if any is missing
#    (as root directly; otherwise through sudo; without sudo it says what to install).
# 2. Builds build/ (normal) and build-asan/ (-DEV_SANITIZE=address: ASan + UBSan).
# 3. Starts a throwaway Postgres cluster in a temporary directory with
#    scripts/pg-harness.sh (always stopped and removed on exit) and exports
#    DATABASE_URL, EV_PG_SOCKET_URL, EV_PG_DIR and EV_PG_HARNESS for the tests.
# 4. Runs `ctest --output-on-failure` for the normal build, then for the ASan build with
#    leak detection on and UBSan halting on the first error.
# 5. With EV_TSAN=1, also builds build-tsan/ (-DEV_SANITIZE=thread) and runs it (all but
#    the fault_* scenarios).
# 6. Lints docs/openapi.yaml with Redocly CLI from npm (scripts/lint-openapi.sh).
#    Checks the Prometheus alert rules, their unit tests and the Grafana dashboard's
#    queries (scripts/check-monitoring.sh).
# 7. Checks the scripts, deployment files and documentation with scripts/check-deploy.sh
#    (script lint, compose lint, Kubernetes schemas, links) and, with EV_IMAGE=1, builds
#    the container image and smoke-tests it (scripts/build-image.sh; root only).
# A stage whose tool is missing (clang-format, clang, shellcheck, ...) fails; it is never
# skipped silently. CI (.ci/run) sets EV_TSAN=1 and EV_IMAGE=1.
# Prints a summary; exits non-zero if any build or test failed.
#
# Knobs: EV_JOBS (parallel build and test jobs, default 2), EV_TSAN=1, EV_IMAGE=1,
# EV_SKIP_ASAN=1, EV_SKIP_FUZZ=1, EV_SKIP_INSTALL=1 (never touch packages), CC (compiler,
# passed to CMake).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
JOBS=${EV_JOBS:-2}

# shellcheck source=scripts/deps.sh
. "$ROOT/scripts/deps.sh"

say() { printf '\n==== test.sh: %s ====\n' "$*"; }

STAGES=()
RESULTS=()
FAILED=0
LAST_T=$SECONDS

record() { # stage, status text; the stage's duration is the time since the last record
    STAGES+=("$1")
    RESULTS+=("$2 [$((SECONDS - LAST_T)) s]")
    LAST_T=$SECONDS
    case "$2" in ok*) ;; *) FAILED=1 ;; esac
}

# build DIR [cmake args...]: configure and build, continuing past failing targets so
# every test that can be built is built (other tests then show up as failed in ctest).
build() {
    local dir=$1
    shift
    local cc_args=()
    [ -n "${CC:-}" ] && cc_args=(-DCMAKE_C_COMPILER="$CC")
    say "configure and build $dir $*"
    if ! cmake -S "$ROOT" -B "$ROOT/$dir" "${cc_args[@]}" "$@"; then
        record "build $dir" "FAILED (cmake configure)"
        return 1
    fi
    local keep_going=()
    case "$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$ROOT/$dir/CMakeCache.txt")" in
    Ninja*) keep_going=(-- -k 0) ;;
    *Makefiles*) keep_going=(-- -k) ;;
    esac
    if cmake --build "$ROOT/$dir" -j"$JOBS" "${keep_going[@]}"; then
        record "build $dir" "ok"
    else
        record "build $dir" "FAILED (see compiler errors above)"
    fi
    return 0
}

# run_tests DIR [CTEST ARGS...]: ctest in DIR with the current environment.
run_tests() {
    local dir=$1 log="$ROOT/$1/ctest.log"
    shift
    if [ ! -f "$ROOT/$dir/CTestTestfile.cmake" ]; then
        record "ctest $dir" "FAILED (not configured)"
        return
    fi
    say "ctest $dir"
    (cd "$ROOT/$dir" && ctest --output-on-failure -j"$JOBS" "$@") 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local summary failed
    summary=$(grep -E '^[0-9]+% tests passed' "$log" | tail -n 1)
    failed=$(sed -n '/The following tests FAILED:/,$p' "$log" |
        sed -n 's/^[[:space:]]*[0-9]* - \([^ ]*\).*/\1/p' | tr '\n' ' ')
    if [ "$rc" -eq 0 ]; then
        record "ctest $dir" "ok (${summary:-no tests})"
    else
        record "ctest $dir" "FAILED (${summary:-ctest exit $rc}): ${failed:-see $log}"
    fi
}

PGDIR=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    if [ -n "$PGDIR" ] && [ -d "$PGDIR" ]; then
        bash "$ROOT/scripts/pg-harness.sh" stop "$PGDIR" >/dev/null 2>&1 || true
        rm -rf "$PGDIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ev_install_packages "${EV_TEST_PACKAGES[@]}"

say "lint (scripts/lint.sh: clang-format check, banned calls)"
if bash "$ROOT/scripts/lint.sh"; then
    record "lint" "ok"
else
    record "lint" "FAILED (see above)"
fi

build build
if [ "${EV_SKIP_ASAN:-0}" != 1 ]; then
    build build-asan -DEV_SANITIZE=address
fi
if [ "${EV_TSAN:-0}" = 1 ]; then
    build build-tsan -DEV_SANITIZE=thread
fi

# The dashboard's browser test (tests/faults/e2e_dashboard.sh) drives Debian's chromium with
# playwright-core, pinned in tests/browser/package-lock.json; without them it fails.
say "browser test dependencies (npm ci in tests/browser)"
if (cd "$ROOT/tests/browser" && { { [ -d node_modules/playwright-core ] && npm ls >/dev/null 2>&1; } ||
    npm ci --no-audit --no-fund --loglevel=error; }); then
    record "browser test deps" "ok"
else
    record "browser test deps" "FAILED (npm ci in tests/browser)"
fi

say "starting a throwaway Postgres cluster"
# /tmp keeps the unix socket path short.
PGDIR=$(mktemp -d /tmp/evpg.XXXXXX) || exit 1
if ! PGENV=$(bash "$ROOT/scripts/pg-harness.sh" start "$PGDIR"); then
    record "postgres cluster" "FAILED (scripts/pg-harness.sh start)"
else
    eval "$PGENV"
    export EV_PG_HARNESS="$ROOT/scripts/pg-harness.sh"
    echo "DATABASE_URL=$DATABASE_URL"
    record "postgres cluster" "ok"

    run_tests build
    if [ "${EV_SKIP_ASAN:-0}" != 1 ]; then
        ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
            run_tests build-asan
    fi
    if [ "${EV_TSAN:-0}" = 1 ]; then
        # The fault scenarios (fault_*: one at a time, mostly waiting on kills and
        # restarts) run in the normal and ASan builds; under TSan they would add about
        # 4 minutes to CI for little more than the e2e_* runs of serve already cover.
        TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 run_tests build-tsan -E '^fault_'
    fi
fi

# Prometheus alert rules (promtool check + unit tests), the Prometheus config and the
# Grafana dashboard's queries of the compose monitoring profile.
say "monitoring (scripts/check-monitoring.sh)"
if bash "$ROOT/scripts/check-monitoring.sh"; then
    record "monitoring rules" "ok"
else
    record "monitoring rules" "FAILED (see above)"
fi

# The organisers' API description (docs/openapi.yaml), linted with Redocly CLI from npm.
say "openapi (scripts/lint-openapi.sh)"
if bash "$ROOT/scripts/lint-openapi.sh"; then
    record "openapi lint" "ok"
else
    record "openapi lint" "FAILED (see above)"
fi

# Scripts, deployment files and documentation: shellcheck, compose (v1 and dclint),
# Kubernetes schemas, links that stay inside the repository.
say "deployment checks (scripts/check-deploy.sh)"
if bash "$ROOT/scripts/check-deploy.sh"; then
    record "deploy checks" "ok"
else
    record "deploy checks" "FAILED (see above)"
fi

# libFuzzer targets (tests/fuzz): 15 s each on a copy of the seed corpora, with clang.
# EV_SKIP_FUZZ=1 skips the stage.
if [ "${EV_SKIP_FUZZ:-0}" != 1 ]; then
    if command -v clang >/dev/null 2>&1; then
        say "fuzz (tests/fuzz/run.sh 15)"
        if CC=clang bash "$ROOT/tests/fuzz/run.sh" 15; then
            record "fuzz" "ok (tests/fuzz/run.sh 15)"
        else
            record "fuzz" "FAILED (crash input path printed above)"
        fi
    else
        record "fuzz" "FAILED (clang not found; EV_SKIP_FUZZ=1 skips the stage on purpose)"
    fi
fi

# The container image, built without a registry and run against Postgres and provider-sim.
if [ "${EV_IMAGE:-0}" = 1 ]; then
    say "container image (scripts/build-image.sh)"
    if bash "$ROOT/scripts/build-image.sh"; then
        record "image" "ok (report above)"
    else
        record "image" "FAILED (the step is named above)"
    fi
fi

say "summary (total $SECONDS s)"
for i in "${!STAGES[@]}"; do
    printf '  %-26s %s\n' "${STAGES[$i]}" "${RESULTS[$i]}"
done
if [ "$FAILED" -ne 0 ]; then
    echo "test.sh: FAILED"
    exit 1
fi
echo "test.sh: all passed"
exit 0
