#!/usr/bin/env bash
# `make bench`: the C node and the same servers in Elixir on a BEAM peer, measured side by
# side in one run from a third (caller) node. About three minutes; BENCH_QUICK=1 is a smoke
# run of well under a minute with the same outputs (short cells, 100k memory clients).
#
#   scripts/bench.sh                   the full run (what `make bench` runs after building)
#   BENCH_QUICK=1 scripts/bench.sh     the smoke run
#   CNODE_BIN=path scripts/bench.sh    another binary (default build/cnode)
#
# Knobs (environment; defaults full / quick): BENCH_CELL_S seconds per call cell (6 / 1),
# BENCH_WARM_S warm-up per cell (0.5 / 0.2), BENCH_CAST_S cast time (4 / 1), BENCH_CASTERS
# caster processes per cast cell (1,4), BENCH_CONCURRENCY callers per call cell (1,8,64),
# BENCH_IDS check_rate ids round-robin (100000), BENCH_TLS (1: the TLS row after the main run;
# 0: none), BENCH_TLS_CONCURRENCY callers per TLS cell (1,64),
# BENCH_MEM_CLIENTS (1000000 / 100000), BENCH_MEM_CALLERS (64), BENCH_MAX_REQUESTS
# (1000000), BENCH_WINDOW_MS (600000: longer than the run, so no cleanup pass falls
# inside a cell or the memory fill), BENCH_PEER_ERL / BENCH_CALLER_ERL (erl flags of the
# BEAM peer / the caller; default none: the VM's defaults, 2 schedulers here).
#
# Isolation as in the test suites (scripts/lib.sh): a private epmd on a free port, a fresh
# cookie, node names with the run id (bench_c_*, bench_peer_*, bench_caller_* @127.0.0.1),
# the C node's --data-dir in a fresh temporary directory. Every process is started here as
# a job and stopped by its pid at the end, also on failure or Ctrl-C; the BEAM nodes also
# halt by themselves after BENCH_MAX_S. Logs: build/test-logs/bench-<run id>/.
# Outputs: build/bench/ bench.md (the printed tables), bench.json, bench.csv, memory.csv,
# plot.dat, bench.png (gnuplot), bench.log (this script's output), tls.md and tls.json (the TLS
# row: a second C node, BEAM peer and caller, all three with TLS distribution and mutual
# certificate verification, certificates made in the run's log folder with openssl).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

started=$(date +%s)
lib_init bench
cd "$LIB_ROOT"

OUT="$LIB_ROOT/build/bench"
mkdir -p "$OUT"
rm -f "$OUT"/tls.md "$OUT"/tls.json "$OUT"/bench.md "$OUT"/bench.json "$OUT"/bench.csv "$OUT"/memory.csv "$OUT"/plot.dat \
      "$OUT"/plot.title "$OUT"/bench.png
exec > >(tee "$OUT/bench.log")
TEE_PID=$!

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    : "${BENCH_CELL_S:=1}" "${BENCH_WARM_S:=0.2}" "${BENCH_CAST_S:=1}" "${BENCH_MEM_CLIENTS:=100000}"
    : "${BENCH_MAX_S:=150}"
else
    : "${BENCH_CELL_S:=6}" "${BENCH_WARM_S:=0.5}" "${BENCH_CAST_S:=4}" "${BENCH_MEM_CLIENTS:=1000000}"
    : "${BENCH_MAX_S:=600}"
fi
: "${BENCH_CASTERS:=1,4}" "${BENCH_CONCURRENCY:=1,8,64}" "${BENCH_IDS:=100000}"
: "${BENCH_MEM_CALLERS:=64}" "${BENCH_MAX_REQUESTS:=1000000}" "${BENCH_WINDOW_MS:=600000}"
: "${BENCH_PEER_ERL:=}" "${BENCH_CALLER_ERL:=}" "${BENCH_CNODE_ARGS:=}"
: "${BENCH_TLS:=1}" "${BENCH_TLS_CONCURRENCY:=1,64}"
export BENCH_QUICK BENCH_CELL_S BENCH_WARM_S BENCH_CAST_S BENCH_MEM_CLIENTS BENCH_MAX_S \
       BENCH_CASTERS BENCH_CONCURRENCY BENCH_IDS BENCH_MEM_CALLERS BENCH_MAX_REQUESTS \
       BENCH_WINDOW_MS

