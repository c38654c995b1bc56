#!/usr/bin/env bash
# tests/ops/package.sh — the .deb and .rpm packages, built by CPack and installed on this machine.
#
# Usage: package.sh BUILD_DIR   (a configured and built tree; ctest passes its own)
# Builds both .debs, installs them with dpkg (through apt-get, which waits for the dpkg lock),
# checks the files, the cortex user and the env files' permissions, runs `cortex-gateway --help`
# and `systemd-analyze verify` on the installed units, migrates a throwaway PostgreSQL with the
# installed `cortex migrate`, runs the retention unit's command, starts the installed gateway,
# scheduler and neuron as user cortex with the settings of their /etc/cortex/*.env (database,
# ports and models folder overridden; setpriv stands in for systemd's User=) and checks /health,
# /metrics, /healthz and the neuron's registration, then purges the packages. Then builds the
# .rpms and checks `rpm -qlp` / `rpm -qpR`.
# This installs into the machine itself: it needs root (exit 77 otherwise) and is meant for
# throwaway CI machines. Exit 77 also without dpkg, apt-get or PostgreSQL.
set -uo pipefail
src=${CORTEX_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${1:?usage: package.sh BUILD_DIR}
skip() { echo "$*: skipped"; exit 77; }
[ "$(id -u)" = 0 ] || skip "not root (the test installs packages)"
command -v dpkg >/dev/null && command -v apt-get >/dev/null || skip "no dpkg/apt-get"
command -v cpack >/dev/null || skip "no cpack"
[ -x /usr/lib/postgresql/15/bin/pg_ctl ] || command -v pg_ctl >/dev/null || skip "no PostgreSQL"
# shellcheck source=../../ops/lib/pg.sh
source "$src/ops/lib/pg.sh"

tmp=$(mktemp -d /tmp/cortex-package.XXXXXX)
chmod 755 "$tmp"
fails=0
gw_pid=""
apt_opts=(-y -qq -o DPkg::Lock::Timeout=300)
cleanup() {
    local p
    for p in ${gw_pid:-} ${sched_pid:-} ${nr_pid:-}; do kill "$p" 2>/dev/null; done
    pg_stop "$tmp/pg"
    if dpkg-query -W cortex-control-plane cortex-neuron >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get purge "${apt_opts[@]}" cortex-control-plane \
            cortex-neuron >/dev/null 2>&1
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}

echo "== building the .debs (cpack -G DEB in $build)"
(cd "$build" && cpack -G DEB -B "$tmp/deb") >"$tmp/cpack-deb.log" 2>&1 ||
    { cat "$tmp/cpack-deb.log"; echo "FAIL cpack -G DEB"; exit 1; }
cp_deb=$(ls "$tmp"/deb/cortex-control-plane_*.deb 2>/dev/null | head -1)
nr_deb=$(ls "$tmp"/deb/cortex-neuron_*.deb 2>/dev/null | head -1)
[ -f "$cp_deb" ] && [ -f "$nr_deb" ] || { ls "$tmp/deb"; echo "FAIL: the two .debs were not produced"; exit 1; }
ok "built $(basename "$cp_deb") and $(basename "$nr_deb")"
deps=$(dpkg-deb -f "$cp_deb" Depends)
for d in libpq5 libmicrohttpd12 libjansson4 libcurl4 postgresql-client; do
    [[ $deps == *"$d"* ]] && ok "cortex-control-plane depends on $d" || bad "cortex-control-plane lacks dependency $d ($deps)"
done
deps=$(dpkg-deb -f "$nr_deb" Depends)
for d in libpq5 libmicrohttpd12 libjansson4 libpcre2-8-0; do
    [[ $deps == *"$d"* ]] && ok "cortex-neuron depends on $d" || bad "cortex-neuron lacks dependency $d ($deps)"
done

echo "== installing with dpkg"
if dpkg-query -W cortex-control-plane cortex-neuron >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get purge "${apt_opts[@]}" cortex-control-plane cortex-neuron >/dev/null
fi
if ! DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" --no-install-recommends \
    "$cp_deb" "$nr_deb" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log"
    echo "FAIL installing the packages"
    exit 1
fi
ok "installed"
for f in /usr/bin/cortex-gateway /usr/bin/cortex-scheduler /usr/bin/neuron /usr/bin/neuron-run \
    /usr/lib/cortex/cortex /usr/lib/cortex/ops/migrate; do
    check "$f is executable" test -x "$f"
done
check "/usr/bin/cortex links to /usr/lib/cortex/cortex" test "$(readlink -f /usr/bin/cortex)" = /usr/lib/cortex/cortex
n_sql=$(ls "$src"/sql/*.sql | wc -l)
check "the $n_sql migrations in /usr/lib/cortex/sql" test "$(ls /usr/lib/cortex/sql/*.sql | wc -l)" = "$n_sql"
for u in cortex-gateway.service cortex-scheduler.service cortex-retention.service \
    cortex-retention.timer neuron.service; do
    check "unit $u installed" test -f /usr/lib/systemd/system/$u
done
check "user cortex exists" id cortex
check "user cortex has no login shell" sh -c 'getent passwd cortex | grep -q nologin'
for e in gateway scheduler neuron; do
    check "/etc/cortex/$e.env is root:cortex 0640" test "$(stat -c %U:%G:%a /etc/cortex/$e.env)" = root:cortex:640
done
check "/var/lib/cortex/models belongs to cortex" test "$(stat -c %U /var/lib/cortex/models)" = cortex
check "cortex-gateway --help" sh -c '/usr/bin/cortex-gateway --help | grep -q CORTEX_GATEWAY_DB'
check "cortex-scheduler --help" sh -c '/usr/bin/cortex-scheduler --help | grep -q CORTEX_PG'
check "neuron --help" sh -c '/usr/bin/neuron --help | grep -q CORTEX_NEURON_DB'
check "dpkg knows /etc/cortex/gateway.env as a conffile" sh -c 'dpkg-query -W -f="\${Conffiles}" cortex-control-plane | grep -q /etc/cortex/gateway.env'
if command -v systemd-analyze >/dev/null 2>&1; then
    out=$(cd /usr/lib/systemd/system && systemd-analyze verify cortex-gateway.service \
        cortex-scheduler.service cortex-retention.service cortex-retention.timer neuron.service 2>&1)
    [ $? = 0 ] && [ -z "$out" ] && ok "systemd-analyze verify on the installed units" ||
        bad "systemd-analyze verify on the installed units: $out"
fi

echo "== the installed gateway against a throwaway PostgreSQL"
pg_start "$tmp/pg" >/dev/null || { echo "FAIL pg_start"; exit 1; }
tcp_pg="host=127.0.0.1 port=$PGPORT user=postgres dbname=cortex"
if /usr/bin/cortex --db "$tcp_pg" migrate >"$tmp/migrate.log" 2>&1; then
    ok "cortex migrate (installed CLI and /usr/lib/cortex/ops/migrate)"
else
    cat "$tmp/migrate.log"
    bad "cortex migrate"
fi
# the retention job's command line, as systemd would run it (${CORTEX_PG} is one argument)
cmd=$(sed -n 's/^ExecStart=//p' /usr/lib/systemd/system/cortex-retention.service)
cmd=${cmd//\$\{CORTEX_PG\}/\"\$CORTEX_PG\"}
if (CORTEX_PG=$tcp_pg && eval "setpriv --reuid=cortex --regid=cortex --init-groups -- $cmd") >"$tmp/retention.log" 2>&1 &&
    [ "$(psql -X -Atqc "SELECT count(*) FROM pg_tables WHERE schemaname = 'cortex_part' AND tablename = 'requests_' || to_char(now() AT TIME ZONE 'UTC' + interval '3 days', 'YYYYMMDD')" "$tcp_pg")" = 1 ]; then
    ok "cortex-retention.service's command creates the partitions ahead"
else
    cat "$tmp/retention.log"
    bad "cortex-retention.service's command"
fi
# as_unit NAME ENV_FILE PROGRAM VAR=VALUE...: runs an installed program the way its unit does
# (user cortex, the env file's settings), with the test's own database and ports on top; sets
# unit_pid. setpriv stands in for systemd's User=/Group=.
as_unit() {
    local name=$1 envfile=$2 program=$3
    shift 3
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash -c 'set -a; . "$0"; set +a
        for kv in "${@:2}"; do export "$kv"; done
        cd / && exec setpriv --reuid=cortex --regid=cortex --init-groups -- "$1"' \
        "$envfile" "$program" "$@" >"$tmp/$name.log" 2>&1 &
    unit_pid=$!
}
# wait_url URL PID: waits up to 20 s for URL to answer 200 while PID lives.
wait_url() {
    local i
    for i in $(seq 1 200); do
        curl -sf "$1" >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
# stop_unit NAME PID: SIGTERM, expects exit status 0.
stop_unit() {
    kill -TERM "$2"
    wait "$2"
    local rc=$?
    [ $rc = 0 ] && ok "$1 exits 0 on SIGTERM" || { bad "$1 exit status $rc"; tail -20 "$tmp/$1.log"; }
}

api=$(pg_free_port)
metrics=$(pg_free_port)
as_unit gateway /etc/cortex/gateway.env /usr/bin/cortex-gateway CORTEX_GATEWAY_DB="$tcp_pg" \
    CORTEX_GATEWAY_LISTEN=127.0.0.1:$api CORTEX_GATEWAY_METRICS_LISTEN=127.0.0.1:$metrics
gw_pid=$unit_pid
if wait_url "http://127.0.0.1:$api/health" "$gw_pid"; then ok "installed gateway answers /health (as user cortex)"; else bad "installed gateway did not come up"; cat "$tmp/gateway.log"; fi
check "its process runs as cortex" test "$(stat -c %U "/proc/$gw_pid")" = cortex
age=""
for _ in $(seq 1 100); do
    age=$(curl -sf "http://127.0.0.1:$metrics/metrics" | sed -n 's/^cortex_gateway_snapshot_age_seconds //p')
    [ -n "$age" ] && awk -v a="$age" 'BEGIN { exit !(a >= 0) }' && break
    sleep 0.1
done
awk -v a="${age:--1}" 'BEGIN { exit !(a >= 0) }' && ok "it read its snapshot from PostgreSQL (snapshot age ${age}s)" ||
    bad "no snapshot from PostgreSQL (cortex_gateway_snapshot_age_seconds '${age}')"

# the installed scheduler and neuron the same way: they come up, lead and register
sport=$(pg_free_port)
as_unit scheduler /etc/cortex/scheduler.env /usr/bin/cortex-scheduler CORTEX_PG="$tcp_pg" \
    CORTEX_SCHEDULER_LISTEN=127.0.0.1:$sport
sched_pid=$unit_pid
if wait_url "http://127.0.0.1:$sport/healthz" "$sched_pid"; then ok "installed scheduler answers /healthz"; else bad "installed scheduler did not come up"; cat "$tmp/scheduler.log"; fi
mkdir -p "$tmp/models" && chmod 755 "$tmp/models"
nport=$(pg_free_port)
as_unit neuron /etc/cortex/neuron.env /usr/bin/neuron CORTEX_NEURON_DB="$tcp_pg" \
    CORTEX_NEURON_LISTEN=127.0.0.1:$nport CORTEX_NEURON_ADVERTISE=http://127.0.0.1:$nport \
    CORTEX_NEURON_NAME=pkg-node CORTEX_NEURON_MODELS_DIR="$tmp/models" \
    CORTEX_NEURON_MEMORY_BUDGET=1GiB
nr_pid=$unit_pid
if wait_url "http://127.0.0.1:$nport/healthz" "$nr_pid"; then ok "installed neuron answers /healthz"; else bad "installed neuron did not come up"; cat "$tmp/neuron.log"; fi
registered=0
for _ in $(seq 1 100); do
    [ "$(psql -X -Atqc "SELECT count(*) FROM cortex.nodes WHERE name = 'pkg-node'" "$tcp_pg")" = 1 ] && { registered=1; break; }
    sleep 0.1
done
[ $registered = 1 ] && ok "the installed neuron registered in PostgreSQL" || bad "the installed neuron did not register"
stop_unit neuron "$nr_pid"
stop_unit scheduler "$sched_pid"
stop_unit gateway "$gw_pid"
gw_pid="" sched_pid="" nr_pid=""
pg_stop "$tmp/pg"

echo "== removing"
if DEBIAN_FRONTEND=noninteractive apt-get purge "${apt_opts[@]}" cortex-control-plane cortex-neuron >"$tmp/purge.log" 2>&1; then
    ok "purged"
else
    cat "$tmp/purge.log"
    bad "purge"
fi
check "/usr/bin/cortex-gateway is gone" test ! -e /usr/bin/cortex-gateway
check "/usr/lib/cortex is gone" test ! -e /usr/lib/cortex

echo "== the .rpms"
if command -v rpmbuild >/dev/null 2>&1 && command -v rpm >/dev/null 2>&1; then
    if (cd "$build" && cpack -G RPM -B "$tmp/rpm") >"$tmp/cpack-rpm.log" 2>&1; then
        cp_rpm=$(ls "$tmp"/rpm/cortex-control-plane-*.rpm 2>/dev/null | head -1)
        nr_rpm=$(ls "$tmp"/rpm/cortex-neuron-*.rpm 2>/dev/null | head -1)
        if [ -f "$cp_rpm" ] && [ -f "$nr_rpm" ]; then
            ok "built $(basename "$cp_rpm") and $(basename "$nr_rpm")"
            files=$(rpm -qlp "$cp_rpm" 2>/dev/null)
            for f in /usr/bin/cortex-gateway /usr/bin/cortex-scheduler /usr/bin/cortex \
                /usr/lib/cortex/ops/migrate /usr/lib/cortex/sql/0001_core.sql \
                /usr/lib/systemd/system/cortex-gateway.service /etc/cortex/gateway.env; do
                grep -qx "$f" <<<"$files" && ok "rpm -qlp control plane: $f" || bad "rpm -qlp control plane lacks $f"
            done
            files=$(rpm -qlp "$nr_rpm" 2>/dev/null)
            for f in /usr/bin/neuron /usr/lib/systemd/system/neuron.service /etc/cortex/neuron.env; do
                grep -qx "$f" <<<"$files" && ok "rpm -qlp neuron: $f" || bad "rpm -qlp neuron lacks $f"
            done
            check "the control-plane rpm requires libpq" sh -c "rpm -qpR '$cp_rpm' 2>/dev/null | grep -qx libpq"
            check "the rpm's %post creates the user" sh -c "rpm -qp --scripts '$cp_rpm' 2>/dev/null | grep -q useradd"
            check "the rpm marks gateway.env %config" sh -c "rpm -qpc '$cp_rpm' 2>/dev/null | grep -qx /etc/cortex/gateway.env"
        else
            cat "$tmp/cpack-rpm.log"
            bad "the two .rpms were not produced"
        fi
    else
        cat "$tmp/cpack-rpm.log"
        bad "cpack -G RPM"
    fi
else
    echo "skip the .rpms: rpmbuild not installed (Debian package rpm)"
fi

echo
if [ $fails = 0 ]; then echo "package: all checks passed"; else echo "package: $fails checks failed"; fi
[ $fails = 0 ]
