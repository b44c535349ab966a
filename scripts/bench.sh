#!/usr/bin/env bash
# `make bench`: three sections in one run, each measured from callers of its own.
#   calls:      the C node and the same servers in Elixir on a BEAM peer, side by side
#               (erlang_test/bench/bench.exs). About three minutes.
#   durability: the C node in each durability mode (--durability terminate|crash|power, one
#               node per mode) against Redis with appendfsync no|everysec|always, :increment
#               against INCR and check_rate against a sorted-set limiter script
#               (erlang_test/bench/durability.exs). About three minutes.
#   tls:        the C node (in terminate mode, as the BEAM peer) and the BEAM peer again, and
#               a crash-mode C node, every node (caller too) over TLS distribution with mutual
#               certificate verification, certificates made in the run's log folder with
#               openssl (erlang_test/bench/bench.exs with BENCH_TLS=1). About 2 minutes.
#   capacity:   one pinned core of the C node, then of the BEAM peer, under open-loop load
#               from build/cnode-load on the other core, stepped up to the latency knee
#               (scripts/bench-capacity.sh, which lists its knobs). About four minutes.
# BENCH_QUICK=1 is a smoke run of both of well under two minutes with the same outputs.
#
#   scripts/bench.sh                          the full run (what `make bench` runs after building)
#   BENCH_QUICK=1 scripts/bench.sh            the smoke run
#   BENCH_SECTIONS=durability scripts/bench.sh   some sections (calls, durability, tls, capacity; comma-separated)
#   CNODE_BIN=path scripts/bench.sh           another binary (default build/cnode)
#
# Knobs of the calls section (environment; defaults full / quick): BENCH_CELL_S seconds per
# call cell (6 / 1), BENCH_ROUNDS (3 / 1: each pair of cells, the C node's and the BEAM peer's,
# is measured in this many alternating rounds of BENCH_CELL_S / BENCH_ROUNDS seconds, the order
# swapped every round, so a drift in the shared machine's speed falls on both; the cast cells
# too, in rounds of BENCH_CAST_S / BENCH_ROUNDS), BENCH_WARM_S
# warm-up per call cell and round (0.5 / 0.2), BENCH_CAST_S cast time (4 / 1),
# BENCH_CASTERS caster processes per cast cell (1,4), BENCH_CONCURRENCY callers per call cell
# (1,8,64), BENCH_IDS check_rate ids round-robin (100000, both sections),
# BENCH_MEM_CLIENTS (1000000 / 100000), BENCH_MEM_CALLERS (64), BENCH_MAX_REQUESTS
# (1000000), BENCH_WINDOW_MS (600000: longer than the run, so no cleanup pass falls
# inside a cell or the memory fill), BENCH_PEER_ERL / BENCH_CALLER_ERL (erl flags of the
# BEAM peer / the callers; default none: the VM's defaults, 2 schedulers here),
# BENCH_CNODE_ARGS (extra C node flags, every section).
#
# Knobs of the metrics cells (end of the calls section): BENCH_METRICS (1: on; 0 skips them),
# BENCH_M_ROUNDS (10 / 2) alternating rounds of a cell per node, BENCH_M_CELL_S seconds per cell
# (2 / 1: short cells, finely interleaved, so other load on the machine falls on both nodes),
# BENCH_M_CONCURRENCY callers (8),
# BENCH_M_SCRAPES back-to-back scrapes for the CPU time of one (2000).
# Knobs of the tls section: BENCH_TLS_CONCURRENCY callers per TLS cell (1,64), BENCH_TLS_CRASH
# (1: also measure a second C node in crash mode; 0 skips it). The TLS C node runs with
# --durability terminate, as the BEAM peer keeps its state in memory and saves it in terminate.
#
# Knobs of the durability section: BENCH_DUR_CELL_S seconds per cell (BENCH_CELL_S: 6 / 1;
# 24 cells in 12 pairs measured in BENCH_ROUNDS alternating rounds, as the calls section's, so
# the section takes about 24 x (BENCH_DUR_CELL_S + BENCH_ROUNDS x BENCH_DUR_WARM_S) plus start-up),
# BENCH_DUR_WARM_S (BENCH_WARM_S), BENCH_DUR_CALLERS (1,64), BENCH_DUR_MODES
# (terminate,crash,power), BENCH_DUR_MAX_REQUESTS (100) and BENCH_DUR_WINDOW_MS (60000): our
# rate limiter's defaults, given to the C nodes and to the Redis script alike; REDIS_SERVER
# (redis-server).
#
# Isolation as in the test suites (scripts/lib.sh): a private epmd on a free port, a fresh
# cookie, node names with the run id (bench_c_*, bench_peer_*, bench_caller_*, bench_d_*,
# bench_dcaller_* @127.0.0.1), every C node's --data-dir and every Redis's dir in a fresh
# temporary directory, Redis on a free port of 127.0.0.1. Every process is started here as
# a job and stopped by its pid at the end, also on failure or Ctrl-C; the BEAM nodes also
# halt by themselves after BENCH_MAX_S. Logs: build/test-logs/bench-<run id>/.
# Outputs: build/bench/ bench.md (the printed tables), bench.json, bench.csv, memory.csv,
# plot.dat, bench.png (gnuplot), durability.md, durability.csv, durability.json, tls.md,
# tls.json, metrics.md (the endpoint's cost), metrics-scrape.txt (the last scrape), bench.log
# (this script's output).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=scripts/bench-capacity.sh
. "$(dirname "$0")/bench-capacity.sh"

