#!/usr/bin/env bash
# The Common Test interop suite (erlang_test/ct) through rebar3, against the built C node.
#
#   scripts/ct.sh                      the whole suite (what `make ct` runs)
#   scripts/ct.sh --case=cast_increment  extra arguments go to `rebar3 ct`
#   CNODE_BIN=path scripts/ct.sh       another binary (default build/cnode)
#
# A private epmd, a fresh cookie and unique node names per run (scripts/lib.sh). The suite
# starts its C nodes itself; their logs go to build/test-logs/ct-<run id>/, Common Test's
# own logs to _build/test/logs/. Offline: rebar.config has no dependencies.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

lib_init ct
lib_start_epmd
cd "$LIB_ROOT"

rebar3 ct --name "ct_$RUN_ID@127.0.0.1" --setcookie "$COOKIE" "$@" &
lib_job $!
rc=0
wait $! || rc=$?
lib_sanitizer_sweep || rc=1
exit "$rc"
