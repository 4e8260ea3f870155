#!/usr/bin/env bash
# Private test services for twinlink: PostgreSQL 15 + PostGIS 3 and Mosquitto.
#
# Usage (by hand):
#   scripts/services.sh start    # install if missing, start (or reuse), print env
#   scripts/services.sh stop     # stop both services
#   scripts/services.sh status   # show what is running
#   scripts/services.sh env      # print export lines for the running services
#     e.g.  eval "$(scripts/services.sh env)"
#
# scripts/test.sh sources this file and calls tl_services_start / tl_services_stop.
#
# Environment:
#   TWINLINK_TEST_STATE      state dir (default: <repo>/target/test-services)
#   TWINLINK_TEST_PG_PORT    preferred PostgreSQL port (default 55432)
#   TWINLINK_TEST_MQTT_PORT  preferred Mosquitto port (default 51883)
# A busy preferred port is skipped and the next free one is used.
#
# Exports (after tl_services_start):
#   TWINLINK_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:PORT/twinlink_test
#   TWINLINK_TEST_MQTT_URL=mqtt://127.0.0.1:PORT

TL_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TL_STATE="${TWINLINK_TEST_STATE:-$TL_REPO_ROOT/target/test-services}"
case "$TL_STATE" in
    /*) ;;
    *) TL_STATE="$PWD/$TL_STATE" ;;
esac
TL_PG_VERSION=15
TL_PG_BIN="/usr/lib/postgresql/$TL_PG_VERSION/bin"
TL_PG_PORT_DEFAULT="${TWINLINK_TEST_PG_PORT:-55432}"
TL_MQTT_PORT_DEFAULT="${TWINLINK_TEST_MQTT_PORT:-51883}"
TL_DB_NAME=twinlink_test
TL_MQTT_DIR="$TL_STATE/mosquitto"
TL_MQTT_LOG="$TL_STATE/mosquitto.log"
TL_MQTT_PID="$TL_MQTT_DIR/mosquitto.pid"
TL_MQTT_PORT_FILE="$TL_MQTT_DIR/port"

tl_log() { printf '[services] %s\n' "$*" >&2; }
tl_err() { printf '[services] ERROR: %s\n' "$*" >&2; }

# Print the last lines of a log file to stderr.
tl_show_log() {
    local file="$1" n="${2:-40}"
    if [[ -s "$file" ]]; then
        printf '[services] ---- last %s lines of %s ----\n' "$n" "$file" >&2
        tail -n "$n" "$file" >&2 || true
        printf '[services] ---- end of %s ----\n' "$file" >&2
    fi
}

# True if something accepts TCP connections on 127.0.0.1:$1.
tl_port_open() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# Print the first port >= $1 nobody listens on (tries 100 ports).
tl_free_port() {
    local port="$1" last=$(($1 + 100))
    while ((port < last)); do
        if ! tl_port_open "$port"; then
            echo "$port"
            return 0
        fi
        port=$((port + 1))
    done
    tl_err "no free port in $1..$((last - 1)) on 127.0.0.1"
    return 1
}

tl_mosquitto_bin() {
    if command -v mosquitto >/dev/null 2>&1; then
        command -v mosquitto
    elif [[ -x /usr/sbin/mosquitto ]]; then
        echo /usr/sbin/mosquitto
    else
        return 1
    fi
}

# ---------------------------------------------------------------- packages

tl_missing_packages() {
    local b="$TL_PG_BIN"
    if [[ ! -x "$b/postgres" || ! -x "$b/initdb" || ! -x "$b/pg_ctl" ]]; then
        echo "postgresql-$TL_PG_VERSION"
    fi
    if [[ ! -x "$b/psql" || ! -x "$b/pg_isready" ]]; then
        echo "postgresql-client-$TL_PG_VERSION"
    fi
    if [[ ! -f "/usr/share/postgresql/$TL_PG_VERSION/extension/postgis.control" ]] ||
        ! compgen -G "/usr/lib/postgresql/$TL_PG_VERSION/lib/postgis-3*.so" >/dev/null; then
        echo "postgresql-$TL_PG_VERSION-postgis-3"
    fi
    if ! tl_mosquitto_bin >/dev/null; then
        echo mosquitto
    fi
    # curl and mosquitto_pub run the README's examples (scripts/readme-examples.sh).
    if ! command -v mosquitto_pub >/dev/null; then
        echo mosquitto-clients
    fi
    if ! command -v curl >/dev/null; then
        echo curl
    fi
    # promtool checks the text format of /metrics (tests/integration/metrics.rs); the package also
    # brings a Prometheus server, which is not started (policy-rc.d below).
    if ! command -v promtool >/dev/null; then
        echo prometheus
    fi
}

# Install the missing Debian packages (apt-get update only when needed) without
# letting their system services start: we run private instances instead.
tl_install_packages() {
    local -a pkgs
    mapfile -t pkgs < <(tl_missing_packages)
    ((${#pkgs[@]} == 0)) && return 0

    if ((EUID != 0)); then
        tl_err "missing packages: ${pkgs[*]}"
        tl_err "run as root, or install them: sudo apt-get install ${pkgs[*]}"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        tl_err "missing packages (${pkgs[*]}) and apt-get is not available"
        return 1
    fi

    mkdir -p "$TL_STATE" || return 1
    local apt_log="$TL_STATE/apt.log"
    local policy=/usr/sbin/policy-rc.d backup="" rc=0 start=$SECONDS
    tl_log "installing ${pkgs[*]} (log: $apt_log) ..."

    # policy-rc.d exit 101 = "action forbidden": keeps invoke-rc.d and
    # deb-systemd-invoke from starting the packages' services.
    if [[ -e "$policy" ]]; then
        backup="$(mktemp)" && cp -p "$policy" "$backup" || return 1
    fi
    printf '#!/bin/sh\n# temporary, written by twinlink scripts/services.sh\nexit 101\n' >"$policy" &&
        chmod 755 "$policy" || return 1

    local -a apt_opts=(-q -y -o DPkg::Lock::Timeout=600
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    {
        DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update &&
            DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install \
                --no-install-recommends "${pkgs[@]}"
    } </dev/null >>"$apt_log" 2>&1 || rc=$?

    if [[ -n "$backup" ]]; then
        cp -p "$backup" "$policy" && rm -f "$backup"
    else
        rm -f "$policy"
    fi

    if ((rc != 0)); then
        tl_show_log "$apt_log" 30
        tl_err "apt-get install ${pkgs[*]} failed (exit $rc)"
        return 1
    fi

    # Belt and braces: if a service got started anyway under systemd, stop it.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        systemctl stop postgresql.service mosquitto.service prometheus.service >/dev/null 2>&1 || true
    fi

    local -a still
    mapfile -t still < <(tl_missing_packages)
    if ((${#still[@]} != 0)); then
        tl_err "still missing after install: ${still[*]}"
        return 1
    fi
    tl_log "installed in $((SECONDS - start))s"
}

# -------------------------------------------------------------- postgresql

# Run a command as the postgres OS user (PostgreSQL refuses to run as root).
tl_pg_run() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Sets TL_PG_DATA, TL_PG_SOCK, TL_PG_LOG. Normally all in the state dir; if the
# postgres OS user cannot reach the state dir (e.g. a checkout under /root, mode
# 700), they go to /tmp/twinlink-pg-<hash of state dir> instead (the log gets a
# symlink in the state dir).
tl_pg_paths() {
    local base="$TL_STATE"
    if ((EUID == 0)) && id -u postgres >/dev/null 2>&1 &&
        ! tl_postgres_can_reach "$TL_STATE"; then
        base="/tmp/twinlink-pg-$(printf '%s' "$TL_STATE" | cksum | cut -d' ' -f1)"
    fi
    TL_PG_BASE="$base"
    TL_PG_DATA="$base/pg"
    TL_PG_SOCK="$base/pg-socket"
    TL_PG_LOG="$base/postgres.log"
    # Unix socket paths are limited to 107 bytes ("/.s.PGSQL.NNNNN" is 15).
    if ((${#TL_PG_SOCK} + 15 > 107)); then
        TL_PG_SOCK="/tmp/twinlink-pgsock-$(printf '%s' "$TL_STATE" | cksum | cut -d' ' -f1)"
    fi
}

# True if the postgres OS user can search dir $1, or could once it is created
# (checks the nearest existing ancestor).
tl_postgres_can_reach() {
    local d="$1"
    while [[ ! -d "$d" && "$d" != / ]]; do d="$(dirname "$d")"; done
    (cd / && runuser -u postgres -- test -x "$d") 2>/dev/null
}

# Port of a running cluster (from postmaster.pid), or fail if it's not running.
tl_pg_running_port() {
    tl_pg_paths
    [[ -f "$TL_PG_DATA/postmaster.pid" ]] || return 1
    tl_pg_run "$TL_PG_BIN/pg_ctl" -D "$TL_PG_DATA" status >/dev/null 2>&1 || return 1
    local port
    port="$(sed -n 4p "$TL_PG_DATA/postmaster.pid" 2>/dev/null)" || return 1
    [[ "$port" =~ ^[0-9]+$ ]] || return 1
    echo "$port"
}

tl_psql() {
    local port="$1"
    shift
    PGCONNECT_TIMEOUT=10 PGOPTIONS='-c client_min_messages=warning' \
        "$TL_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"
}

tl_pg_init() {
    if [[ -f "$TL_PG_DATA/PG_VERSION" ]]; then
        local v
        v="$(cat "$TL_PG_DATA/PG_VERSION")"
        if [[ "$v" != "$TL_PG_VERSION" ]]; then
            tl_err "$TL_PG_DATA holds a PostgreSQL $v cluster; delete it (or $TL_STATE) and retry"
            return 1
        fi
        return 0
    fi
    rm -rf "$TL_PG_DATA"
    mkdir -p "$TL_PG_DATA" || return 1
    if ((EUID == 0)); then chown postgres: "$TL_PG_DATA" || return 1; fi
    chmod 700 "$TL_PG_DATA"
    tl_log "initdb $TL_PG_DATA"
    if ! tl_pg_run "$TL_PG_BIN/initdb" -D "$TL_PG_DATA" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C --no-sync --no-instructions >>"$TL_PG_LOG" 2>&1; then
        tl_show_log "$TL_PG_LOG"
        tl_err "initdb failed"
        rm -rf "$TL_PG_DATA"
        return 1
    fi
    # Per-start settings (port, sockets) live in twinlink.conf, rewritten at each start.
    printf "\ninclude_if_exists = 'twinlink.conf'\n" >>"$TL_PG_DATA/postgresql.conf"
}

tl_pg_write_conf() {
    local port="$1" f="$TL_PG_DATA/twinlink.conf" sock="${TL_PG_SOCK//\'/\'\'}"
    cat >"$f" <<EOF
# written by scripts/services.sh at each start; test-only settings
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 256MB
logging_collector = off
EOF
    if ((EUID == 0)); then chown postgres: "$f" || return 1; fi
}

tl_pg_start() {
    tl_pg_paths
    local port
    if port="$(tl_pg_running_port)"; then
        tl_log "reusing running PostgreSQL on 127.0.0.1:$port ($TL_PG_DATA)"
    else
        if ((EUID == 0)) && ! id -u postgres >/dev/null 2>&1; then
            tl_err "OS user 'postgres' does not exist (it comes with the postgresql-$TL_PG_VERSION package)"
            return 1
        fi
        mkdir -p "$TL_STATE" "$TL_PG_BASE" "$TL_PG_SOCK" || return 1
        chmod 755 "$TL_PG_BASE"
        touch "$TL_PG_LOG"
        if [[ "$TL_PG_BASE" != "$TL_STATE" ]]; then
            tl_log "postgres OS user cannot reach $TL_STATE; cluster lives in $TL_PG_BASE"
            ln -sfn "$TL_PG_LOG" "$TL_STATE/postgres.log"
        fi
        if ((EUID == 0)); then
            chown postgres: "$TL_PG_SOCK" "$TL_PG_LOG" || return 1
            if ! (cd / && runuser -u postgres -- test -x "$TL_PG_BASE" -a -w "$TL_PG_SOCK" -a -w "$TL_PG_LOG"); then
                tl_err "the postgres OS user cannot use $TL_PG_BASE (a parent directory is not searchable?)"
                tl_err "set TWINLINK_TEST_STATE to a directory it can reach, e.g. /tmp/twinlink-test-services"
                return 1
            fi
        fi
        tl_pg_init || return 1

        local offset ok=0
        port="$TL_PG_PORT_DEFAULT"
        for _ in 1 2 3 4 5; do
            port="$(tl_free_port "$port")" || return 1
            tl_pg_write_conf "$port" || return 1
            offset=$(($(stat -c %s "$TL_PG_LOG") + 1))
            tl_log "starting PostgreSQL on 127.0.0.1:$port (log: $TL_PG_LOG)"
            if tl_pg_run "$TL_PG_BIN/pg_ctl" -D "$TL_PG_DATA" -l "$TL_PG_LOG" -w -t 60 start \
                >>"$TL_PG_LOG" 2>&1; then
                ok=1
                break
            fi
            # Lost a race for the port? Try the next one.
            if tail -c "+$offset" "$TL_PG_LOG" | grep -q 'Address already in use'; then
                port=$((port + 1))
                continue
            fi
            break
        done
        if ((ok == 0)); then
            tl_show_log "$TL_PG_LOG"
            tl_err "PostgreSQL failed to start (data dir $TL_PG_DATA)"
            return 1
        fi
    fi

    if ! "$TL_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 30; then
        tl_show_log "$TL_PG_LOG"
        tl_err "PostgreSQL on 127.0.0.1:$port does not accept connections"
        return 1
    fi
    local exists
    exists="$(tl_psql "$port" -d postgres -tA \
        -c "SELECT 1 FROM pg_database WHERE datname = '$TL_DB_NAME'" 2>>"$TL_PG_LOG")" || {
        tl_show_log "$TL_PG_LOG"
        tl_err "cannot query PostgreSQL on 127.0.0.1:$port"
        return 1
    }
    if [[ "$exists" != 1 ]]; then
        tl_psql "$port" -d postgres -c "CREATE DATABASE $TL_DB_NAME" 2>>"$TL_PG_LOG" || {
            tl_show_log "$TL_PG_LOG"
            tl_err "CREATE DATABASE $TL_DB_NAME failed"
            return 1
        }
    fi
    tl_psql "$port" -d "$TL_DB_NAME" -c "CREATE EXTENSION IF NOT EXISTS postgis" 2>>"$TL_PG_LOG" || {
        tl_show_log "$TL_PG_LOG"
        tl_err "CREATE EXTENSION postgis failed (is postgresql-$TL_PG_VERSION-postgis-3 installed?)"
        return 1
    }
    export TWINLINK_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/$TL_DB_NAME"
}

tl_pg_stop() {
    tl_pg_paths
    if tl_pg_running_port >/dev/null; then
        tl_log "stopping PostgreSQL ($TL_PG_DATA)"
        if ! tl_pg_run "$TL_PG_BIN/pg_ctl" -D "$TL_PG_DATA" -m fast -w -t 60 stop >>"$TL_PG_LOG" 2>&1; then
            tl_pg_run "$TL_PG_BIN/pg_ctl" -D "$TL_PG_DATA" -m immediate -w -t 30 stop >>"$TL_PG_LOG" 2>&1 || {
                tl_err "could not stop PostgreSQL ($TL_PG_DATA)"
                return 1
            }
        fi
    fi
    return 0
}

# --------------------------------------------------------------- mosquitto

# PID of our running mosquitto, or fail.
tl_mqtt_running_pid() {
    [[ -f "$TL_MQTT_PID" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$TL_MQTT_PID")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == mosquitto ]] || return 1
    echo "$pid"
}

tl_mqtt_running_port() {
    tl_mqtt_running_pid >/dev/null || return 1
    local port
    port="$(cat "$TL_MQTT_PORT_FILE" 2>/dev/null)" || return 1
    [[ "$port" =~ ^[0-9]+$ ]] && tl_port_open "$port" || return 1
    echo "$port"
}

tl_mqtt_write_conf() {
    local port="$1"
    {
        echo "# written by scripts/services.sh at each start"
        echo "per_listener_settings false"
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence true"
        echo "persistence_location $TL_MQTT_DIR/data/"
        echo "pid_file $TL_MQTT_PID"
        echo "log_dest file $TL_MQTT_LOG"
        echo "log_timestamp_format %Y-%m-%dT%H:%M:%S"
        echo "set_tcp_nodelay true"
        # As root, mosquitto would otherwise drop to the 'mosquitto' user, which
        # cannot write to our state dir.
        if ((EUID == 0)); then echo "user root"; fi
    } >"$TL_MQTT_DIR/mosquitto.conf"
}

tl_mqtt_start() {
    local port pid
    if port="$(tl_mqtt_running_port)"; then
        tl_log "reusing running Mosquitto on 127.0.0.1:$port"
        export TWINLINK_TEST_MQTT_URL="mqtt://127.0.0.1:$port"
        return 0
    fi
    # A stale instance (alive but not answering)? Stop it first.
    tl_mqtt_stop || return 1

    local bin
    bin="$(tl_mosquitto_bin)" || {
        tl_err "mosquitto is not installed"
        return 1
    }
    mkdir -p "$TL_MQTT_DIR/data" || return 1
    touch "$TL_MQTT_LOG"

    local offset i ok=0
    port="$TL_MQTT_PORT_DEFAULT"
    for _ in 1 2 3 4 5; do
        port="$(tl_free_port "$port")" || return 1
        tl_mqtt_write_conf "$port" || return 1
        rm -f "$TL_MQTT_PID"
        offset=$(($(stat -c %s "$TL_MQTT_LOG") + 1))
        tl_log "starting Mosquitto on 127.0.0.1:$port (log: $TL_MQTT_LOG)"
        # -d: daemonize (own session), startup errors before that go to the log.
        if ! "$bin" -c "$TL_MQTT_DIR/mosquitto.conf" -d </dev/null >>"$TL_MQTT_LOG" 2>&1; then
            break
        fi
        for ((i = 0; i < 100; i++)); do # up to ~10s
            if pid="$(tl_mqtt_running_pid)" && tl_port_open "$port"; then
                ok=1
                break
            fi
            if ((i > 5)) && ! tl_mqtt_running_pid >/dev/null; then
                break # died
            fi
            sleep 0.1
        done
        ((ok == 1)) && break
        tl_mqtt_stop >/dev/null 2>&1 || true
        if tail -c "+$offset" "$TL_MQTT_LOG" | grep -q 'Address already in use'; then
            port=$((port + 1))
            continue
        fi
        break
    done
    if ((ok == 0)); then
        tl_show_log "$TL_MQTT_LOG"
        tl_err "Mosquitto failed to start (config $TL_MQTT_DIR/mosquitto.conf)"
        return 1
    fi
    echo "$port" >"$TL_MQTT_PORT_FILE"
    export TWINLINK_TEST_MQTT_URL="mqtt://127.0.0.1:$port"
}

tl_mqtt_stop() {
    local pid i
    pid="$(tl_mqtt_running_pid)" || {
        rm -f "$TL_MQTT_PID"
        return 0
    }
    tl_log "stopping Mosquitto (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$TL_MQTT_PID"
}

# ------------------------------------------------------------------ public

tl_services_start() {
    # World-searchable, so that the postgres OS user can reach its files.
    (umask 022 && mkdir -p "$TL_STATE") || return 1
    tl_install_packages || return 1
    tl_pg_start || return 1
    tl_mqtt_start || return 1
}

tl_services_stop() {
    local rc=0
    tl_mqtt_stop || rc=1
    tl_pg_stop || rc=1
    return "$rc"
}

tl_services_env() {
    local pg mq
    pg="$(tl_pg_running_port)" || {
        tl_err "PostgreSQL is not running (scripts/services.sh start)"
        return 1
    }
    mq="$(tl_mqtt_running_port)" || {
        tl_err "Mosquitto is not running (scripts/services.sh start)"
        return 1
    }
    echo "export TWINLINK_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pg/$TL_DB_NAME"
    echo "export TWINLINK_TEST_MQTT_URL=mqtt://127.0.0.1:$mq"
}

tl_services_status() {
    local p
    tl_pg_paths
    if p="$(tl_pg_running_port)"; then
        echo "postgresql: running on 127.0.0.1:$p ($TL_PG_DATA)"
    else
        echo "postgresql: stopped"
    fi
    if p="$(tl_mqtt_running_port)"; then
        echo "mosquitto:  running on 127.0.0.1:$p (pid $(tl_mqtt_running_pid))"
    else
        echo "mosquitto:  stopped"
    fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    case "${1:-}" in
        start) tl_services_start && tl_services_env ;;
        stop) tl_services_stop ;;
        status) tl_services_status ;;
        env) tl_services_env ;;
        *)
            echo "usage: $0 start|stop|status|env" >&2
            exit 2
            ;;
    esac
fi
