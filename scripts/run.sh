#!/usr/bin/env bash
# `make run`: the C node in the foreground as cnode@127.0.0.1; Ctrl-C stops it cleanly.
#
#   CNODE_NAME=other@127.0.0.1   another node name
#   CNODE_DATA_DIR=dir           where the servers keep their state (default var/cnode)
#   CNODE_ARGS="--log-level debug --max-requests 10"   more flags, split on spaces
#   CNODE_BIN=path               another binary (default build/cnode)
#
# Without --cookie in CNODE_ARGS the node uses ~/.erlang.cookie (creating it as erl does),
# the same file iex reads, so the printed iex line connects.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ -z "${HOME:-}" ]; then
    HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
    export HOME
fi
bin=${CNODE_BIN:-build/cnode}
name=${CNODE_NAME:-cnode@127.0.0.1}
data_dir=${CNODE_DATA_DIR:-var/cnode}
read -r -a extra <<< "${CNODE_ARGS:-}"

mkdir -p "$data_dir"
cat <<MSG
Starting $name (Ctrl-C stops it). From another shell:

  iex --name me@127.0.0.1 --cookie "\$(cat ~/.erlang.cookie)"
  iex> GenServer.call({:counter, :"$name"}, :increment)
  1

MSG
exec "$bin" --name "$name" --data-dir "$data_dir" "${extra[@]}"
