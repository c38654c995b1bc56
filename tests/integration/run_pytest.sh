#!/usr/bin/env bash
# tests/integration/run_pytest.sh — runs one pytest suite for ctest.
#
# Usage: run_pytest.sh DIR [pytest args...]
# Exits 77 (skipped) when python3 lacks pytest or the openai SDK (tests/requirements.txt; ops/test
# installs them) or when CORTEX_SMOLLM2_GGUF does not name a file; otherwise pytest's status.
set -u
dir=$1
shift
py=${PYTHON:-python3}
if ! "$py" -c 'import pytest, openai' 2>/dev/null; then
    echo "pytest or openai not installed for $py: skipped"
    exit 77
fi
if [ -z "${CORTEX_SMOLLM2_GGUF:-}" ] || [ ! -f "$CORTEX_SMOLLM2_GGUF" ]; then
    echo "CORTEX_SMOLLM2_GGUF not set: skipped"
    exit 77
fi
exec "$py" -m pytest -q -p no:cacheprovider "$dir" "$@"
