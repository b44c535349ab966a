#!/usr/bin/env bash
# Obtains an Erlang/OTP for the interop matrix (scripts/test-otp.sh), once per machine:
#
#   scripts/otp.sh 25    the system's OTP (Debian's erlang packages, /usr/lib/erlang)
#   scripts/otp.sh 27    OTP 27 built from Debian trixie's `erlang` source package
#   scripts/otp.sh 29    OTP 29 from Debian sid's binary packages, run with sid's C library
#
# On success prints the OTP's root (ROOT/bin has erl, erlc and ct_run that run it) and exits
# 0. An OTP that cannot be had (no mirror, a failed build, a binary that will not start)
# is not an error of the project: the reason goes to stderr as one line "SKIPPED: reason"
# and the exit status is 2. Other statuses are bugs of this script.
#
# Everything lands under OTP_CACHE (default build/otp/): the private apt configurations
# (apt-trixie/, apt-sid/), the downloads, the source tree and the installs (27/, 29/). A
# finished install is marked by ROOT/.complete and reused as it is; remove the folder to
# redo it. The machine's own apt sources are never touched: apt runs with APT_CONFIG
# pointing to a configuration whose source list, state and cache live in OTP_CACHE.
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OTP_CACHE=${OTP_CACHE:-$ROOT_DIR/build/otp}
MIRROR=${OTP_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
JOBS=${OTP_JOBS:-2}

# The applications left out of the OTP 27 build: GUI, Java, ODBC and what no suite here
# uses. common_test's own dependencies (debugger, observer, ssh, snmp) are optional at run
# time; ct_run works without them.
OTP27_WITHOUT=(wx javac odbc jinterface debugger observer et megaco diameter snmp ssh)

skip() {
    echo "SKIPPED: $*" >&2
    exit 2
}

log() {
    echo "otp.sh: $*" >&2
}

# apt_setup SUITE TYPE: a private apt configuration for one Debian suite ("deb" or
# "deb-src" lines), updated once per call; prints the APT_CONFIG path.
apt_setup() {
    local suite=$1 type=$2 dir="$OTP_CACHE/apt-$1"
    mkdir -p "$dir/parts" "$dir/prefs.d" "$dir/state/lists/partial" "$dir/cache/archives/partial"
    : > "$dir/state/status"
    echo "$type [signed-by=$KEYRING] $MIRROR $suite main" > "$dir/sources.list"
    cat > "$dir/apt.conf" <<CONF
Dir::Etc::SourceList "$dir/sources.list";
Dir::Etc::SourceParts "$dir/parts";
Dir::Etc::Preferences "$dir/preferences";
Dir::Etc::PreferencesParts "$dir/prefs.d";
Dir::State "$dir/state";
Dir::State::status "$dir/state/status";
Dir::Cache "$dir/cache";
Acquire::Retries "2";
APT::Sandbox::User "root";
CONF
    if ! APT_CONFIG="$dir/apt.conf" apt-get update -q >"$dir/update.log" 2>&1 ||
            grep -q '^\(Err\|W: Failed\)' "$dir/update.log"; then
        skip "apt-get update for Debian $suite failed (no network to $MIRROR?): $(grep -m1 '^\(Err\|E:\|W:\)' "$dir/update.log" || true)"
    fi
    echo "$dir/apt.conf"
}

# otp_release ROOT: the OTP release the erl of ROOT reports (e.g. 27), or nothing.
otp_release() {
    "$1/bin/erl" -noshell -eval 'io:put_chars(erlang:system_info(otp_release)), halt().' 2>/dev/null || true
}

otp25() {
    local root=/usr/lib/erlang
    [ -x "$root/bin/erl" ] || skip "no system OTP at $root (make deps installs it)"
    local rel
    rel=$(otp_release "$root")
    [ "$rel" = 25 ] || skip "the system's OTP is $rel, not 25"
    echo "$root"
}

# Debian's dfsg tarball leaves out common_test's bundled jquery files, and its
# erlang-common-test package links them to its libjs-jquery packages instead. common_test
# copies them into every log folder and fails the run when they are missing; it never
# reads them, so empty stand-ins do (the HTML logs' tables are then not sortable in a
# browser, nothing else changes). PRIV is common_test's priv folder, in a source tree or an
# install; a dangling link is replaced, never written through.
ct_jquery_standins() {
    local priv=$1 f
    for f in jquery-latest.js jquery.tablesorter.min.js; do
        if [ -L "$priv/$f" ] && [ ! -e "$priv/$f" ]; then
            rm -f "$priv/$f"
        fi
        [ -e "$priv/$f" ] || echo "/* stand-in: Debian's dfsg source has no $f */" > "$priv/$f"
    done
}

otp27() {
    local prefix=$OTP_CACHE/27 src=$OTP_CACHE/src-27 conf orig tree w flags=()
    if [ -f "$prefix/.complete" ]; then
        echo "$prefix"
        return
    fi
    conf=$(apt_setup trixie deb-src)
    rm -rf "$src" "$prefix"
    mkdir -p "$src"
    log "fetching Debian trixie's erlang source package"
    # Only the .orig tarball (the upstream tree) is used; apt checks it against the signed
    # Sources index. The .dsc and Debian's patches may be missing on a mirror that lags a
    # security update, which does not matter here.
    (cd "$src" && APT_CONFIG=$conf apt-get source -q --download-only erlang) >"$src/fetch.log" 2>&1 || true
    orig=$(ls "$src"/erlang_*.orig.tar.xz 2>/dev/null | head -1)
    if [ -z "$orig" ]; then
        skip "apt-get source erlang (trixie) brought no .orig tarball: $(grep -m1 '^\(E:\|Err\)' "$src/fetch.log" || tail -1 "$src/fetch.log")"
    fi
    case $(basename "$orig") in
        erlang_27.*) ;;
        *) skip "Debian trixie's erlang source is no longer OTP 27: $(basename "$orig")" ;;
    esac
    log "unpacking $(basename "$orig")"
    tar -xJf "$orig" -C "$src"
    tree=$(find "$src" -mindepth 1 -maxdepth 1 -type d | head -1)
    [ -x "$tree/configure" ] || skip "no configure at the top of $(basename "$orig")"
    ct_jquery_standins "$tree/lib/common_test/priv"
    for w in "${OTP27_WITHOUT[@]}"; do
        flags+=("--without-$w")
    done
    log "building OTP 27 with make -j$JOBS (several minutes; log: $src/build.log)"
    local start=$SECONDS
    if ! (cd "$tree" && ./configure --prefix="$prefix" "${flags[@]}" &&
              make -j"$JOBS" && make install) >"$src/build.log" 2>&1; then
        rm -rf "$prefix"
        skip "the OTP 27 build failed: $(grep -m1 -i 'error' "$src/build.log" || tail -1 "$src/build.log") (log: $src/build.log)"
    fi
    log "OTP 27 built and installed in $((SECONDS - start)) s"
    [ "$(otp_release "$prefix")" = 27 ] || skip "the built erl does not report release 27 (log: $src/build.log)"
    # The tree is 500 MB of objects; the install is all the matrix needs.
    rm -rf "$tree"
    echo "$((SECONDS - start))" > "$prefix/.build-seconds"
    touch "$prefix/.complete"
    echo "$prefix"
}

