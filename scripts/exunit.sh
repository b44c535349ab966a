#!/usr/bin/env bash
# The ExUnit interop suite (erlang_test/exunit) against the built C node, without mix.
#
#   scripts/exunit.sh                       every *_test.exs (what `make exunit` runs)
#   scripts/exunit.sh counter_test.exs ...  only these files (names or paths)
#   CNODE_BIN=path scripts/exunit.sh        another binary (default build/cnode)
#   EXUNIT_SEED=N scripts/exunit.sh         replay a test order
#
# A private epmd, a fresh cookie and unique node names per run (scripts/lib.sh). The tests
# start the C nodes and BEAM peers themselves; logs go to build/test-logs/exunit-<run id>/.
# ExUnit's "N tests, M failures" line is the last line printed; the exit code is non-zero
# when a test failed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

lib_init exunit
lib_start_epmd
cd "$LIB_ROOT"

# A background job, so a signal to this script reaches the trap at once; cleanup then
# stops the BEAM, the nodes it started and epmd.
elixir --name "exunit_$RUN_ID@127.0.0.1" --cookie "$COOKIE" \
    erlang_test/exunit/run.exs "$@" &
lib_job $!
rc=0
wait $! || rc=$?
lib_sanitizer_sweep || rc=1
exit "$rc"
