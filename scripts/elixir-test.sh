#!/usr/bin/env bash
# make elixir-test: `mix test` of the Elixir package (elixir/) against the built node.
#
#   scripts/elixir-test.sh                  every test
#   scripts/elixir-test.sh test/x.exs:12    arguments go to mix test
#   CNODE_BIN=path scripts/elixir-test.sh   another binary (default build/cnode)
#
# The test BEAM is distributed (elixir --name ... -S mix test) with a fresh cookie and a
# private epmd (scripts/lib.sh), whose port every node it starts inherits. The package has
# no dependencies, so nothing is fetched: MIX_ENV=test, and hex is never asked for. Every
# C node and BEAM the tests start is recorded and killed by pid at the end.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

lib_init elixir
lib_start_epmd
cd "$LIB_ROOT/elixir"

export MIX_ENV=test
# Mix's own files (archives, the hex it never needs) stay inside the run, not in $HOME.
export MIX_HOME="$RUN_DIR/mix_home"
elixir --name "elixir_$RUN_ID@127.0.0.1" --cookie "$COOKIE" -S mix test "$@" &
lib_job $!
wait $!