# OTP 29 from sid: the Erlang packages common_test needs, and the C libraries they were
# built against (sid's glibc, libstdc++, OpenSSL... are newer than this machine's). Nothing
# is installed: the .debs are unpacked into build/otp/29/root, and every ELF program of
# erts runs through that root's own dynamic loader with --library-path, by a small wrapper
# script in its place.
OTP29_ERLANG=(erlang-base erlang-dev erlang-common-test erlang-crypto erlang-runtime-tools
              erlang-syntax-tools erlang-tools erlang-xmerl erlang-debugger erlang-ftp
              erlang-inets erlang-public-key erlang-asn1 erlang-ssl)
OTP29_LIBS=(libc6 libgcc-s1 libstdc++6 libtinfo6 zlib1g libssl3t64 libzstd1 libsctp1)
# Debian's own elixir (1.14) cannot load its code on OTP 29; sid's runs there. It lands in
# root/usr/lib/elixir, where scripts/test-otp.sh looks for an Elixir beside an OTP.
OTP29_ELIXIR=(elixir)

# wrap_elf FILE LDSO LIBPATH: FILE becomes a script that runs the real program (FILE.elf)
# through LDSO. The real program keeps its directory, so erts finds its siblings.
wrap_elf() {
    local f=$1 ldso=$2 libpath=$3
    mv "$f" "$f.elf"
    cat > "$f" <<WRAP
#!/bin/sh
exec "$ldso" --library-path "$libpath" "$f.elf" "\$@"
WRAP
    chmod +x "$f"
}

