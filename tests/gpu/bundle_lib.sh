# tests/gpu/bundle_lib.sh — sourced by bundle.sh and bundle_pg.sh: copies the shared libraries
# that programs need into a bundle, except those every host has itself.

# The libraries glibc and the compiler runtime bring: never bundled (bundle.sh adds the NVIDIA
# driver's and the CUDA toolkit's to it).
BUNDLE_HOST_PROVIDED='linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|libgcc_s|libstdc\+\+'

# bundle_libs LIBDIR MANIFEST HOST_RE FILE...: every library ldd resolves for the FILEs (the
# whole closure: dependencies of dependencies too) whose soname does not match ^(HOST_RE)\.so
# is copied into LIBDIR under its soname; MANIFEST gets a line per library saying which.
bundle_libs() {
    local libdir=$1 manifest=$2 host=$3
    shift 3
    local f soname path
    for f in "$@"; do
        ldd "$f"
    done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u | while read -r soname path; do
        if [[ $soname =~ ^($host)\.so ]]; then
            echo "host   $soname" >>"$manifest"
        else
            cp -L "$path" "$libdir/$soname"
            echo "bundle $soname  ($path)" >>"$manifest"
        fi
    done
}

# bundle_check_resolved LIBDIR FILE...: fails (status 1, the culprits on stderr) when a FILE
# still has a library ldd cannot find with LIBDIR on the search path.
bundle_check_resolved() {
    local libdir=$1 f
    shift
    for f in "$@"; do
        if LD_LIBRARY_PATH=$libdir ldd "$f" | grep -q "not found"; then
            echo "unresolved libraries of $f:" >&2
            LD_LIBRARY_PATH=$libdir ldd "$f" | grep "not found" >&2
            return 1
        fi
    done
}