CNODE_PID= PEER_PID= CALLER_PID=
DATA_TMP=$(mktemp -d "${TMPDIR:-/tmp}/cnode-bench.XXXXXX")
EBIN="$RUN_DIR/ebin"
CNODE_LOG="$RUN_DIR/cnode.log"

# stop_node PID GRACE_S: SIGTERM, up to GRACE_S to go, then SIGKILL; reaps PID (a job of
# this shell) and leaves its exit status in STOP_STATUS.
stop_node() {
    local pid=$1 grace=$2 i
    STOP_STATUS=0
    if lib_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < grace * 10; i++)); do
            lib_alive "$pid" || break
            sleep 0.1
        done
        if lib_alive "$pid"; then
            echo "bench: pid $pid still up ${grace} s after SIGTERM; SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || STOP_STATUS=$?
}

# The caller, the peer, then the C node (its terminate saves the rate limiter's state,
# which takes a while with a million clients), then lib.sh's cleanup: epmd.
bench_cleanup() {
    local rc=$?
    set +e
    [ -n "$CALLER_PID" ] && stop_node "$CALLER_PID" 5
    [ -n "$PEER_PID" ] && stop_node "$PEER_PID" 10
    [ -n "$CNODE_PID" ] && stop_node "$CNODE_PID" 30
    rm -rf "$DATA_TMP"
    # Let tee print the last lines before the script is gone.
    exec 1>&2
    wait "$TEE_PID" 2>/dev/null
    (exit "$rc")
    lib_cleanup
}
trap bench_cleanup EXIT

# wait_ready FILE PID WHAT: the READY line of FILE (bounded: 30 s, or PID exiting).
wait_ready() {
    local file=$1 pid=$2 what=$3 i line
    for ((i = 0; i < 300; i++)); do
        line=$(grep -m1 '^READY ' "$file" 2>/dev/null || true)
        if [ -n "$line" ]; then
            echo "$line"
            return 0
        fi
        if ! lib_alive "$pid"; then
            echo "bench: $what exited before READY (see $file and $RUN_DIR)" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "bench: $what printed no READY line within 30 s" >&2
    return 1
}

lib_start_epmd

mkdir -p "$EBIN"
elixirc --no-docs -o "$EBIN" erlang_test/bench/servers.ex >"$RUN_DIR/elixirc.log" 2>&1 || {
    cat "$RUN_DIR/elixirc.log" >&2
    exit 1
}

