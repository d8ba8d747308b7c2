#!/usr/bin/env bash
# scripts/check-monitoring.sh - the monitoring files of the compose `monitoring` profile:
#   1. promtool check config docker/prometheus/prometheus.yml (with its rule file);
#   2. promtool check rules docker/prometheus/alerts.yml;
#   3. promtool test rules docker/prometheus/alerts_test.yml (each alert fires on its
#      situation and stays quiet next to it);
#   4. every query of the Grafana dashboard (docker/grafana/dashboards/*.json) parses as
#      PromQL (written as recording rules into a temporary file for promtool);
#   5. every event_validator_* metric those files name is one the service exports
#      (checked against the names in src/*.c), so a renamed metric cannot leave an alert
#      that never fires.
# Run by scripts/test.sh; needs promtool (Debian: prometheus) and jq. Exit 1 on any failure.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT/docker/prometheus" || exit 1
rc=0
bad() { echo "check-monitoring: $*" >&2; rc=1; }
for tool in promtool jq; do
    command -v "$tool" >/dev/null 2>&1 || { echo "check-monitoring: $tool is not installed" >&2; exit 1; }
done

promtool check config prometheus.yml || bad "promtool check config"
promtool check rules alerts.yml || bad "promtool check rules"
promtool test rules alerts_test.yml || bad "promtool test rules"

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
{
    echo "groups:"
    echo "  - name: grafana"
    echo "    rules:"
    n=0
    for f in "$ROOT"/docker/grafana/dashboards/*.json; do
        while IFS= read -r expr; do
            n=$((n + 1))
            printf '      - record: grafana_query_%d\n        expr: %s\n' "$n" "$(jq -Rn --arg e "$expr" '$e')"
        done < <(jq -r '.panels[].targets[].expr' "$f")
    done
} >"$tmp/grafana.yml"
promtool check rules "$tmp/grafana.yml" >/dev/null || bad "a Grafana query does not parse (see $tmp/grafana.yml)"

# Metric names used by the alerts and the dashboard, against the names the code prints.
used=$( { cat alerts.yml; cat "$ROOT"/docker/grafana/dashboards/*.json; } |
    grep -o 'event_validator_[a-z_]*' | sed -E 's/_(bucket|sum|count)$//' | sort -u)
for m in $used; do
    base=${m#event_validator_}
    grep -rqE "\"(event_validator_)?${base}[\"{ ]|PFX \"${base}|\"${base}\"|P \"${base}" "$ROOT"/src/*.c ||
        bad "$m is used by an alert or the dashboard but exported nowhere in src/"
done
[ "$rc" -eq 0 ] && echo "check-monitoring: ok (config, rules, rule tests, dashboard queries, metric names)"
exit "$rc"