started=$(date +%s)
lib_init bench
cd "$LIB_ROOT"

: "${BENCH_SECTIONS:=calls,durability,tls,capacity}"
# section NAME: true when NAME is one of BENCH_SECTIONS.
section() {
    case ",$BENCH_SECTIONS," in *",$1,"*) return 0 ;; *) return 1 ;; esac
}
if ! section calls && ! section durability && ! section tls && ! section capacity; then
    echo "bench: BENCH_SECTIONS='$BENCH_SECTIONS' names no section (calls, durability, tls, capacity)" >&2
    exit 2
fi

OUT="$LIB_ROOT/build/bench"
mkdir -p "$OUT"
# The outputs of the sections that run now; another section's files stay as they were.
CALLS_OUT=(bench.md bench.json bench.csv memory.csv plot.dat)
DUR_OUT=(durability.md durability.json durability.csv)
section calls && rm -f "${CALLS_OUT[@]/#/$OUT/}" "$OUT"/plot.title "$OUT"/bench.png "$OUT"/metrics.md "$OUT"/metrics-scrape.txt
section durability && rm -f "${DUR_OUT[@]/#/$OUT/}"
TLS_OUT=(tls.md tls.json)
section tls && rm -f "${TLS_OUT[@]/#/$OUT/}"
section capacity && rm -f "${CAP_OUT[@]/#/$OUT/}" "$OUT"/capacity.png
exec > >(tee "$OUT/bench.log")
TEE_PID=$!

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    : "${BENCH_CELL_S:=1}" "${BENCH_WARM_S:=0.2}" "${BENCH_CAST_S:=1}" "${BENCH_MEM_CLIENTS:=100000}"
    : "${BENCH_ROUNDS:=1}"
    : "${BENCH_MAX_S:=150}"
else
    : "${BENCH_CELL_S:=6}" "${BENCH_WARM_S:=0.5}" "${BENCH_CAST_S:=4}" "${BENCH_MEM_CLIENTS:=1000000}"
    : "${BENCH_ROUNDS:=3}"
    : "${BENCH_MAX_S:=600}"
