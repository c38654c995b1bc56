#!/usr/bin/env bash
# bench/gateway_overhead.sh — builds what the gateway benchmark needs and runs it:
# a Release cortex-gateway (no sanitizers) in build/release, bench/fake_upstream.c compiled with
# -O2, wrk from Debian (installed when missing), the open-file limit raised for thousands of
# streams; then bench/gateway_overhead.py with the given arguments (see its --help).
#
# Usage: bench/gateway_overhead.sh [--runs 5] [--duration 10] [--streams 6000] [--json OUT]
# Check `uptime` first: on a shared machine, run it when the load is low, and record the load.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${CORTEX_BUILD:-$root/build}/release
if ! command -v wrk >/dev/null; then
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCORTEX_CUDA=OFF >/dev/null
cmake --build "$build" -j2 --target cortex-gateway >/dev/null
cc -O2 -Wall -Wextra -pthread -o "$build/fake_upstream" "$root/bench/fake_upstream.c"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" # containers may cap the hard limit
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec python3 "$root/bench/gateway_overhead.py" --gateway "$build/gateway/cortex-gateway" \
    --upstream "$build/fake_upstream" "$@"