cnode_name="bench_c_$RUN_ID@127.0.0.1"
cnode_flags=(--max-requests "$BENCH_MAX_REQUESTS" --window-ms "$BENCH_WINDOW_MS")
read -r -a cnode_extra <<< "$BENCH_CNODE_ARGS"
[ ${#cnode_extra[@]} -gt 0 ] && cnode_flags+=("${cnode_extra[@]}")
"$CNODE_BIN" --name "$cnode_name" --cookie "$COOKIE" --data-dir "$DATA_TMP" "${cnode_flags[@]}" \
    </dev/null >"$RUN_DIR/cnode.out" 2>"$CNODE_LOG" &
CNODE_PID=$!

peer_name="bench_peer_$RUN_ID@127.0.0.1"
read -r -a peer_erl <<< "$BENCH_PEER_ERL"
peer_args=(--name "$peer_name" --cookie "$COOKIE" -pa "$EBIN")
[ ${#peer_erl[@]} -gt 0 ] && peer_args+=(--erl "${peer_erl[*]}")
elixir "${peer_args[@]}" erlang_test/bench/peer.exs \
    "$BENCH_MAX_REQUESTS" "$BENCH_WINDOW_MS" "$((BENCH_MAX_S + 60))" \
    </dev/null >"$RUN_DIR/peer.out" 2>"$RUN_DIR/peer.log" &
PEER_PID=$!

wait_ready "$RUN_DIR/cnode.out" "$CNODE_PID" "the C node" >/dev/null
peer_ready=$(wait_ready "$RUN_DIR/peer.out" "$PEER_PID" "the BEAM peer")
peer_os_pid=${peer_ready##* }
if [ "$peer_os_pid" != "$PEER_PID" ]; then
    echo "bench: note: the BEAM peer's OS pid is $peer_os_pid (job $PEER_PID)"
fi

read -r -a caller_erl <<< "$BENCH_CALLER_ERL"
caller_args=(--name "bench_caller_$RUN_ID@127.0.0.1" --cookie "$COOKIE")
[ ${#caller_erl[@]} -gt 0 ] && caller_args+=(--erl "${caller_erl[*]}")

echo "make bench: run $RUN_ID, epmd port $ERL_EPMD_PORT, logs in ${RUN_DIR#"$LIB_ROOT"/}"
BENCH_CNODE="$cnode_name" BENCH_CNODE_OSPID="$CNODE_PID" \
BENCH_PEER="$peer_name" BENCH_PEER_OSPID="$peer_os_pid" \
BENCH_CLK_TCK="$(getconf CLK_TCK)" BENCH_OUT="$OUT" \
BENCH_CNODE_FLAGS="${cnode_flags[*]}" BENCH_PEER_FLAGS="${BENCH_PEER_ERL:-(defaults)}" \
BENCH_CALLER_FLAGS="${BENCH_CALLER_ERL:-(defaults)}" \
    elixir "${caller_args[@]}" erlang_test/bench/bench.exs </dev/null &
CALLER_PID=$!
rc=0
wait "$CALLER_PID" || rc=$?
CALLER_PID=

if [ "$rc" -eq 0 ]; then
    if command -v gnuplot >/dev/null 2>&1; then
        gnuplot -e "dir='$OUT'" erlang_test/bench/bench.gp 2>"$RUN_DIR/gnuplot.log" \
            || echo "bench: gnuplot failed (see $RUN_DIR/gnuplot.log)" >&2
    else
        echo "bench: gnuplot is missing (WITH_BENCH=1 scripts/bootstrap.sh installs it): no bench.png" >&2
    fi
fi

# Stop the nodes here (not only in the trap) to report how the C node went.
stop_node "$PEER_PID" 10
peer_status=$STOP_STATUS
PEER_PID=
t_stop=$(date +%s)
stop_node "$CNODE_PID" 30
cnode_status=$STOP_STATUS
CNODE_PID=

# make_tls_certs DIR: a CA and one certificate for all three nodes, naming 127.0.0.1 as an
# IP address and as a DNS name (OTP's client compares the text), and the nodes' optfile.
make_tls_certs() {
    local d=$1 ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    mkdir -p "$d"
    echo "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1" >"$d/ext.cnf"
    openssl req -x509 $ec -keyout "$d/ca.key" -out "$d/ca.pem" -subj /CN=bench-ca -days 2 2>/dev/null
    openssl req $ec -keyout "$d/node.key" -out "$d/node.csr" -subj /CN=bench-node 2>/dev/null
    openssl x509 -req -in "$d/node.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -out "$d/node.pem" -days 2 -extfile "$d/ext.cnf" 2>/dev/null
    local o="{certfile, \"$d/node.pem\"}, {keyfile, \"$d/node.key\"}, {cacertfile, \"$d/ca.pem\"}, {verify, verify_peer}"
    echo "[{server, [$o, {fail_if_no_peer_cert, true}]}, {client, [$o]}]." >"$d/dist.conf"
}

# The TLS row: the same servers again, every node over TLS, one target at a time.
if [ "$rc" -eq 0 ] && [ "$BENCH_TLS" = 1 ]; then
    tls_dir="$RUN_DIR/tls"
    make_tls_certs "$tls_dir"
    tls_erl="-proto_dist inet_tls -ssl_dist_optfile $tls_dir/dist.conf"
    tcnode_name="bench_tc_$RUN_ID@127.0.0.1"
    rm -rf "${DATA_TMP:?}"/*
    "$CNODE_BIN" --name "$tcnode_name" --cookie "$COOKIE" --data-dir "$DATA_TMP" "${cnode_flags[@]}" \
        --proto-dist inet_tls --tls-certfile "$tls_dir/node.pem" --tls-keyfile "$tls_dir/node.key" \
        --tls-cacertfile "$tls_dir/ca.pem" </dev/null >"$RUN_DIR/tls_cnode.out" 2>"$RUN_DIR/tls_cnode.log" &
    CNODE_PID=$!
    tpeer_name="bench_tpeer_$RUN_ID@127.0.0.1"
    elixir --name "$tpeer_name" --cookie "$COOKIE" -pa "$EBIN" --erl "$tls_erl ${BENCH_PEER_ERL}" \
        erlang_test/bench/peer.exs "$BENCH_MAX_REQUESTS" "$BENCH_WINDOW_MS" "$((BENCH_MAX_S + 60))" \
        </dev/null >"$RUN_DIR/tls_peer.out" 2>"$RUN_DIR/tls_peer.log" &
    PEER_PID=$!
    wait_ready "$RUN_DIR/tls_cnode.out" "$CNODE_PID" "the TLS C node" >/dev/null
    tpeer_ready=$(wait_ready "$RUN_DIR/tls_peer.out" "$PEER_PID" "the TLS BEAM peer")
    echo
    BENCH_TLS=1 BENCH_CONCURRENCY="$BENCH_TLS_CONCURRENCY" \
    BENCH_CNODE="$tcnode_name" BENCH_CNODE_OSPID="$CNODE_PID" \
    BENCH_PEER="$tpeer_name" BENCH_PEER_OSPID="${tpeer_ready##* }" \
    BENCH_CLK_TCK="$(getconf CLK_TCK)" BENCH_OUT="$OUT" \
        elixir --name "bench_tcaller_$RUN_ID@127.0.0.1" --cookie "$COOKIE" --erl "$tls_erl ${BENCH_CALLER_ERL}" \
        erlang_test/bench/bench.exs </dev/null &
    CALLER_PID=$!
    wait "$CALLER_PID" || rc=$?
    CALLER_PID=
    stop_node "$PEER_PID" 10
    PEER_PID=
    stop_node "$CNODE_PID" 30
    [ "$STOP_STATUS" -eq 0 ] || echo "bench: the TLS C node exited with status $STOP_STATUS on SIGTERM" >&2
    CNODE_PID=
fi
echo
echo "C node: exit status $cnode_status on SIGTERM after $(($(date +%s) - t_stop)) s (terminate saves the state); BEAM peer: $peer_status"
problems=$(grep -cE '^[0-9:.]+ +(warning|error) ' "$CNODE_LOG" || true)
if [ "$problems" -gt 0 ]; then
    echo "C node log: $problems warning/error line(s) in ${CNODE_LOG#"$LIB_ROOT"/}, first ones:"
    grep -E '^[0-9:.]+ +(warning|error) ' "$CNODE_LOG" | head -10 | sed 's/^/  /'
else
    echo "C node log: no warning or error lines (${CNODE_LOG#"$LIB_ROOT"/})"
fi
tls_outputs=
[ "$BENCH_TLS" = 1 ] && tls_outputs="tls.md tls.json"
for f in bench.md bench.json bench.csv memory.csv plot.dat $tls_outputs; do
    if [ "$rc" -eq 0 ] && [ ! -s "$OUT/$f" ]; then
        echo "bench: $OUT/$f is missing" >&2
        rc=1
    fi
done
if [ "$rc" -eq 0 ] && command -v gnuplot >/dev/null 2>&1 && [ ! -s "$OUT/bench.png" ]; then
    echo "bench: $OUT/bench.png is missing" >&2
    rc=1
fi
if [ "$rc" -eq 0 ]; then
    echo "outputs: ${OUT#"$LIB_ROOT"/}/{bench.md,bench.json,bench.csv,memory.csv,bench.png${tls_outputs:+,tls.md,tls.json}}; total $(($(date +%s) - started)) s"
else
    echo "bench: the caller node failed (status $rc) after $(($(date +%s) - started)) s" >&2
fi
exit "$rc"
