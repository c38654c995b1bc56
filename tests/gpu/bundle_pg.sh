#!/usr/bin/env bash
# tests/gpu/bundle_pg.sh — this host's PostgreSQL 15 server and client (Debian 12's packages) in
# one folder that runs on a GPU machine without PostgreSQL, libpq or network.
#
# Usage: tests/gpu/bundle_pg.sh OUT_DIR [PG_PREFIX]
#   OUT_DIR:   replaced by usr/lib/postgresql/15/{bin,lib}, usr/share/postgresql/15, lib/ (the
#              shared libraries) and MANIFEST; run it with PATH=OUT_DIR/usr/lib/postgresql/15/bin
#              and LD_LIBRARY_PATH=OUT_DIR/lib
#   PG_PREFIX: the installation to copy (default /usr: Debian's layout)
#
# Why this layout: PostgreSQL finds its share directory (postgres.bki, timezonesets, tsearch
# data) and its loadable modules (plpgsql.so, dict_snowball.so) relative to its own binary when
# they are moved together: Debian's bin/ -> ../../../../share/postgresql/15 and bin/ -> ../lib.
# Keeping Debian's relative layout under OUT_DIR keeps both paths right wherever OUT_DIR lies.
#
# Time zones: Debian builds PostgreSQL --with-system-tzdata=/usr/share/zoneinfo, an absolute path
# a bare machine may lack. The server then only knows "GMT" (built in) and POSIX zone strings; a
# cluster made with TZ=GMT (initdb writes timezone and log_timezone from TZ) needs no zone
# files. tp_fleet.sh does so; this script checks nothing at run time.
#
# Left out: the LLVM JIT (llvmjit.so and bitcode/: run with jit=off), manual pages, and every
# program but postgres, initdb, pg_ctl, psql and pg_isready. Shared libraries: as in bundle.sh,
# everything ldd resolves except glibc's own libraries and the C++ runtime (about 40 MB, mostly
# ICU's data).
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 OUT_DIR [PG_PREFIX]" >&2; exit 2; }
out=$1
prefix=${2:-/usr}
bin=$prefix/lib/postgresql/15/bin
[ -x "$bin/postgres" ] || { echo "$bin/postgres not found (apt-get install postgresql-15)" >&2; exit 1; }

source "$(dirname "${BASH_SOURCE[0]}")/bundle_lib.sh"

rm -rf "$out"
pgbin=$out/usr/lib/postgresql/15/bin
pglib=$out/usr/lib/postgresql/15/lib
pgshare=$out/usr/share/postgresql/15
mkdir -p "$pgbin" "$pglib" "$pgshare" "$out/lib"
for p in postgres initdb pg_ctl psql pg_isready; do
    cp "$bin/$p" "$pgbin/"
done
# every loadable module but the JIT (initdb loads plpgsql and dict_snowball; the rest are small)
for so in "$prefix"/lib/postgresql/15/lib/*.so; do
    [ "$(basename "$so")" = llvmjit.so ] || cp "$so" "$pglib/"
done
(cd "$prefix/share/postgresql/15" && tar --exclude=./man -cf - .) | (cd "$pgshare" && tar -xf -)

{
    echo "# made by tests/gpu/bundle_pg.sh on $(uname -n), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# $("$bin/postgres" --version); glibc $(ldd --version | head -1 | awk '{print $NF}')"
} >"$out/MANIFEST"

bundle_libs "$out/lib" "$out/MANIFEST" "$BUNDLE_HOST_PROVIDED" "$pgbin"/* "$pglib"/*.so
bundle_check_resolved "$out/lib" "$pgbin"/* "$pglib"/*.so || exit 1
strip --strip-unneeded "$out"/lib/*.so* "$pglib"/*.so 2>/dev/null || true
echo "$out: PostgreSQL $("$bin/postgres" -V | awk '{print $3}'), $(ls "$out/lib" | wc -l)" \
    "libraries bundled, $(du -sh "$out" | cut -f1) in all"
