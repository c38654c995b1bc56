# ops/lib/deps.sh — install what Cortex needs on a Debian/Ubuntu machine (sourced by ops/*).
#
#   deps_apt                 installs the missing Debian packages (as root or through sudo)
#   deps_venv                creates/updates the Python test virtualenv under $CORTEX_CACHE/venv
#                            from tests/requirements.txt and puts it first on PATH
# CORTEX_CACHE defaults to ~/.cache/cortex; everything downloaded lives there.
# The last line of packages serves the operations tests (tests/ops): HAProxy, promtool (in
# Debian's prometheus), rpmbuild (rpm, for CPack's .rpm) and systemd-analyze (systemd; it need
# not run as PID 1).

: "${CORTEX_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/cortex}"
export CORTEX_CACHE

CORTEX_APT_PACKAGES="build-essential cmake pkg-config git python3 python3-venv clang-format
clang libclang-rt-14-dev
libpq-dev libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev check libpcre2-dev
postgresql-15 postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
curl haproxy prometheus rpm systemd"

deps_sudo() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

deps_apt() {
    local missing="" p
    for p in $CORTEX_APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "== installing Debian packages:$missing"
    deps_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    deps_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
}

deps_venv() {
    local root=$1 venv="$CORTEX_CACHE/venv" req="$1/tests/requirements.txt" stamp
    mkdir -p "$CORTEX_CACHE"
    if [ ! -x "$venv/bin/python" ]; then
        echo "== creating Python virtualenv $venv"
        python3 -m venv "$venv"
    fi
    stamp="$venv/.requirements.sha256"
    if [ -f "$req" ] && ! sha256sum -c --status "$stamp" 2>/dev/null; then
        echo "== installing Python test packages into $venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
        sha256sum "$req" >"$stamp"
    fi
    export PATH="$venv/bin:$PATH"
}
