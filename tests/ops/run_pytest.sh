#!/usr/bin/env bash
# tests/ops/run_pytest.sh — runs one pytest file of tests/ops for ctest.
#
# Usage: run_pytest.sh FILE [pytest args...]
# Output is not captured (-s), so the tests' summary lines (PENDING metric names, request
# counts around the kill) reach the ctest log. Exits 77 (skipped) when python3 lacks pytest, or
# when every test of the file skipped itself (a tool, binary or model it needs is absent:
# conftest.py turns that into 77); otherwise pytest's status.
set -u
file=$1
shift
py=${PYTHON:-python3}
if ! "$py" -c 'import pytest' 2>/dev/null; then
    echo "pytest not installed for $py: skipped"
    exit 77
fi
exec "$py" -m pytest -q -s -rs -p no:cacheprovider "$file" "$@"