fi
: "${BENCH_CASTERS:=1,4}" "${BENCH_CONCURRENCY:=1,8,64}" "${BENCH_IDS:=100000}"
: "${BENCH_MEM_CALLERS:=64}" "${BENCH_MAX_REQUESTS:=1000000}" "${BENCH_WINDOW_MS:=600000}"
: "${BENCH_PEER_ERL:=}" "${BENCH_CALLER_ERL:=}" "${BENCH_CNODE_ARGS:=}"
: "${BENCH_DUR_CELL_S:=$BENCH_CELL_S}" "${BENCH_DUR_WARM_S:=$BENCH_WARM_S}" "${BENCH_DUR_CALLERS:=1,64}"
: "${BENCH_DUR_MODES:=terminate,crash,power}" "${BENCH_DUR_MAX_REQUESTS:=100}" "${BENCH_DUR_WINDOW_MS:=60000}"
: "${REDIS_SERVER:=redis-server}"
: "${BENCH_TLS_CONCURRENCY:=1,64}" "${BENCH_TLS_CRASH:=1}"
: "${BENCH_METRICS:=1}" "${BENCH_M_CONCURRENCY:=8}" "${BENCH_M_SCRAPES:=2000}"
if [ "${BENCH_QUICK:-0}" = 1 ]; then : "${BENCH_M_ROUNDS:=2}" "${BENCH_M_CELL_S:=1}"; else : "${BENCH_M_ROUNDS:=10}" "${BENCH_M_CELL_S:=2}"; fi
export BENCH_QUICK BENCH_CELL_S BENCH_ROUNDS BENCH_WARM_S BENCH_CAST_S BENCH_MEM_CLIENTS BENCH_MAX_S \
       BENCH_CASTERS BENCH_CONCURRENCY BENCH_IDS BENCH_MEM_CALLERS BENCH_MAX_REQUESTS \
       BENCH_WINDOW_MS BENCH_DUR_CELL_S BENCH_DUR_WARM_S BENCH_DUR_CALLERS \
       BENCH_DUR_MAX_REQUESTS BENCH_DUR_WINDOW_MS

CNODE_PID= PEER_PID= CALLER_PID= TLS_CRASH_PID=
# The durability section's C nodes and Redis servers, stopped by pid at the end.
DUR_CNODE_PIDS=() DUR_REDIS_PIDS=()
# The metrics cells' two C nodes (BENCH_METRICS=1), stopped by pid at the end.
METRICS_PIDS=()
DATA_TMP=$(mktemp -d "${TMPDIR:-/tmp}/cnode-bench.XXXXXX")
EBIN="$RUN_DIR/ebin"
CNODE_LOG="$RUN_DIR/cnode.log"
rc=0

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

# The callers, the peer, then the C nodes (their terminate saves the state, which takes a
# while with a million clients), then Redis, then lib.sh's cleanup: epmd.
bench_cleanup() {
    local rc=$? pid
    set +e
    [ -n "$CALLER_PID" ] && stop_node "$CALLER_PID" 5
    [ -n "$PEER_PID" ] && stop_node "$PEER_PID" 10
    [ -n "$CNODE_PID" ] && stop_node "$CNODE_PID" 30
    [ -n "$TLS_CRASH_PID" ] && stop_node "$TLS_CRASH_PID" 30
    [ -n "$CAP_SERVER_PID" ] && stop_node "$CAP_SERVER_PID" 30
    for pid in "${DUR_CNODE_PIDS[@]}" "${METRICS_PIDS[@]}"; do stop_node "$pid" 30; done
    for pid in "${DUR_REDIS_PIDS[@]}"; do stop_node "$pid" 10; done
    rm -rf "$DATA_TMP"
    # Let tee print the last lines before the script is gone.
    exec 1>&2
    wait "$TEE_PID" 2>/dev/null
    (exit "$rc")
    lib_cleanup
}
trap bench_cleanup EXIT

# wait_ready FILE PID WHAT [PATTERN]: the first line of FILE matching PATTERN (default
# '^READY '), bounded: 30 s, or PID exiting.
wait_ready() {
    local file=$1 pid=$2 what=$3 pattern=${4:-'^READY '} i line
    for ((i = 0; i < 300; i++)); do
        line=$(grep -m1 -- "$pattern" "$file" 2>/dev/null || true)
        if [ -n "$line" ]; then
            echo "$line"
            return 0
        fi
        if ! lib_alive "$pid"; then
            echo "bench: $what exited before it was ready (see $file and $RUN_DIR)" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "bench: $what was not ready within 30 s (see $file)" >&2
    return 1
}

# log_problems LOG WHAT: the warning and error lines of a C node's log, or that there are none.
log_problems() {
    local log=$1 what=$2 problems
    problems=$(grep -cE '^[0-9:.]+ +(warning|error) ' "$log" || true)
    if [ "$problems" -gt 0 ]; then
        echo "$what log: $problems warning/error line(s) in ${log#"$LIB_ROOT"/}, first ones:"
        grep -E '^[0-9:.]+ +(warning|error) ' "$log" | head -10 | sed 's/^/  /'
    else
        echo "$what log: no warning or error lines (${log#"$LIB_ROOT"/})"
    fi
}

