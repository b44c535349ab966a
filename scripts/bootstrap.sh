#!/usr/bin/env bash
# Installs the Debian packages the project needs, once. Used by `make run`,
# `make test` and `make bench`, so a fresh Debian machine needs nothing else.
# Not root and something missing: print the exact apt-get line and fail.
set -euo pipefail

packages=(erlang-dev erlang-nox erlang-common-test elixir rebar3 libuv1-dev
          libcmocka-dev libssl-dev uthash-dev libxxhash-dev zlib1g-dev pkg-config make gcc
          clang-14 libclang-rt-14-dev)
# --metrics-listen: libmicrohttpd parses HTTP for the Prometheus endpoint, from our loop.
packages+=(libmicrohttpd-dev)
# TLS distribution: OpenSSL's library (libssl-dev above), the openssl command that makes
# the test certificates, and the BEAM's own ssl for the TLS peers (tls_SUITE).
packages+=(openssl erlang-ssl)
# The OTP matrix (make test-otp) builds OTP 27 from source and unpacks Debian packages.
packages+=(g++ perl libncurses-dev xz-utils dpkg)
# make bench: gnuplot draws bench.png; redis-server is what the durability section compares
# the C node with. Not for make test, which needs neither (and Debian's redis-server package
# also enables a system Redis service on port 6379, which a test machine need not carry).
if [ "${WITH_BENCH:-0}" = 1 ]; then
    packages+=(gnuplot-nox redis-server)
fi

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

line="apt-get install -y ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages; run as root:" >&2
    echo "  sudo apt-get update && sudo $line" >&2
    exit 1
fi

echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
