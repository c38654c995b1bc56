# ops/lib/pg.sh — start and stop a private, throwaway PostgreSQL 15 cluster.
#
# Sourced by ops/test, ops/demo and test scripts. The cluster lives entirely in one folder
# (data/, sock/, log), listens on a unix socket in that folder and on 127.0.0.1:PORT, and trusts
# local connections as the superuser "postgres". Under root, initdb and the server run as the
# unprivileged "postgres" account (PostgreSQL refuses to run as root).
#
#   pg_start DIR [PORT]   initdb (if needed) and start; exports PGHOST PGPORT PGUSER PGDATABASE
#                         and CORTEX_PG (a libpq connection string to the "cortex" database)
#   pg_stop DIR           fast shutdown (no-op when not running)
#   pg_free_port          prints a free TCP port on 127.0.0.1

pg_bindir() {
    if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
        echo /usr/lib/postgresql/15/bin
    else
        dirname "$(command -v pg_ctl)"
    fi
}

pg_free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# Runs a command as the account that owns the cluster.
pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    local dir=$1 port=${2:-} bin
    bin=$(pg_bindir)
    [ -n "$port" ] || port=$(pg_free_port)
    mkdir -p "$dir/sock"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
        chown -R postgres: "$dir"
        chmod 755 "$dir"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
            --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; return 1; }
    fi
    pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
        start >/dev/null || { cat "$dir/server.log" >&2; return 1; }
    export PGHOST="$dir/sock" PGPORT="$port" PGUSER=postgres PGDATABASE=cortex
    if ! psql -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'cortex'" | grep -q 1; then
        psql -d postgres -qc "CREATE DATABASE cortex" >/dev/null
    fi
    export CORTEX_PG="host=$dir/sock port=$port user=postgres dbname=cortex"
}

pg_stop() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] || return 0
    pg_as_owner "$(pg_bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}
