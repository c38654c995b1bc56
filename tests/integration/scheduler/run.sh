#!/usr/bin/env bash
# tests/integration/scheduler/run.sh — runs the scheduler integration suite for ctest.
#
# Usage: run.sh NEURON_BIN SCHEDULER_BIN [pytest args...]
# Exits 77 (skipped) when python3 lacks pytest (tests/requirements.txt; ops/test installs it) or
# PostgreSQL 15's server programs or psql are missing; otherwise pytest's status.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CORTEX_NEURON_BIN=$1 CORTEX_SCHEDULER_BIN=$2
shift 2
export CORTEX_SOURCE_DIR=${CORTEX_SOURCE_DIR:-$(cd "$here/../../.." && pwd)}
py=${PYTHON:-python3}
if ! "$py" -c 'import pytest' 2>/dev/null; then
    echo "pytest not installed for $py: skipped"
    exit 77
fi
if ! command -v psql >/dev/null ||
    { [ ! -x /usr/lib/postgresql/15/bin/pg_ctl ] && ! command -v pg_ctl >/dev/null; }; then
    echo "PostgreSQL (pg_ctl, psql) not installed: skipped"
    exit 77
fi
exec "$py" -m pytest -q -p no:cacheprovider "$here" "$@"
