# shellcheck shell=bash
# scripts/deps.sh - sourced by test.sh and run-local.sh: installs missing Debian packages.
#
#   ev_install_packages PKG...
#
# As root it runs apt-get directly; otherwise through sudo; without sudo it prints the
# apt-get line to run and exits 1. EV_SKIP_INSTALL=1 skips everything. On a system
# without dpkg it only lists what is needed.

# The packages to build and run the service (run-local.sh).
# shellcheck disable=SC2034  # used by the scripts that source this file
EV_RUNTIME_PACKAGES=(build-essential cmake pkg-config libcurl4-openssl-dev libjson-c-dev
    libmagic-dev libpq-dev libcunit1-dev libmicrohttpd-dev libpoppler-glib-dev postgresql)
# Plus what the test suite uses (test.sh): promtool, clang/libFuzzer, valgrind, chromium (the
# dashboard's browser test, tests/faults/e2e_dashboard.sh), and the
# deployment checks (scripts/check-deploy.sh): shellcheck, docker-compose (v1); Node.js
# and npm come with the machine (check-deploy.sh installs Debian's only if they are missing).
# shellcheck disable=SC2034  # used by the scripts that source this file
EV_TEST_PACKAGES=("${EV_RUNTIME_PACKAGES[@]}" zlib1g-dev prometheus clang clang-format libclang-rt-14-dev valgrind
    jq curl shellcheck docker-compose chromium)

ev_install_packages() {
    [ "${EV_SKIP_INSTALL:-0}" = 1 ] && return 0
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "not a Debian system; make sure these (or their equivalents) are installed:"
        echo "  $*"
        return 0
    fi
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "missing packages and no sudo. As root, run:" >&2
            echo "  apt-get install -y ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "installing missing packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; then
        # The package lists may be stale or absent (fresh container): refresh once.
        if ! { "${sudo[@]}" apt-get update &&
            "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; }; then
            echo "could not install: ${missing[*]}" >&2
            exit 1
        fi
    fi
}