lib_start_epmd

mkdir -p "$EBIN"
elixirc --no-docs -o "$EBIN" erlang_test/bench/servers.ex erlang_test/bench/bench_lib.ex \
    erlang_test/bench/resp.ex >"$RUN_DIR/elixirc.log" 2>&1 || {
    cat "$RUN_DIR/elixirc.log" >&2
    exit 1
}

read -r -a cnode_extra <<< "$BENCH_CNODE_ARGS"
read -r -a caller_erl <<< "$BENCH_CALLER_ERL"
# caller_args NAME: the elixir flags of a caller node, in CALLER_ARGS.
caller_args() {
    CALLER_ARGS=(--name "$1@127.0.0.1" --cookie "$COOKIE" -pa "$EBIN")
    [ ${#caller_erl[@]} -gt 0 ] && CALLER_ARGS+=(--erl "${caller_erl[*]}")
    return 0
}

echo "make bench: run $RUN_ID, sections $BENCH_SECTIONS, epmd port $ERL_EPMD_PORT, logs in ${RUN_DIR#"$LIB_ROOT"/}"

## The calls section: the C node against the BEAM peer.

calls_section() {
    local cnode_name peer_name peer_ready peer_os_pid peer_status cnode_status t_stop f
    local -a cnode_flags peer_erl peer_args

    cnode_name="bench_c_$RUN_ID@127.0.0.1"
    cnode_flags=(--max-requests "$BENCH_MAX_REQUESTS" --window-ms "$BENCH_WINDOW_MS")
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

    caller_args "bench_caller_$RUN_ID"
    BENCH_CNODE="$cnode_name" BENCH_CNODE_OSPID="$CNODE_PID" \
    BENCH_PEER="$peer_name" BENCH_PEER_OSPID="$peer_os_pid" \
    BENCH_CLK_TCK="$(getconf CLK_TCK)" BENCH_OUT="$OUT" \
    BENCH_CNODE_FLAGS="${cnode_flags[*]}" BENCH_PEER_FLAGS="${BENCH_PEER_ERL:-(defaults)}" \
    BENCH_CALLER_FLAGS="${BENCH_CALLER_ERL:-(defaults)}" \
        elixir "${CALLER_ARGS[@]}" erlang_test/bench/bench.exs </dev/null &
    CALLER_PID=$!
    local crc=0
    wait "$CALLER_PID" || crc=$?
    CALLER_PID=

    if [ "$crc" -eq 0 ]; then
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
    echo
    echo "C node: exit status $cnode_status on SIGTERM after $(($(date +%s) - t_stop)) s (terminate saves the state); BEAM peer: $peer_status"
    log_problems "$CNODE_LOG" "C node"
    for f in "${CALLS_OUT[@]}"; do
        if [ "$crc" -eq 0 ] && [ ! -s "$OUT/$f" ]; then
            echo "bench: $OUT/$f is missing" >&2
            crc=1
        fi
    done
    if [ "$crc" -eq 0 ] && command -v gnuplot >/dev/null 2>&1 && [ ! -s "$OUT/bench.png" ]; then
        echo "bench: $OUT/bench.png is missing" >&2
        crc=1
    fi
    if [ "$crc" -eq 0 ] && [ "$BENCH_METRICS" = 1 ]; then
        metrics_cells || crc=$?
    fi
    if [ "$crc" -ne 0 ]; then
        echo "bench: the calls section failed (status $crc)" >&2
        rc=$crc
    fi
}

# The metrics endpoint's cost (BENCH_METRICS=1): two fresh C nodes side by side, one with
# --metrics-listen on a port the kernel picks, scraped every second by the caller
# (erlang_test/bench/metrics.exs); metrics.md and metrics-scrape.txt in the output folder.
metrics_cells() {
    local name i port mrc=0
    local -a pids=()
    for i in plain scraped; do
        name="bench_m${i}_$RUN_ID@127.0.0.1"
        local -a flags=(--name "$name" --cookie "$COOKIE" --data-dir "$DATA_TMP/m$i")
        [ "$i" = scraped ] && flags+=(--metrics-listen 127.0.0.1:0)
        mkdir -p "$DATA_TMP/m$i"
        "$CNODE_BIN" "${flags[@]}" </dev/null >"$RUN_DIR/m$i.out" 2>"$RUN_DIR/m$i.log" &
        pids+=($!)
        METRICS_PIDS+=($!)
        wait_ready "$RUN_DIR/m$i.out" "$!" "the $i metrics C node" >/dev/null || return 1
    done
    port=$(sed -n 's/.*serving Prometheus metrics on .* (port \([0-9]*\)).*/\1/p' "$RUN_DIR/mscraped.log" | head -1)
    [ -n "$port" ] || { echo "bench: the scraped C node logged no metrics port" >&2; return 1; }
    caller_args "bench_mcaller_$RUN_ID"
    BENCH_M_PLAIN="bench_mplain_$RUN_ID@127.0.0.1" BENCH_M_SCRAPED="bench_mscraped_$RUN_ID@127.0.0.1" \
    BENCH_M_PORT="$port" BENCH_M_ROUNDS="$BENCH_M_ROUNDS" BENCH_M_CONCURRENCY="$BENCH_M_CONCURRENCY" \
    BENCH_OUT="$OUT" BENCH_CELL_S="$BENCH_M_CELL_S" BENCH_WARM_S="$BENCH_WARM_S" \
    BENCH_M_OSPID="${pids[1]}" BENCH_CLK_TCK="$(getconf CLK_TCK)" BENCH_M_SCRAPES="$BENCH_M_SCRAPES" \
        elixir "${CALLER_ARGS[@]}" erlang_test/bench/metrics.exs </dev/null &
    CALLER_PID=$!
    wait "$CALLER_PID" || mrc=$?
    CALLER_PID=
    for i in "${pids[@]}"; do stop_node "$i" 30; done
    METRICS_PIDS=()
    return "$mrc"
}

## The durability section: the C node in each mode against Redis at matched durability.

# redis_fsync MODE: the appendfsync setting our MODE is compared with (the issue's matching;
# the README says what each survives).
redis_fsync() {
    case $1 in
        terminate) echo no ;;
        crash) echo everysec ;;
        power) echo always ;;
        *) echo "bench: unknown durability mode '$1'" >&2; return 1 ;;
    esac
}

