#!/usr/bin/env bash
# scripts/lint.sh - the house style's mechanical checks (STYLE.md "Tests and checks"):
#   1. clang-format in check mode over every C file we own;
#   2. a grep gate against unbounded or unsafe calls (curl's checksrc idea):
#      sprintf, vsprintf, strcpy, strcat, strtok, gets, atoi, system, popen.
# Exits non-zero with the offending lines. Run by scripts/test.sh.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null || find src include tests tools bench -name '*.[ch]')
rc=0
if command -v clang-format >/dev/null 2>&1; then
    if ! clang-format --dry-run --Werror "${files[@]}"; then
        echo "lint: clang-format would change the files above (run clang-format -i on them)" >&2
        rc=1
    fi
else
    echo "lint: clang-format is not installed: the format check cannot run" >&2
    rc=1
fi
if grep -nE '\b(sprintf|vsprintf|strcpy|strcat|strtok|gets|atoi|system|popen)[[:space:]]*\(' \
    "${files[@]}"; then
    echo "lint: banned calls above (use snprintf, memcpy with a length, strtol, fork/exec)" >&2
    rc=1
fi
[ "$rc" -eq 0 ] && echo "lint: ok (${#files[@]} files)"
exit "$rc"