otp29() {
    local prefix=$OTP_CACHE/29 debs=$OTP_CACHE/debs-29 conf root erl_root ldso libpath f
    if [ -f "$prefix/.complete" ]; then
        echo "$prefix/root/usr/lib/erlang"
        return
    fi
    conf=$(apt_setup sid deb)
    rm -rf "$prefix" "$debs"
    mkdir -p "$debs" "$prefix/root"
    log "fetching Debian sid's erlang and C library packages"
    if ! (cd "$debs" && APT_CONFIG=$conf apt-get download -q "${OTP29_ERLANG[@]}" "${OTP29_LIBS[@]}") \
            >"$debs/fetch.log" 2>&1; then
        skip "apt-get download from Debian sid failed: $(grep -m1 '^\(E:\|Err\)' "$debs/fetch.log" || tail -1 "$debs/fetch.log")"
    fi
    case $(ls "$debs"/erlang-base_*.deb) in
        */erlang-base_1%3a29.*|*/erlang-base_29.*) ;;
        *) skip "Debian sid's erlang is no longer OTP 29: $(basename "$(ls "$debs"/erlang-base_*.deb)")" ;;
    esac
    root=$prefix/root
    for f in "$debs"/*.deb; do
        dpkg-deb -x "$f" "$root"
    done
    erl_root=$root/usr/lib/erlang
    ldso=$(ls "$root"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 2>/dev/null | head -1 || true)
    [ -n "$ldso" ] && [ -d "$erl_root/bin" ] || skip "sid's packages did not unpack to a loader and $erl_root"
    libpath=$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu
    # erl, start and the other scripts carry ROOTDIR=/usr/lib/erlang; point them here.
    { grep -rlI 'ROOTDIR=/usr/lib/erlang' "$erl_root/bin" "$erl_root"/erts-*/bin || true; } |
        while read -r f; do
            sed -i "s|ROOTDIR=/usr/lib/erlang|ROOTDIR=$erl_root|g" "$f"
        done
    { find "$erl_root/bin" "$erl_root"/erts-*/bin "$erl_root"/lib/*/priv/bin -maxdepth 1 -type f \
        2>/dev/null || true; } | while read -r f; do
        if [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then
            wrap_elf "$f" "$ldso" "$libpath"
        fi
    done
    for f in "$erl_root"/lib/common_test-*/priv; do
        ct_jquery_standins "$f"
    done
    [ "$(otp_release "$erl_root")" = 29 ] ||
        skip "sid's OTP 29 did not start through its own C library ($erl_root/bin/erl reports '$(otp_release "$erl_root")')"
    # Elixir is optional: without it the matrix runs only Common Test on OTP 29.
    if ! (cd "$debs" && APT_CONFIG=$conf apt-get download -q "${OTP29_ELIXIR[@]}") >>"$debs/fetch.log" 2>&1; then
        log "no elixir from Debian sid ($(grep -m1 '^\(E:\|Err\)' "$debs/fetch.log" || true)); ExUnit will not run on OTP 29"
    fi
    for f in "$debs"/elixir_*.deb; do
        if [ -e "$f" ]; then
            dpkg-deb -x "$f" "$root"
        fi
    done
    rm -rf "$debs"
    touch "$prefix/.complete"
    echo "$erl_root"
}

case ${1:-} in
    25) otp25 ;;
    27) otp27 ;;
    29) otp29 ;;
    *) echo "usage: $0 25|27|29" >&2; exit 64 ;;
esac
