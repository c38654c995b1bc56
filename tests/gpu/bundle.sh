#!/usr/bin/env bash
# tests/gpu/bundle.sh — a CUDA build of the neuron plus the shared libraries a bare GPU machine
# lacks, in one folder that runs there with LD_LIBRARY_PATH.
#
# Usage: tests/gpu/bundle.sh BUILD_DIR OUT_DIR
#   BUILD_DIR: a CUDA build (cmake -DCORTEX_CUDA=ON, targets neuron and neuron-run; for
#              tp_fleet.sh also cortex-scheduler, cortex and cortex-gateway)
#   OUT_DIR:   replaced by bin/neuron, bin/neuron-run, bin/cortex-scheduler, bin/cortex,
#              bin/cortex-gateway (those built), lib/*.so.* and MANIFEST
#
# Why: GPU machines (CUDA, jansson, glibc) have no libmicrohttpd, libpq or PCRE2, and often no
# network to install them. Every library ldd resolves goes into lib/ (under its soname, links
# followed) except those every GPU host has: glibc's own libraries, the C++ runtime and
# libgcc_s, and the NVIDIA driver and CUDA runtime libraries (libcuda, libcudart, cuBLAS, NCCL,
# ...), which must come from the host, matching its driver (NCCL is also 200 MB: tp_fleet.sh
# finds the host's, PyTorch's wheel included). Bundling the rest whole (libpq's Kerberos
# and LDAP, libmicrohttpd's GnuTLS and their own dependencies) keeps the set consistent: it
# does not depend on which versions the target distribution happens to ship. The build host's
# glibc must be no newer than the target's (Debian 12's 2.36 runs on Ubuntu 24.04's 2.39).
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 BUILD_DIR OUT_DIR" >&2; exit 2; }
build=$1
out=$2
neuron=$build/neuron/neuron
[ -x "$neuron" ] || { echo "$neuron not found: build the neuron target first" >&2; exit 1; }

# sonames the target host provides itself
source "$(dirname "${BASH_SOURCE[0]}")/bundle_lib.sh"
host_provided="$BUNDLE_HOST_PROVIDED|libcuda|libcudart|libcublas|libcublasLt|libnvrtc|libnvJitLink|libnccl|libnvidia-[a-z-]+"

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp "$neuron" "$out/bin/"
for extra in neuron/neuron-run scheduler/cortex-scheduler scheduler/cortex gateway/cortex-gateway; do
    [ -x "$build/$extra" ] && cp "$build/$extra" "$out/bin/"
done

{
    echo "# made by tests/gpu/bundle.sh on $(uname -n), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# glibc $(ldd --version | head -1 | awk '{print $NF}'); built from $(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)"
} >"$out/MANIFEST"

bundle_libs "$out/lib" "$out/MANIFEST" "$host_provided" "$out"/bin/*
bundle_check_resolved "$out/lib" "$out"/bin/* || exit 1
strip --strip-unneeded "$out"/lib/*.so* 2>/dev/null || true
echo "$out: $(ls "$out/lib" | wc -l) libraries bundled, $(du -sh "$out" | cut -f1) in all"
