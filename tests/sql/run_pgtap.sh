#!/usr/bin/env bash
# tests/sql/run_pgtap.sh — migration checks and the pgTAP suite against a scratch database.
#
# Needs CORTEX_TEST_PG: a libpq connection string (key=value or URI) to an existing database
# on a server where this role may create databases. Exits 77 (ctest "skipped") without it.
#
# Steps, each one a check that fails the run:
#   1. create a scratch database with a unique name (dropped again on exit);
#   2. ops/migrate applies every sql/NNNN_*.sql to it; a second run applies nothing and the
#      schema is byte-for-byte the same (pg_dump --schema-only);
#   3. a copy of sql/ plus a migration that fails half-way: the runner exits non-zero and
#      nothing of that migration exists afterwards; a later good migration is not applied;
#      editing an applied migration (checksum mismatch) and numbering a new one below the
#      applied versions are refused;
#   4. two runners started at once on a second empty database apply each version once;
#   5. every column of `\d+ cortex.placements` shows a description;
#   6. NOTIFY: a LISTENing session sees cortex_demand / cortex_placement notifications whose
#      payload is only the new row's id;
#   7. pg_prove runs tests/sql/test_*.sql (each file is one transaction rolled back at its end),
#      last, so that its summary closes the output.
set -uo pipefail

if [ -z "${CORTEX_TEST_PG:-}" ]; then
    echo "run_pgtap: CORTEX_TEST_PG is not set; skipping"
    exit 77
