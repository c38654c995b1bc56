#!/usr/bin/env bash
# tests/integration/gateway/run.sh — runs the gateway's SDK tests for ctest.
#
# Usage: run.sh GATEWAY_BINARY [pytest args...]
# Exits 77 (skipped) when python3 lacks pytest, openai or anthropic (tests/requirements.txt;
# ops/test installs them); otherwise pytest's status.
set -u
bin=$1
shift
py=${PYTHON:-python3}
if ! "$py" -c 'import pytest, openai, anthropic' 2>/dev/null; then
    echo "pytest, openai or anthropic not installed for $py: skipped"
    exit 77
fi
export CORTEX_GATEWAY_BIN=$bin
exec "$py" -m pytest -q -p no:cacheprovider "$(dirname "${BASH_SOURCE[0]}")" "$@"
