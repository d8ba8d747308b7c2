#!/usr/bin/env bash
# scripts/check-deploy.sh - offline checks of everything that is not C: scripts, deployment
# files and documentation. Run by scripts/test.sh; needs no cluster, engine or registry
# (npm packages come from the npm registry on first use).
#
#   bash scripts/check-deploy.sh
#
# 1. shellcheck (severity warning and above) on every shell script in the repository.
# 2. docker/docker-compose.yml: `docker-compose config` (Compose v1, Debian's package) and
#    dclint (Compose specification schema and best practices, rules in
#    docker/.dclintrc.yaml), warnings included.
# 3. deploy/kubernetes: every kustomization rendered and validated against the Kubernetes
#    and CRD schemas, plus the service's own rules (scripts/check-deploy/validate-k8s.mjs).
# 4. Documentation: every relative link in README.md and docs/*.md names a file of this
#    repository; nothing points outside it (a clone alone must be complete).
# A missing tool is a failure, never a skip. Exits non-zero if any check failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
FAILED=0
bad() {
    echo "check-deploy: FAILED: $*" >&2
    FAILED=1
}

# shellcheck source=scripts/deps.sh
. "$ROOT/scripts/deps.sh"
ev_install_packages shellcheck docker-compose
if ! command -v npm >/dev/null 2>&1; then
    ev_install_packages nodejs npm
fi

# 1. shellcheck
mapfile -t scripts < <(git ls-files '*.sh' .ci/run 2>/dev/null || find . -name '*.sh' -not -path './build*')
if ! command -v shellcheck >/dev/null 2>&1; then
    bad "shellcheck is not installed"
elif shellcheck -x -S warning "${scripts[@]}"; then
    echo "check-deploy: shellcheck ok (${#scripts[@]} scripts)"
else
    bad "shellcheck (above)"
fi

# 2 and 3 need the npm packages pinned in scripts/check-deploy/package-lock.json.
NODE_DIR="$ROOT/scripts/check-deploy"
if ! command -v npm >/dev/null 2>&1; then
    bad "npm is not installed: cannot run dclint or the Kubernetes schema check"
elif ! (cd "$NODE_DIR" && { [ -d node_modules ] && npm ls >/dev/null 2>&1 ||
    npm ci --no-audit --no-fund --loglevel=error; }); then
    bad "npm ci in scripts/check-deploy"
else
    if ! command -v docker-compose >/dev/null 2>&1; then
        bad "docker-compose (v1) is not installed"
    elif (cd docker && docker-compose -f docker-compose.yml config -q); then
        echo "check-deploy: docker-compose config (v1) ok"
    else
        bad "docker-compose config rejected docker/docker-compose.yml"
    fi
    if (cd "$NODE_DIR" && npx --no-install dclint -c "$ROOT/docker/.dclintrc.yaml" \
        --max-warnings 0 "$ROOT/docker/docker-compose.yml"); then
        echo "check-deploy: dclint ok"
    else
        bad "dclint (above)"
    fi
    if (cd "$NODE_DIR" && node validate-k8s.mjs "$ROOT/deploy/kubernetes"); then
        :
    else
        bad "Kubernetes manifests (above)"
    fi
fi

# 4. Documentation links: [text](target) with a relative target must resolve inside the
# repository; '../shared' (the design notes beside the repository) never counts.
docs_ok=1
for md in README.md docs/*.md; do
    [ -f "$md" ] || continue
    while IFS= read -r target; do
        case "$target" in
        http://* | https://* | mailto:* | '#'*) continue ;;
        esac
        file=${target%%#*}
        resolved=$(realpath -m "$(dirname "$md")/$file")
        case "$resolved" in
        "$ROOT"/*) ;;
        *)
            bad "$md links $target, outside the repository"
            docs_ok=0
            continue
            ;;
        esac
        if [ ! -e "$resolved" ]; then
            bad "$md links $target, which does not exist"
            docs_ok=0
        fi
    done < <(grep -o '\]([^)]*)' "$md" | sed 's/^](//; s/)$//; s/ .*//')
done
if grep -n '\.\./shared' README.md docs/*.md 2>/dev/null; then
    bad "the documents above mention ../shared, which a clone does not have"
    docs_ok=0
fi
[ "$docs_ok" = 1 ] && echo "check-deploy: documentation links ok"

if [ "$FAILED" -ne 0 ]; then
    echo "check-deploy: FAILED"
    exit 1
fi
echo "check-deploy: all passed"