fi
src=${CORTEX_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
migrate="$src/ops/migrate"
pgbin=/usr/lib/postgresql/15/bin
[ -x "$pgbin/pg_dump" ] || pgbin=$(dirname "$(command -v pg_dump)")

failures=0
fail() {
    echo "not ok - $*"
    failures=$((failures + 1))
}
pass() { echo "ok - $*"; }

# conn_for DB: CORTEX_TEST_PG pointed at database DB (key=value strings take the last dbname;
# URIs get their path replaced).
conn_for() {
    local db=$1
    if [[ $CORTEX_TEST_PG =~ ^postgres(ql)?:// ]]; then
        if [[ $CORTEX_TEST_PG =~ ^(postgres(ql)?://[^/?]*)(/[^?]*)?(\?.*)?$ ]]; then
            echo "${BASH_REMATCH[1]}/$db${BASH_REMATCH[4]}"
        else
            echo "$CORTEX_TEST_PG"
        fi
    else
        echo "$CORTEX_TEST_PG dbname=$db"
    fi
}

admin_psql() { psql -X -q -v ON_ERROR_STOP=1 -d "$CORTEX_TEST_PG" "$@"; }

suffix="$$_$(date +%s)_$RANDOM"
db1="cortex_test_$suffix"
db2="cortex_test_${suffix}_race"
tmp=$(mktemp -d)
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    admin_psql -c "DROP DATABASE IF EXISTS $db1 WITH (FORCE)" -c "DROP DATABASE IF EXISTS $db2 WITH (FORCE)" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT

admin_psql -c "CREATE DATABASE $db1" -c "CREATE DATABASE $db2" ||
    { echo "run_pgtap: cannot create scratch databases via CORTEX_TEST_PG"; exit 1; }
c1=$(conn_for "$db1")
c2=$(conn_for "$db2")
q1() { psql -X -At -v ON_ERROR_STOP=1 -d "$c1" -c "$1"; }

n_files=$(find "$src/sql" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]_*.sql' | wc -l)
last_version=$(find "$src/sql" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]_*.sql' -printf '%f\n' |
    sort | tail -1 | cut -c1-4 | sed 's/^0*//')

# schema_dump: the scratch database's schema, minus the random \restrict key of newer pg_dumps.
schema_dump() {
    "$pgbin/pg_dump" --schema-only -d "$c1" 2>&1 | grep -Ev '^\\(un)?restrict '
}

# --- 2. apply, then re-apply as a no-op ------------------------------------------------------------
if out=$("$migrate" "$c1" 2>&1); then
    applied=$(grep -c '^applied ' <<<"$out")
    if [ "$applied" = "$n_files" ] && [ "$(q1 'SELECT count(*) FROM cortex_meta.schema_migrations')" = "$n_files" ]; then
        pass "migrations apply to an empty database ($applied files)"
    else
        fail "expected $n_files migrations applied and recorded, got: $out"
    fi
else
    fail "migrations failed on an empty database: $out"
fi
schema_dump >"$tmp/schema1.sql"
if out=$("$migrate" "$c1" 2>&1) && grep -q '^nothing to apply: database is at version '"$last_version"'$' <<<"$out" &&
    ! grep -q '^applied ' <<<"$out"; then
    pass "a second run is a no-op"
else
    fail "a second run was not a no-op: $out"
fi
schema_dump >"$tmp/schema2.sql"
if [ "$(q1 'SELECT count(*) FROM cortex_meta.schema_migrations')" = "$n_files" ] &&
    grep -q '^CREATE TABLE cortex.placements ' "$tmp/schema1.sql" &&
    cmp -s "$tmp/schema1.sql" "$tmp/schema2.sql"; then
    pass "the second run left the schema and the version table unchanged"
else
    fail "the second run changed the schema or the version table"
fi
if out=$("$migrate" --status "$c1" 2>&1) && grep -q '; 0 pending$' <<<"$out"; then
    pass "--status reports nothing pending"
else
    fail "--status: $out"
fi

# --- 3. a broken migration rolls back completely -------------------------------------------------
mkdir "$tmp/sql"
cp "$src"/sql/[0-9][0-9][0-9][0-9]_*.sql "$tmp/sql/"
broken=$(printf '%04d_broken.sql' $((last_version + 1)))
later=$(printf '%04d_later.sql' $((last_version + 2)))
cat >"$tmp/sql/$broken" <<'SQL'
-- A test migration that does real work and then fails.
CREATE TABLE cortex.half_applied (id integer);
INSERT INTO cortex.half_applied VALUES (1);
ALTER TABLE cortex.models ADD COLUMN half_applied integer;
SELECT cortex.set_setting('defrag_after_cycles', '99');
SELECT 1 / 0;
SQL
cat >"$tmp/sql/$later" <<'SQL'
-- A good migration after the broken one: must not be applied when the broken one fails.
CREATE TABLE cortex.after_broken (id integer);
SQL
if "$migrate" --dir "$tmp/sql" "$c1" >"$tmp/broken.out" 2>&1; then
    fail "a failing migration made the runner succeed"
else
    pass "a failing migration makes the runner fail"
fi
if grep -q "$broken failed and was rolled back" "$tmp/broken.out" &&
    [ "$(q1 "SELECT to_regclass('cortex.half_applied') IS NULL AND to_regclass('cortex.after_broken') IS NULL")" = t ] &&
    [ "$(q1 "SELECT count(*) FROM pg_attribute WHERE attrelid = 'cortex.models'::regclass AND attname = 'half_applied'")" = 0 ] &&
    [ "$(q1 "SELECT value FROM cortex.settings WHERE key = 'defrag_after_cycles'")" = 30 ] &&
    [ "$(q1 'SELECT count(*) FROM cortex_meta.schema_migrations')" = "$n_files" ]; then
    pass "nothing of the failing migration (or the next one) was applied or recorded"
else
    fail "the failing migration left traces: $(cat "$tmp/broken.out")"
fi
rm "$tmp/sql/$broken" "$tmp/sql/$later"

echo "-- an edit" >>"$tmp/sql/0001_core.sql"
if out=$("$migrate" --dir "$tmp/sql" "$c1" 2>&1); then
    fail "an edited applied migration was accepted"
elif grep -q 'checksum mismatch' <<<"$out"; then
    pass "an edited applied migration is refused (checksum mismatch)"
else
    fail "an edited applied migration failed for another reason: $out"
fi
cp "$src/sql/0001_core.sql" "$tmp/sql/0001_core.sql"
mv "$tmp/sql/$(basename "$(ls "$tmp"/sql/0002_*.sql)")" "$tmp/sql/0002_renamed_away.sql.off"
echo "SELECT 1;" >"$tmp/sql/0000_too_early.sql"
if out=$("$migrate" --dir "$tmp/sql" "$c1" 2>&1); then
    fail "a missing applied file and an out-of-order file were accepted"
elif grep -q 'is missing from' <<<"$out" && grep -q 'numbered below the latest applied version' <<<"$out"; then
    pass "a missing applied file and a migration numbered below applied ones are refused"
else
    fail "unexpected refusal message: $out"
fi

# --- 4. concurrent runners ----------------------------------------------------------------------
"$migrate" "$c2" >"$tmp/race1.out" 2>&1 &
p1=$!
"$migrate" "$c2" >"$tmp/race2.out" 2>&1 &
p2=$!
r1=0 r2=0
wait $p1 || r1=$?
wait $p2 || r2=$?
done_count=$(psql -X -At -d "$c2" -c 'SELECT count(*), count(DISTINCT version) FROM cortex_meta.schema_migrations')
applied_total=$(cat "$tmp/race1.out" "$tmp/race2.out" | grep -c '^applied ')
if [ $r1 = 0 ] && [ $r2 = 0 ] && [ "$done_count" = "$n_files|$n_files" ] && [ "$applied_total" = "$n_files" ]; then
    pass "two concurrent runners apply each migration exactly once"
else
    fail "concurrent runners: rc $r1/$r2, rows $done_count, applied $applied_total: $(cat "$tmp/race1.out" "$tmp/race2.out")"
fi

# --- 5. \d+ cortex.placements documents every column ---------------------------------------------
desc=$(psql -X -A -F '|' -d "$c1" -c '\d+ cortex.placements' | awk -F'|' '
    NR == 2 && $1 == "Column" { for (i = 1; i <= NF; i++) if ($i == "Description") d = i; next }
    d && NF >= d { n++; if ($d == "") { missing = missing " " $1 } }
    /^Indexes:/ { exit }
    END { print n ":" missing }')
if [[ $desc =~ ^([0-9]+):$ ]] && [ "${BASH_REMATCH[1]}" -ge 10 ]; then
    pass "\\d+ cortex.placements shows a description for all ${BASH_REMATCH[1]} columns"
else
    fail "\\d+ cortex.placements: columns without a description: $desc"
fi

# --- 6. NOTIFY carries only an id ----------------------------------------------------------------
notify_out=$(psql -X -At -v ON_ERROR_STOP=1 -d "$c2" 2>&1 <<'SQL'
LISTEN cortex_demand;
LISTEN cortex_placement;
SELECT 'model=' || cortex.add_model('notify-test');
SELECT 'demand=' || cortex.demand_load('notify-test', 'gw-test');
SELECT 'node=' || cortex.node_register('notify-node', 'http://127.0.0.1:1', '[{"kind":"cpu","ordinal":0,"memory_total_bytes":1000000}]');
SELECT 'epoch=' || cortex.lease_acquire('notify-test');
SELECT 'placement=' || cortex.placement_create(cortex.lease_acquire('notify-test'),
    cortex.resolve_model('notify-test'),
    (SELECT id FROM cortex.nodes WHERE name = 'notify-node'),
    ARRAY(SELECT g.id FROM cortex.gpus g JOIN cortex.nodes n ON n.id = g.node_id WHERE n.name = 'notify-node'));
SELECT 'loading=' || cortex.placement_transition((SELECT max(id) FROM cortex.placements), 'loading');
SQL
)
demand_id=$(sed -n 's/^demand=//p' <<<"$notify_out")
placement_id=$(sed -n 's/^placement=//p' <<<"$notify_out")
if [ -n "$demand_id" ] &&
    grep -q "^Asynchronous notification \"cortex_demand\" with payload \"$demand_id\" received" <<<"$notify_out"; then
    pass "new demand sends NOTIFY cortex_demand with only its id ($demand_id)"
else
    fail "no cortex_demand notification carrying the demand id: $notify_out"
fi
placement_payloads=$(sed -n 's/^Asynchronous notification "cortex_placement" with payload "\([^"]*\)".*/\1/p' <<<"$notify_out" | sort -u)
if [ -n "$placement_id" ] && [ "$placement_payloads" = "$placement_id" ] &&
    [ "$(grep -c '^Asynchronous notification "cortex_placement"' <<<"$notify_out")" = 2 ]; then
    pass "placement insert and transition each send NOTIFY cortex_placement with only its id"
else
    fail "cortex_placement notifications wrong (want 2 with payload $placement_id): $notify_out"
fi

if [ $failures = 0 ]; then
    echo "run_pgtap: all checks before pg_prove passed"
else
    echo "run_pgtap: $failures check(s) failed"
fi

# pg_prove runs last so that its summary closes the output.
# --- 7. pgTAP -----------------------------------------------------------------------------------
if ! q1 'CREATE EXTENSION IF NOT EXISTS pgtap' >/dev/null; then
    fail "cannot install the pgtap extension (Debian: postgresql-15-pgtap)"
elif ! command -v pg_prove >/dev/null; then
    fail "pg_prove not found (Debian: libtap-parser-sourcehandler-pgtap-perl)"
elif {
    # pg_prove cannot pass a connection string through --dbname, so give it a psql that has
    # the scratch database built in.
    printf '#!/bin/sh\nexec psql -d %q "$@"\n' "$c1" >"$tmp/psql"
    chmod +x "$tmp/psql"
    pg_prove --psql "$tmp/psql" "$src"/tests/sql/test_*.sql
}; then
    :
else
    failures=$((failures + 1))
fi

[ $failures = 0 ]
