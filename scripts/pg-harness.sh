#!/usr/bin/env bash
# pg-harness.sh - a throwaway Postgres cluster for tests.
#
#   pg-harness.sh start DIR     initdb in DIR/data (first time), start it listening on a
#                               unix socket in DIR and on a free loopback TCP port, and print
#                               `export ...` lines for eval:
#                                 DATABASE_URL         postgresql://postgres@127.0.0.1:PORT/postgres
#                                 EV_PG_SOCKET_URL     the same over the unix socket
#                                 EV_PG_DIR            DIR (for `restart`/`stop` from fault tests)
#   pg-harness.sh stop DIR      fast shutdown (pg_ctl stop -m fast); the data stays
#   pg-harness.sh restart DIR   stop, then start again on the same port
#   pg-harness.sh url DIR       print the export lines of a running cluster again
#
# Speed over durability: fsync, synchronous_commit and full_page_writes are off. Trust
# authentication, loopback only. As root, the cluster runs as the `postgres` user (created if
# missing) and DIR is chowned to it; DIR's parent directories must be traversable by it
# (mktemp -d under /tmp is). Binaries come from `pg_config --bindir` or the newest
# /usr/lib/postgresql/*/bin. Everything but the export lines goes to stderr.
set -euo pipefail

die() {
    echo "pg-harness: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start|stop|restart|url DIR" >&2
    exit 2
}

find_bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
        if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    fi
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    d=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
        echo "$d"
        return 0
    fi
    die "cannot find initdb/pg_ctl (install the Debian package 'postgresql')"
}

# Runs a command as the cluster's owner: `postgres` when we are root, ourselves otherwise.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

ensure_postgres_user() {
    [ "$(id -u)" -eq 0 ] || return 0
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres >&2 ||
            die "cannot create the 'postgres' user needed to run the cluster as root"
    fi
}

port_in_use() {
    # A successful connect means something listens there.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
    local p _
    for _ in $(seq 1 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        if ! port_in_use "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "no free TCP port found on 127.0.0.1"
}

print_env() {
    local dir=$1 port
    port=$(cat "$dir/port")
    echo "export DATABASE_URL='postgresql://postgres@127.0.0.1:$port/postgres'"
    echo "export EV_PG_SOCKET_URL='postgresql://postgres@/postgres?host=$dir&port=$port'"
    echo "export EV_PG_DIR='$dir'"
}

# Starts the cluster in $1 on the port stored in $1/port; 0 on success.
pg_start_once() {
    local dir=$1 bindir=$2 port
    port=$(cat "$dir/port")
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >&2
}

cmd_start() {
    local dir=$1 bindir attempt
    bindir=$(find_bindir)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    # A unix socket path is limited to 107 bytes.
    [ ${#dir} -le 80 ] || die "DIR path too long for a unix socket: $dir"
    ensure_postgres_user
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        chmod 700 "$dir"
    fi

    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bindir/initdb" -D "$dir/data" --username=postgres --auth=trust \
            --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; die "initdb failed in $dir/data"; }
        {
            echo "# added by scripts/pg-harness.sh: a fast, throwaway test cluster"
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
            echo "max_connections = 200"
            echo "shared_buffers = 64MB"
            echo "log_min_messages = warning"
            echo "log_line_prefix = '%m [%p] %d '"
        } | as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
    fi

    if as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        [ -f "$dir/port" ] || die "a cluster runs in $dir but its port is unknown"
        print_env "$dir"
        return 0
    fi

    if [ -f "$dir/port" ]; then
        # restart: the same port, so URLs handed out earlier keep working.
        pg_start_once "$dir" "$bindir" ||
            { tail -n 20 "$dir/log" >&2; die "cannot start Postgres in $dir on port $(cat "$dir/port")"; }
    else
        # Another process may grab the port between our check and the bind: retry.
        for attempt in 1 2 3 4 5; do
            pick_port >"$dir/port.tmp"
            mv "$dir/port.tmp" "$dir/port"
            if pg_start_once "$dir" "$bindir"; then
                break
            fi
            rm -f "$dir/port"
            [ "$attempt" -lt 5 ] || { tail -n 20 "$dir/log" >&2; die "cannot start Postgres in $dir"; }
        done
    fi
    print_env "$dir"
}

cmd_stop() {
    local dir=$1 bindir
    bindir=$(find_bindir)
    [ -d "$dir/data" ] || die "no cluster in $dir"
    if as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -w -t 60 stop -m fast >&2
    fi
}

[ $# -eq 2 ] || usage
case "$1" in
start) cmd_start "$2" ;;
stop) cmd_stop "$2" ;;
restart)
    cmd_stop "$2"
    cmd_start "$2"
    ;;
url)
    [ -f "$2/port" ] || die "no cluster in $2"
    print_env "$(cd "$2" && pwd -P)"
    ;;
*) usage ;;
esac