# start_redis MODE: a Redis with the matched appendfsync on a free port of 127.0.0.1, in its
# own directory, as a job; appends "redis:MODE:PORT:PID" to DUR_TARGETS. `save ""` leaves
# only the AOF (no RDB snapshot forks): the journal is what a mode is about. Retries another
# port when one turns out to be taken.
start_redis() {
    local mode=$1 fsync dir log port pid
    fsync=$(redis_fsync "$mode")
    dir="$DATA_TMP/redis-$mode"
    log="$RUN_DIR/redis-$mode.log"
    mkdir -p "$dir"
    for _ in $(seq 1 20); do
        port=$((20000 + RANDOM % 30000))
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue
        fi
        "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize no \
            --appendonly yes --appendfsync "$fsync" --save "" --logfile "" \
            </dev/null >"$log" 2>&1 &
        pid=$!
        if wait_ready "$log" "$pid" "redis-server (appendfsync $fsync)" 'Ready to accept connections' \
                >/dev/null 2>&1 && lib_owns_port "$pid" "$port"; then
            DUR_REDIS_PIDS+=("$pid")
            DUR_TARGETS+=("redis:$mode:$port:$pid")
            return 0
        fi
        stop_node "$pid" 5
    done
    echo "bench: could not start redis-server (appendfsync $fsync); see $log" >&2
    return 1
}

