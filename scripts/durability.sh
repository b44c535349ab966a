#!/usr/bin/env bash
# Issue 10's kill -9 table and a quick side-by-side of the durability modes, on the built
# node (build/cnode). Not part of make test: it takes about a minute.
#
#   scripts/durability.sh             both: the kill table, then calls/s per mode
#   scripts/durability.sh kill        the kill -9 table only (crash and power, 1/4/10 s, 8 callers)
#   scripts/durability.sh speed       calls/s per mode only (64 callers, DUR_SECONDS each, default 5)
#   DUR_MODES="crash" scripts/durability.sh kill    other modes
#
# A private epmd, a fresh cookie and unique names (scripts/lib.sh); logs and data dirs in
# build/test-logs/durability-<run id>/. Prints markdown tables.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

lib_init durability
lib_start_epmd
cd "$LIB_ROOT"

elixir --name "dur_$RUN_ID@127.0.0.1" --cookie "$COOKIE" \
    erlang_test/durability/durability.exs "${1:-all}" &
lib_job $!
wait $!
