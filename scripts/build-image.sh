#!/usr/bin/env bash
# scripts/build-image.sh - build docker/Dockerfile on a machine without a registry, then
# prove the image works: migrate, load the examples and judge them against a throwaway
# Postgres and the provider-sim image, with the service in a read-only root as a non-root
# user without capabilities.
#
#   bash scripts/build-image.sh            # bootstrap (once), build, smoke-test, report
#   EV_IMAGE_SKIP_SMOKE=1 bash scripts/build-image.sh     # build and report only
#
# 1. Base image: `debootstrap --variant=minbase bookworm` from the Debian mirror apt uses
#    here (read from /etc/apt/sources.list*), trimmed like Debian's slim images (no
#    documentation, manuals or locales), imported with `podman import` and tagged
#    docker.io/library/debian:bookworm and :bookworm-slim, the names the Dockerfile uses,
#    so the Dockerfile is built exactly as written. Skipped when those images exist
#    (EV_IMAGE_REBOOTSTRAP=1 redoes it).
# 2. `buildah bud --isolation chroot --pull=never` builds the `runtime` target
#    (event-validator:VERSION) and the `provider-sim` target, with VERSION (CMake's project
#    version), REVISION (git HEAD) and CREATED for the OCI labels.
# 3. Smoke test (needs root: chroot, mounts): a Postgres from scripts/pg-harness.sh; the
#    provider-sim image served with `buildah run`; `migrate`, `event add`, `submit` with
#    the files in examples/ (in the image, --cap-drop all); `serve --drain` in the image's
#    root mounted read-only (only UPLOAD_DIR writable), as uid 10001, no_new_privs, an
#    empty capability bounding set; `healthcheck` against a running `serve`; an upload
#    through its API, judged; the verdicts must be the expected ones.
# 4. Report: image sizes, labels, the Debian packages in the service image; written to
#    $EV_IMAGE_WORK/report.txt and printed.
#
# Knobs: EV_IMAGE_WORK (work directory, default /var/tmp/ev-image), EV_IMAGE_TAG (default
# the project version), EV_IMAGE_SKIP_SMOKE=1, EV_IMAGE_REBOOTSTRAP=1, EV_SKIP_INSTALL=1.
# Exits non-zero, saying which step failed, when anything fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=${EV_IMAGE_WORK:-/var/tmp/ev-image}
VERSION=$(sed -n 's/^project([a-z_]* VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
TAG=${EV_IMAGE_TAG:-$VERSION}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
IMAGE=localhost/event-validator:$TAG
SIM_IMAGE=localhost/provider-sim:$TAG
BASE=docker.io/library/debian

say() { printf '\n==== build-image.sh: %s ====\n' "$*"; }
die() {
    echo "build-image.sh: FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, buildah's chroot isolation and mounts need it)"

# shellcheck source=scripts/deps.sh
. "$ROOT/scripts/deps.sh"
ev_install_packages buildah podman debootstrap uidmap postgresql curl
mkdir -p "$WORK"

# The first Debian (not -security) mirror apt is configured with.
debian_mirror() {
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -v '^[[:space:]]*#' | grep -Eo 'https?://[^ ]+' | grep -v security | head -n 1)
    uri=${uri:-http://deb.debian.org/debian}
    echo "${uri%/}"
}

bootstrap_base() {
    local rootfs="$WORK/rootfs" mirror
    mirror=$(debian_mirror)
    say "bootstrapping Debian bookworm (minbase) from $mirror"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
        die "debootstrap (see $WORK/debootstrap.log)"
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # As Debian's slim images: packages installed later leave out documentation too.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/log/*.log "$rootfs"/var/cache/apt/*.bin
    say "importing it as $BASE:bookworm and $BASE:bookworm-slim"
    tar -C "$rootfs" --numeric-owner -c . | podman import - "$BASE:bookworm" >/dev/null ||
        die "podman import"
    podman tag "$BASE:bookworm" "$BASE:bookworm-slim"
    rm -rf "$rootfs"
}

if [ "${EV_IMAGE_REBOOTSTRAP:-0}" = 1 ] || ! podman image exists "$BASE:bookworm" ||
    ! podman image exists "$BASE:bookworm-slim"; then
    bootstrap_base
fi

build_target() { # target tag
    say "buildah bud --target $1 -> $2"
    local t0=$SECONDS
    nice buildah bud --isolation chroot --pull=never --layers --format docker \
        -f docker/Dockerfile --target "$1" -t "$2" \
        --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
        --build-arg CREATED="$CREATED" . >"$WORK/bud-$1.log" 2>&1 ||
        die "building target $1 (last lines of $WORK/bud-$1.log):
$(tail -n 20 "$WORK/bud-$1.log")"
    echo "built $2 in $((SECONDS - t0)) s"
}
build_target runtime "$IMAGE"
build_target provider-sim "$SIM_IMAGE"

# ---- smoke test ----
CTR=""
SIM_CTR=""
SIM_PID=""
SERVE_PID=""
PGDIR=""
MNT=""
SIM_MNT=""
UPLOADS=""
envs=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
    [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
    [ -n "$MNT" ] && buildah umount "$CTR" >/dev/null 2>&1
    [ -n "$SIM_MNT" ] && buildah umount "$SIM_CTR" >/dev/null 2>&1
    [ -n "$CTR" ] && buildah rm "$CTR" >/dev/null 2>&1
    [ -n "$SIM_CTR" ] && buildah rm "$SIM_CTR" >/dev/null 2>&1
    [ -n "$UPLOADS" ] && rm -rf "$UPLOADS"
    if [ -n "$PGDIR" ]; then
        bash "$ROOT/scripts/pg-harness.sh" stop "$PGDIR" >/dev/null 2>&1
        rm -rf "$PGDIR"
    fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ro_run ROOTFS COMMAND...: runs COMMAND in a mounted image root the way Kubernetes runs
# the service: the root read-only, uid/gid 10001, no_new_privs, an empty capability set
# (chroot switches the user, which clears the effective set; the bounding set keeps only
# what chroot itself needs). The environment is exactly $envs. Host network. Run it in a
# subshell or in the background: it execs all the way down, so $! is the program itself.
ro_run() {
    local envfile
    envfile=$(mktemp "$WORK/env.XXXXXX")
    printf '%s\n' "${envs[@]}" | grep -v -e '^-e$' -e '^$' >"$envfile" || true
    # shellcheck disable=SC2016  # expanded by the inner bash
    exec unshare --mount -- bash -c '
        set -e
        m=$1
        shift
        mount --bind "$m" "$m"
        mount --bind /proc "$m/proc"
        mount --bind /dev "$m/dev"
        [ -z "${UPLOADS:-}" ] || mount --bind "$UPLOADS" "$m/var/lib/event-validator/uploads"
        mount -o remount,bind,ro "$m"
        mapfile -t vars <"$0"
        rm -f "$0"
        exec setpriv --no-new-privs --bounding-set=-all,+sys_chroot,+setuid,+setgid \
            env -i "${vars[@]}" /usr/sbin/chroot --userspec=10001:10001 "$m" "$@"' "$envfile" "$@"
}

free_port() {
    local p
    for p in $(shuf -i 20000-39999 -n 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || {
            echo "$p"
            return 0
        }
    done
    return 1
}

smoke() {
    say "smoke test: the image against a throwaway Postgres and the provider-sim image"
    PGDIR=$(mktemp -d /tmp/evimg-pg.XXXXXX)
    local pgenv admin url sim_port stats_port api_port
    pgenv=$(bash "$ROOT/scripts/pg-harness.sh" start "$PGDIR") || die "pg-harness start"
    admin=$(printf '%s\n' "$pgenv" | sed -n 's/^export DATABASE_URL=//p' | tr -d "'\"")
    psql -q "$admin" -c "CREATE DATABASE event_validator" >/dev/null || die "create database"
    url="${admin%/*}/event_validator"
    sim_port=$(free_port) || die "no free port"
    stats_port=$(free_port) || die "no free port"
    api_port=$(free_port) || die "no free port"

    CTR=$(buildah from --pull-never "$IMAGE")
    SIM_CTR=$(buildah from --pull-never "$SIM_IMAGE")
    MNT=$(buildah mount "$CTR")
    SIM_MNT=$(buildah mount "$SIM_CTR")
    ro_run "$SIM_MNT" /usr/local/bin/provider-sim --port "$sim_port" --gemini-rpm 600 \
        --groq-rpm 600 --latency-ms 50 --log-level warn >"$WORK/sim.log" 2>&1 &
    SIM_PID=$!

    local sim="http://127.0.0.1:$sim_port" i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$sim_port") 2>/dev/null && break
        [ "$i" = 100 ] && die "provider-sim did not start (see $WORK/sim.log)"
        sleep 0.1
    done
    envs=(-e DATABASE_URL="$url" -e GEMINI_API_KEY=sim -e GROQ_API_KEY=sim
        -e GEMINI_BASE_URL="$sim/gemini/v1beta" -e GROQ_BASE_URL="$sim/groq/openai/v1"
        -e STATS_ADDR=127.0.0.1 -e STATS_PORT="$stats_port" -e API_ADDR=127.0.0.1
        -e API_PORT="$api_port" -e UPLOAD_DIR=/var/lib/event-validator/uploads -e LOG_LEVEL=warn
        -e STAGGER_MIN_MS=0 -e STAGGER_MAX_MS=0 -e WORKER_STAGGER_MS=0)
    ev() { buildah run --isolation chroot --cap-drop all -v "$ROOT/examples:/examples:ro" \
        "${envs[@]}" "$CTR" -- /usr/local/bin/event-validator "$@"; }

    ev migrate || die "migrate in the image"
    local event
    event=$(ev event add --name "Image smoke test" \
        --theme "Ideas that make cities greener" --rules "Realistic, with a budget.") ||
        die "event add in the image"
    local f=/examples/files
    if ! { ev submit --event "$event" --title "Solar-powered bus stops" \
        --description "Solar canopies." --pdf "$f/solar-bus-stops.pdf" --image "$f/canopy.png" &&
        ev submit --event "$event" --title "Lasagna night" --description "OFFTOPIC cooking." \
            --pdf "$f/lasagna.pdf" &&
        ev submit --event "$event" --title "Our slides" --pdf "$f/slides.pdf" &&
        ev submit --event "$event" --title "Rooftop gardens" --image "$f/photo.png"; } >/dev/null; then
        die "submit in the image"
    fi

    # serve --drain with the image's root read-only, as Kubernetes runs it: uid 10001,
    # no_new_privs, no capabilities (chroot switches the user, which clears the
    # effective set; the bounding set keeps only what chroot itself needs).
    UPLOADS=$(mktemp -d "$WORK/uploads.XXXXXX")
    chown 10001:10001 "$UPLOADS"
    export UPLOADS
    (ro_run "$MNT" /usr/local/bin/event-validator serve --drain) >"$WORK/serve.log" 2>&1 ||
        die "serve --drain in a read-only root (see $WORK/serve.log)"

    # healthcheck against a running serve (the container's HEALTHCHECK).
    ro_run "$MNT" /usr/local/bin/event-validator serve >"$WORK/serve-live.log" 2>&1 &
    SERVE_PID=$!
    for i in $(seq 100); do
        ev healthcheck 2>/dev/null && break
        [ "$i" = 100 ] && die "healthcheck never passed (see $WORK/serve-live.log)"
        sleep 0.1
    done
    for i in $(seq 100); do
        ev healthcheck --ready 2>/dev/null && break
        [ "$i" = 100 ] && die "healthcheck --ready never passed (see $WORK/serve-live.log)"
        sleep 0.1
    done
    # The organisers' API of the running serve: an upload lands in UPLOAD_DIR (the one
    # writable mount) and is judged by the workers.
    local token sid status=""
    token=$(ev token create --name smoke --event "$event" | head -n 1) || die "token create"
    sid=$(curl -fsS -H "Authorization: Bearer $token" -F title="Bike lanes" \
        -F description="Protected lanes with planted separators." \
        -F image=@"$ROOT/examples/files/canopy.png" \
        "http://127.0.0.1:$api_port/v1/events/$event/submissions" | sed -n 's/^{"id":\([0-9]*\).*/\1/p')
    [ -n "$sid" ] || die "upload through the API (see $WORK/serve-live.log)"
    for i in $(seq 300); do
        status=$(psql -qtA "$url" -c "SELECT status FROM submissions WHERE id = $sid")
        [ "$status" = validated ] && break
        [ "$i" = 300 ] && die "the API's submission $sid is '$status', not validated"
        sleep 0.1
    done
    echo "api: upload $sid judged $status"
    kill -TERM "$SERVE_PID"
    wait "$SERVE_PID" || die "serve did not exit 0 on SIGTERM (see $WORK/serve-live.log)"
    SERVE_PID=""
    ev healthcheck 2>/dev/null && die "healthcheck passed with no server running"

    local got want
    got=$(psql -qtA "$url" -c "SELECT title || '=' || status FROM submissions ORDER BY id" | tr '\n' ' ')
    want="Solar-powered bus stops=validated Lasagna night=rejected Our slides=rejected Rooftop gardens=rejected Bike lanes=validated "
    echo "verdicts: $got"
    [ "$got" = "$want" ] || die "verdicts differ; expected: $want"
    echo "smoke test: ok (migrate, event add, submit, serve --drain read-only, healthcheck, API upload)"
}

if [ "${EV_IMAGE_SKIP_SMOKE:-0}" != 1 ]; then
    smoke
fi

# ---- report ----
say "report"
{
    echo "image: $IMAGE (revision $REVISION, built $CREATED)"
    podman image inspect "$IMAGE" --format 'size: {{.Size}} bytes, user {{.User}}'
    podman image inspect "$SIM_IMAGE" --format "provider-sim image: $SIM_IMAGE {{.Size}} bytes"
    podman image inspect "$BASE:bookworm-slim" --format 'base (debootstrap minbase, trimmed): {{.Size}} bytes'
    echo "labels:"
    podman image inspect "$IMAGE" --format '{{range $k, $v := .Labels}}  {{$k}}={{$v}}{{"\n"}}{{end}}'
    echo "healthcheck: $(podman image inspect "$IMAGE" --format '{{.Config.Healthcheck.Test}}' 2>/dev/null || echo '?')"
    C2=$(buildah from --pull-never "$IMAGE")
    echo "Debian packages in the service image ($(buildah run --isolation chroot "$C2" -- dpkg-query -W -f '.\n' | wc -l)):"
    # shellcheck disable=SC2016  # dpkg-query's own format
    buildah run --isolation chroot "$C2" -- dpkg-query -W -f '  ${Package} ${Version}\n'
    echo "no curl: $(buildah run --isolation chroot "$C2" -- sh -c 'command -v curl || echo absent')"
    echo "no provider-sim: $(buildah run --isolation chroot "$C2" -- sh -c 'command -v provider-sim || echo absent')"
    buildah rm "$C2" >/dev/null
} | tee "$WORK/report.txt"
echo "build-image.sh: ok (report in $WORK/report.txt)"