# start_dur_cnode MODE: a C node with --durability MODE, our limiter's default window and
# limit, a fresh data dir; appends "cnode:MODE:NAME:PID" to DUR_TARGETS.
start_dur_cnode() {
    local mode=$1 name pid
    local -a flags
    name="bench_d_${mode}_$RUN_ID@127.0.0.1"
    flags=(--max-requests "$BENCH_DUR_MAX_REQUESTS" --window-ms "$BENCH_DUR_WINDOW_MS")
    # The mode last, so a --durability in BENCH_CNODE_ARGS (meant for the calls section's node)
    # cannot override it.
    [ ${#cnode_extra[@]} -gt 0 ] && flags+=("${cnode_extra[@]}")
    flags+=(--durability "$mode")
    mkdir -p "$DATA_TMP/c-$mode"
    "$CNODE_BIN" --name "$name" --cookie "$COOKIE" --data-dir "$DATA_TMP/c-$mode" "${flags[@]}" \
        </dev/null >"$RUN_DIR/cnode-$mode.out" 2>"$RUN_DIR/cnode-$mode.log" &
    pid=$!
    DUR_CNODE_PIDS+=("$pid")
    wait_ready "$RUN_DIR/cnode-$mode.out" "$pid" "the C node ($mode)" >/dev/null
    DUR_TARGETS+=("cnode:$mode:$name:$pid")
}

durability_section() {
    local mode ncells max_s crc=0 i f fs
    local -a modes statuses
    IFS=, read -r -a modes <<< "$BENCH_DUR_MODES"
    for mode in "${modes[@]}"; do redis_fsync "$mode" >/dev/null; done
    if ! command -v "$REDIS_SERVER" >/dev/null 2>&1; then
        echo "bench: $REDIS_SERVER is missing (WITH_BENCH=1 scripts/bootstrap.sh installs redis-server)" >&2
        rc=1
        return 0
    fi

    # fsync is what power and always pay for; on a tmpfs it costs nothing and they mean nothing.
    fs=$(stat -f -c %T "$DATA_TMP" 2>/dev/null || echo unknown)
    case $fs in
        tmpfs|ramfs) echo "bench: warning: the data dirs are on $fs ($DATA_TMP): fsync is free there;" \
                          "set TMPDIR to a directory on a disk" ;;
    esac

    DUR_TARGETS=()
    for mode in "${modes[@]}"; do start_dur_cnode "$mode"; done
    DUR_CNODE_FLAGS="--max-requests $BENCH_DUR_MAX_REQUESTS --window-ms $BENCH_DUR_WINDOW_MS"
    [ ${#cnode_extra[@]} -gt 0 ] && DUR_CNODE_FLAGS+=" ${cnode_extra[*]}"
    DUR_CNODE_FLAGS+=" --durability MODE"
    for mode in "${modes[@]}"; do start_redis "$mode"; done
    echo "durability: $REDIS_SERVER: $("$REDIS_SERVER" --version)"

    # The caller's own deadline: twice the planned cells, plus start-up.
    ncells=$(( (${#modes[@]} + ${#modes[@]}) * 2 * $(tr ',' '\n' <<< "$BENCH_DUR_CALLERS" | wc -l) ))
    max_s=$(awk -v n="$ncells" -v c="$BENCH_DUR_CELL_S" -v w="$BENCH_DUR_WARM_S" 'BEGIN { printf "%d", 2 * n * (c + w) + 120 }')

    caller_args "bench_dcaller_$RUN_ID"
    BENCH_DUR_TARGETS="${DUR_TARGETS[*]}" \
    BENCH_DUR_CNODE_FLAGS="$DUR_CNODE_FLAGS" BENCH_MAX_S="$max_s" BENCH_DUR_FS="$fs ($DATA_TMP)" \
    BENCH_CLK_TCK="$(getconf CLK_TCK)" BENCH_OUT="$OUT" \
        elixir "${CALLER_ARGS[@]}" erlang_test/bench/durability.exs </dev/null &
    CALLER_PID=$!
    wait "$CALLER_PID" || crc=$?
    CALLER_PID=

    echo
    statuses=()
    for i in "${!DUR_CNODE_PIDS[@]}"; do
        stop_node "${DUR_CNODE_PIDS[$i]}" 30
        statuses+=("${modes[$i]} $STOP_STATUS")
    done
    DUR_CNODE_PIDS=()
    echo "durability C nodes: exit status on SIGTERM: ${statuses[*]}"
    for mode in "${modes[@]}"; do log_problems "$RUN_DIR/cnode-$mode.log" "C node ($mode)"; done
    statuses=()
    for i in "${!DUR_REDIS_PIDS[@]}"; do
        stop_node "${DUR_REDIS_PIDS[$i]}" 10
        statuses+=("$(redis_fsync "${modes[$i]}") $STOP_STATUS")
    done
    DUR_REDIS_PIDS=()
    echo "durability Redis servers (appendfsync): exit status on SIGTERM: ${statuses[*]}"
    for f in "${DUR_OUT[@]}"; do
        if [ "$crc" -eq 0 ] && [ ! -s "$OUT/$f" ]; then
            echo "bench: $OUT/$f is missing" >&2
            crc=1
        fi
    done
    if [ "$crc" -ne 0 ]; then
        echo "bench: the durability section failed (status $crc)" >&2
        rc=$crc
    fi
}

## The tls section: the same servers again, every node over TLS, one target at a time.

# make_tls_certs DIR: a CA and one certificate for all three nodes, naming 127.0.0.1 as an
# IP address and as a DNS name (OTP's client compares the text), and the nodes' optfile.
make_tls_certs() {
    local d=$1 ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    mkdir -p "$d"
    echo "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1" >"$d/ext.cnf"
    # shellcheck disable=SC2086 # $ec is a list of openssl flags
    openssl req -x509 $ec -keyout "$d/ca.key" -out "$d/ca.pem" -subj /CN=bench-ca -days 2 2>/dev/null
    # shellcheck disable=SC2086
    openssl req $ec -keyout "$d/node.key" -out "$d/node.csr" -subj /CN=bench-node 2>/dev/null
    openssl x509 -req -in "$d/node.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -out "$d/node.pem" -days 2 -extfile "$d/ext.cnf" 2>/dev/null
    local o="{certfile, \"$d/node.pem\"}, {keyfile, \"$d/node.key\"}, {cacertfile, \"$d/ca.pem\"}, {verify, verify_peer}"
    echo "[{server, [$o, {fail_if_no_peer_cert, true}]}, {client, [$o]}]." >"$d/dist.conf"
}

tls_section() {
    local tls_dir tls_erl tcnode_name tcrash_name="" tpeer_name tpeer_ready crc=0 f
    local -a cnode_flags tls_flags
    tls_dir="$RUN_DIR/tls"
    make_tls_certs "$tls_dir"
    tls_erl="-proto_dist inet_tls -ssl_dist_optfile $tls_dir/dist.conf"
    tcnode_name="bench_tc_$RUN_ID@127.0.0.1"
    cnode_flags=(--max-requests "$BENCH_MAX_REQUESTS" --window-ms "$BENCH_WINDOW_MS")
    [ ${#cnode_extra[@]} -gt 0 ] && cnode_flags+=("${cnode_extra[@]}")
    tls_flags=(--proto-dist inet_tls --tls-certfile "$tls_dir/node.pem" --tls-keyfile "$tls_dir/node.key"
               --tls-cacertfile "$tls_dir/ca.pem")
    rm -rf "${DATA_TMP:?}"/*
    mkdir -p "$DATA_TMP/tls_terminate" "$DATA_TMP/tls_crash"
    # Terminate mode matches the BEAM peer, whose servers save only in terminate; a later
    # --durability in BENCH_CNODE_ARGS would override it, so it comes first.
    "$CNODE_BIN" --name "$tcnode_name" --cookie "$COOKIE" --data-dir "$DATA_TMP/tls_terminate" \
        --durability terminate "${cnode_flags[@]}" "${tls_flags[@]}" \
        </dev/null >"$RUN_DIR/tls_cnode.out" 2>"$RUN_DIR/tls_cnode.log" &
    CNODE_PID=$!
    if [ "$BENCH_TLS_CRASH" = 1 ]; then
        tcrash_name="bench_tk_$RUN_ID@127.0.0.1"
        "$CNODE_BIN" --name "$tcrash_name" --cookie "$COOKIE" --data-dir "$DATA_TMP/tls_crash" \
            --durability crash "${cnode_flags[@]}" "${tls_flags[@]}" \
            </dev/null >"$RUN_DIR/tls_cnode_crash.out" 2>"$RUN_DIR/tls_cnode_crash.log" &
        TLS_CRASH_PID=$!
    fi
    tpeer_name="bench_tpeer_$RUN_ID@127.0.0.1"
    elixir --name "$tpeer_name" --cookie "$COOKIE" -pa "$EBIN" --erl "$tls_erl ${BENCH_PEER_ERL}" \
        erlang_test/bench/peer.exs "$BENCH_MAX_REQUESTS" "$BENCH_WINDOW_MS" "$((BENCH_MAX_S + 60))" \
        </dev/null >"$RUN_DIR/tls_peer.out" 2>"$RUN_DIR/tls_peer.log" &
    PEER_PID=$!
    wait_ready "$RUN_DIR/tls_cnode.out" "$CNODE_PID" "the TLS C node" >/dev/null
    [ -z "$TLS_CRASH_PID" ] || wait_ready "$RUN_DIR/tls_cnode_crash.out" "$TLS_CRASH_PID" "the crash-mode TLS C node" >/dev/null
    tpeer_ready=$(wait_ready "$RUN_DIR/tls_peer.out" "$PEER_PID" "the TLS BEAM peer")
    echo
    # bench.exs measures the crash-mode node too when these name it.
    if [ -n "$tcrash_name" ]; then
        export BENCH_CNODE_CRASH="$tcrash_name" BENCH_CNODE_CRASH_OSPID="$TLS_CRASH_PID"
    fi
    BENCH_TLS=1 BENCH_CONCURRENCY="$BENCH_TLS_CONCURRENCY" \
    BENCH_CNODE="$tcnode_name" BENCH_CNODE_OSPID="$CNODE_PID" \
    BENCH_PEER="$tpeer_name" BENCH_PEER_OSPID="${tpeer_ready##* }" \
    BENCH_CLK_TCK="$(getconf CLK_TCK)" BENCH_OUT="$OUT" \
        elixir --name "bench_tcaller_$RUN_ID@127.0.0.1" --cookie "$COOKIE" -pa "$EBIN" \
        --erl "$tls_erl ${BENCH_CALLER_ERL}" erlang_test/bench/bench.exs </dev/null &
    CALLER_PID=$!
    wait "$CALLER_PID" || crc=$?
    CALLER_PID=
    unset BENCH_CNODE_CRASH BENCH_CNODE_CRASH_OSPID
    stop_node "$PEER_PID" 10
    PEER_PID=
    stop_node "$CNODE_PID" 30
    [ "$STOP_STATUS" -eq 0 ] || echo "bench: the TLS C node exited with status $STOP_STATUS on SIGTERM" >&2
    CNODE_PID=
    log_problems "$RUN_DIR/tls_cnode.log" "TLS C node"
    if [ -n "$TLS_CRASH_PID" ]; then
        stop_node "$TLS_CRASH_PID" 30
        [ "$STOP_STATUS" -eq 0 ] || echo "bench: the crash-mode TLS C node exited with status $STOP_STATUS on SIGTERM" >&2
        TLS_CRASH_PID=
        log_problems "$RUN_DIR/tls_cnode_crash.log" "crash-mode TLS C node"
    fi
    for f in "${TLS_OUT[@]}"; do
        if [ "$crc" -eq 0 ] && [ ! -s "$OUT/$f" ]; then
            echo "bench: $OUT/$f is missing" >&2
            crc=1
        fi
    done
    if [ "$crc" -ne 0 ]; then
        echo "bench: the tls section failed (status $crc)" >&2
        rc=$crc
    fi
}

if section calls; then calls_section; fi
if section durability; then durability_section; fi
if section tls; then tls_section; fi
if section capacity; then capacity_section; fi

outputs=()
section calls && outputs+=("${CALLS_OUT[@]}" bench.png)
section durability && outputs+=("${DUR_OUT[@]}")
section tls && outputs+=("${TLS_OUT[@]}")
section capacity && outputs+=("${CAP_OUT[@]}" capacity.png)
if [ "$rc" -eq 0 ]; then
    echo "outputs: ${OUT#"$LIB_ROOT"/}/{$(IFS=,; echo "${outputs[*]}")}; total $(($(date +%s) - started)) s"
else
    echo "bench: failed (status $rc) after $(($(date +%s) - started)) s" >&2
fi
exit "$rc"
