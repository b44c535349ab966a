# shellcheck shell=bash
# The capacity section of `make bench` (BENCH_SECTIONS=capacity): how many calls one core of
# the server under test answers, driven by build/cnode-load, a load generator cheaper than
# the servers it measures. Sourced by scripts/bench.sh, whose helpers (wait_ready, stop_node,
# log_problems), run environment (RUN_ID, RUN_DIR, COOKIE, EBIN, OUT, DATA_TMP, the private
# epmd) and cleanup it uses; not run alone.
#
# For each server, the C node and then the BEAM peer (erlang_test/bench/peer.exs: the Elixir
# Counter and RateLimiter registered as counter and rate_limiter), started pinned to one core
# with taskset, the generator pinned to the other: for :increment and check_rate, with K = 1
# and K = 64 caller nodes, a low-load run (BENCH_CAP_LOW calls/s) for the baseline latency,
# then open-loop steps from BENCH_CAP_START calls/s, each BENCH_CAP_FACTOR times the last,
# until the server falls behind: achieved under 90 % of offered, p50 over BENCH_CAP_KNEE
# times the baseline's and over BENCH_CAP_KNEE_MS, or a call failing or timing out, twice in
# a row (one noisy step on a
# shared machine does not end a series); or BENCH_CAP_MAX calls/s. The knee is judged on p50,
# not p99: a server past its capacity queues every call, while on a shared machine one
# descheduling of a few milliseconds lifts a p99 tenfold at any load (the run of 22:53 UTC
# ended two series that way with both cores half idle). Saturation is the most any step
# achieved; the server's CPU per call (from its /proc/PID/stat, read by the generator over
# the measured window) and the generator's own are those of that step, and so are how busy
# each core was with anything (/proc/stat), which tells a server limit from a busy machine.
#
# Knobs (defaults full / quick): BENCH_CAP_STEP_S seconds measured per step (2 / 0.5),
# BENCH_CAP_WARM_S (0.5 / 0.2), BENCH_CAP_LOW (1000), BENCH_CAP_START (10000),
# BENCH_CAP_FACTOR (1.5), BENCH_CAP_MAX (2000000), BENCH_CAP_KNEE (10), BENCH_CAP_KNEE_MS (20:
# a p50 below it is no knee, whatever the baseline; a queueing server is far past it within
# the warm-up), BENCH_CAP_NODES
# (1,64), BENCH_CAP_REQUESTS (increment,check_rate), BENCH_CAP_SERVERS (cnode,beam),
# BENCH_CAP_INFLIGHT (8192: calls in flight at most over all caller nodes; a due call waits
# for a free one, and the wait counts in its latency), BENCH_CAP_IDS (BENCH_IDS),
# BENCH_CAP_MAX_REQUESTS (1000000000: nothing is refused), BENCH_CAP_WINDOW_MS (1000: both
# rate limiters keep every timestamp of the window per id, a list on the BEAM and a ring in
# the C node, so a long window would make a step's calls dearer the faster the steps before
# it ran: at 384 000 calls/s over 100 000 ids a 10 s window holds 38 stamps an id, and the C
# node's check_rate fell from 256 000 to 218 000 calls/s past its knee with each call 41 %
# dearer (other work took a tenth of its core then; with 1 s, 14 %); 1 s keeps at most a
# few an id and no step's state reaches the next),
# BENCH_CAP_SERVER_CORE (0), BENCH_CAP_GEN_CORE (1),
# LOAD_BIN (build/cnode-load).
# Outputs: build/bench/capacity.md (the table), capacity.csv (every step), capacity.png.

CAP_OUT=(capacity.md capacity.csv)
CAP_SERVER_PID=

capacity_defaults() {
    declare -gA R=()
    if [ "${BENCH_QUICK:-0}" = 1 ]; then
        : "${BENCH_CAP_STEP_S:=0.5}" "${BENCH_CAP_WARM_S:=0.2}"
    else
        : "${BENCH_CAP_STEP_S:=2}" "${BENCH_CAP_WARM_S:=0.5}"
    fi
    : "${BENCH_CAP_LOW:=1000}" "${BENCH_CAP_START:=10000}" "${BENCH_CAP_FACTOR:=1.5}"
    : "${BENCH_CAP_MAX:=2000000}" "${BENCH_CAP_KNEE:=10}" "${BENCH_CAP_KNEE_MS:=20}" "${BENCH_CAP_NODES:=1,64}"
    : "${BENCH_CAP_REQUESTS:=increment,check_rate}" "${BENCH_CAP_SERVERS:=cnode,beam}"
    : "${BENCH_CAP_INFLIGHT:=8192}" "${BENCH_CAP_IDS:=${BENCH_IDS:-100000}}"
    : "${BENCH_CAP_MAX_REQUESTS:=1000000000}" "${BENCH_CAP_WINDOW_MS:=1000}"
    : "${BENCH_CAP_SERVER_CORE:=0}" "${BENCH_CAP_GEN_CORE:=1}"
    : "${LOAD_BIN:=$LIB_ROOT/build/cnode-load}"
}

# cap_pin CORE: the taskset prefix that pins a command to CORE, or nothing on a machine
# with fewer than two cores or without taskset (then said once).
cap_pin() {
    if [ "$CAP_PINNING" = 1 ]; then
        echo "taskset -c $1"
    fi
}

# cap_start_server SERVER: the C node or the BEAM peer on the server core; sets CAP_TARGET
# (its node name) and CAP_SERVER_PID (its OS pid, which the generator reads CPU from).
cap_start_server() {
    local server=$1 ready
    local -a pin
    read -r -a pin <<< "$(cap_pin "$BENCH_CAP_SERVER_CORE")"
    if [ "$server" = cnode ]; then
        CAP_TARGET="bench_capc_$RUN_ID@127.0.0.1"
        mkdir -p "$DATA_TMP/cap"
        "${pin[@]}" "$CNODE_BIN" --name "$CAP_TARGET" --cookie "$COOKIE" --data-dir "$DATA_TMP/cap" \
            --max-requests "$BENCH_CAP_MAX_REQUESTS" --window-ms "$BENCH_CAP_WINDOW_MS" "${cnode_extra[@]}" \
            </dev/null >"$RUN_DIR/cap-cnode.out" 2>"$RUN_DIR/cap-cnode.log" &
        CAP_SERVER_PID=$!
        wait_ready "$RUN_DIR/cap-cnode.out" "$CAP_SERVER_PID" "the C node (capacity)" >/dev/null
        return
    fi
    CAP_TARGET="bench_capb_$RUN_ID@127.0.0.1"
    local -a peer_args=(--name "$CAP_TARGET" --cookie "$COOKIE" -pa "$EBIN")
    [ -n "${BENCH_PEER_ERL:-}" ] && peer_args+=(--erl "$BENCH_PEER_ERL")
    "${pin[@]}" elixir "${peer_args[@]}" erlang_test/bench/peer.exs \
        "$BENCH_CAP_MAX_REQUESTS" "$BENCH_CAP_WINDOW_MS" "$((BENCH_MAX_S + 600))" \
        </dev/null >"$RUN_DIR/cap-peer.out" 2>"$RUN_DIR/cap-peer.log" &
    CAP_SERVER_PID=$!
    ready=$(wait_ready "$RUN_DIR/cap-peer.out" "$CAP_SERVER_PID" "the BEAM peer (capacity)")
    # `elixir` execs the VM, so the job is the VM; the READY line says so.
    CAP_SERVER_OSPID=${ready##* }
}

# cap_step SERVER REQUEST NODES RATE: one open-loop run; appends its CSV row to capacity.csv
# and leaves the RESULT fields in the associative array R.
cap_step() {
    local server=$1 request=$2 nodes=$3 rate=$4 line kv inflight
    local -a pin
    read -r -a pin <<< "$(cap_pin "$BENCH_CAP_GEN_CORE")"
    inflight=$(( BENCH_CAP_INFLIGHT / nodes ))
    [ "$inflight" -lt 1 ] && inflight=1
    line=$("${pin[@]}" "$LOAD_BIN" --target "$CAP_TARGET" --cookie "$COOKIE" \
        --name "capgen_${RUN_ID}" --request "$request" --nodes "$nodes" --inflight "$inflight" \
        --rate "$rate" --duration "$BENCH_CAP_STEP_S" --warmup "$BENCH_CAP_WARM_S" --drain-ms 2000 \
        --ids "$BENCH_CAP_IDS" --server-pid "${CAP_SERVER_OSPID:-$CAP_SERVER_PID}" --label "$server" \
        2>>"$RUN_DIR/cap-load.log" | tee -a "$RUN_DIR/cap-load.out" | grep '^RESULT ' || true)
    R=()
    if [ -z "$line" ]; then
        echo "bench: capacity: cnode-load gave no result ($server $request K=$nodes $rate/s; see $RUN_DIR/cap-load.log)" >&2
        return 1
    fi
    for kv in ${line#RESULT }; do R[${kv%%=*}]=${kv#*=}; done
    echo "$server,$request,$nodes,$rate,${R[achieved]},${R[p50_us]},${R[p99_us]},${R[p999_us]},${R[server_cpu_us_per_call]},${R[gen_cpu_us_per_call]},${R[server_cores]},${R[errors]},${R[timeouts]},${R[unfinished]},${R[gen_cores]},${R[server_core_busy]},${R[gen_core_busy]}" \
        >> "$OUT/capacity.csv"
}

# cap_kneed BASE_P50 RATE: true when the step in R is past the knee.
cap_kneed() {
    awk -v p50="${R[p50_us]}" -v base="$1" -v k="$BENCH_CAP_KNEE" -v ach="${R[achieved]}" -v off="$2" \
        -v bad="$(( R[errors] + R[timeouts] ))" -v floor="$BENCH_CAP_KNEE_MS" \
        'BEGIN { exit !((p50 > k * base && p50 > floor * 1000) || ach < 0.9 * off || bad > 0) }'
}

# cap_series SERVER REQUEST NODES: the baseline, then steps up to the knee; appends the
# series' summary row to CAP_ROWS.
cap_series() {
    local server=$1 request=$2 nodes=$3 rate base base50 knees=0 best=0 best_row=""
    cap_step "$server" "$request" "$nodes" "$BENCH_CAP_LOW" || return 1
    base=${R[p99_us]}
    base50=${R[p50_us]}
    printf '  %-5s %-10s K=%-2s baseline %6s/s: p50 %s us, p99 %s us\n' "$server" "$request" "$nodes" "$BENCH_CAP_LOW" "$base50" "$base"
    rate=$BENCH_CAP_START
    while awk -v r="$rate" -v m="$BENCH_CAP_MAX" 'BEGIN { exit !(r <= m) }'; do
        cap_step "$server" "$request" "$nodes" "$rate" || return 1
        printf '  %-5s %-10s K=%-2s offered %7s/s: achieved %9s, p50 %8s us, p99 %9s us, server %5s us/call (%s cores; its core %s busy), generator %5s us/call (%s cores; its core %s busy)\n' \
            "$server" "$request" "$nodes" "$rate" "${R[achieved]}" "${R[p50_us]}" "${R[p99_us]}" \
            "${R[server_cpu_us_per_call]}" "${R[server_cores]}" "${R[server_core_busy]}" \
            "${R[gen_cpu_us_per_call]}" "${R[gen_cores]}" "${R[gen_core_busy]}"
        if awk -v a="${R[achieved]}" -v b="$best" 'BEGIN { exit !(a > b) }'; then
            best=${R[achieved]}
            best_row="$server|$request|$nodes|${R[achieved]}|$rate|$base|${R[p99_us]}|${R[server_cpu_us_per_call]}|${R[server_cores]}|${R[gen_cpu_us_per_call]}|${R[gen_cores]}|${R[server_core_busy]}|${R[gen_core_busy]}"
        fi
        if cap_kneed "$base50" "$rate"; then
            knees=$((knees + 1))
            [ "$knees" -ge 2 ] && break
        else
            knees=0
        fi
        rate=$(awk -v r="$rate" -v f="$BENCH_CAP_FACTOR" 'BEGIN { printf "%d", r * f }')
    done
    [ "$knees" -ge 2 ] || best_row+="|no knee below $BENCH_CAP_MAX/s"
    CAP_ROWS+=("$best_row")
}

# The table: one row per series, then C/BEAM per request and K against issue 13's 4x.
cap_report() {
    local row f
    {
        echo "### Capacity: one core of the server, open-loop load from build/cnode-load"
        echo
        echo "Server pinned to core $BENCH_CAP_SERVER_CORE, generator to core $BENCH_CAP_GEN_CORE$([ "$CAP_PINNING" = 1 ] || echo ' (NOT pinned: see above)'); steps of ${BENCH_CAP_STEP_S} s after ${BENCH_CAP_WARM_S} s warm-up, from ${BENCH_CAP_START}/s, x${BENCH_CAP_FACTOR} each; knee: p50 > ${BENCH_CAP_KNEE}x the ${BENCH_CAP_LOW}/s baseline's and > ${BENCH_CAP_KNEE_MS} ms, or achieved < 90 % of offered, twice in a row. $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)."
        echo
        echo "| server | request | caller nodes | saturation calls/s per core | at offered | p99 µs at ${BENCH_CAP_LOW}/s | p99 µs at saturation | server CPU µs/call | generator CPU µs/call | server cores | generator cores | server's core busy | generator's core busy | limit |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        for row in "${CAP_ROWS[@]}"; do
            IFS='|' read -r -a f <<< "$row"
            awk -v s="${f[0]}" -v r="${f[1]}" -v n="${f[2]}" -v a="${f[3]}" -v o="${f[4]}" -v b="${f[5]}" \
                -v p="${f[6]}" -v sc="${f[7]}" -v sh="${f[8]}" -v gc="${f[9]}" -v gh="${f[10]}" -v sb="${f[11]}" \
                -v gb="${f[12]}" -v note="${f[13]:-}" 'BEGIN {
                if (sh >= 0.9) lim = "server core busy"
                else if (gh >= 0.9) lim = "generator core busy"
                else if (sb >= 0.9) lim = sprintf("server core taken by other work (%.0f %% of it)", 100 * (sb - sh))
                else if (gb >= 0.9) lim = sprintf("generator core taken by other work (%.0f %% of it)", 100 * (gb - gh))
                else lim = "neither core busy"
                if (note != "") lim = lim "; " note
                printf "| %s | `%s` | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s, r, n, a, o, b, p, sc, gc, sh, gh, sb, gb, lim }'
        done
        echo
        echo "Server cores: the server's CPU over the window (1.00: its core busy all the time), from its /proc/PID/stat; generator cores: cnode-load's own (getrusage); a core busy: with anything at all, from /proc/stat (-1: not pinned). A saturation is the server's only when its core was busy with it and the generator's was not; a core busy with other work means a busy machine, and the row says little."
        echo
        cap_ratios
    } | tee "$OUT/capacity.md"
}

cap_ratios() {
    local request nodes c b row
    local -a f
    for request in ${BENCH_CAP_REQUESTS//,/ }; do
        for nodes in ${BENCH_CAP_NODES//,/ }; do
            c="" b=""
            for row in "${CAP_ROWS[@]}"; do
                IFS='|' read -r -a f <<< "$row"
                [ "${f[1]}" = "$request" ] && [ "${f[2]}" = "$nodes" ] || continue
                [ "${f[0]}" = cnode ] && c=${f[3]}
                [ "${f[0]}" = beam ] && b=${f[3]}
            done
            [ -n "$c" ] && [ -n "$b" ] || continue
            awk -v c="$c" -v b="$b" -v r="$request" -v n="$nodes" 'BEGIN {
                x = c / b; printf "- `%s`, %s caller node(s): C/BEAM saturation %.2f (issue 13 asks >= 4: %s)\n", r, n, x, (x >= 4 ? "met" : "NOT met") }'
        done
    done
}

capacity_section() {
    local server request nodes crc=0 f
    capacity_defaults
    CAP_ROWS=()
    if [ ! -x "$LOAD_BIN" ]; then
        echo "bench: $LOAD_BIN is missing (make builds it)" >&2
        rc=1
        return 0
    fi
    CAP_PINNING=1
    if ! command -v taskset >/dev/null 2>&1 || [ "$(nproc)" -lt 2 ]; then
        CAP_PINNING=0
        echo "bench: capacity: taskset missing or fewer than 2 cores: server and generator NOT pinned"
    fi
    echo "server,request,nodes,offered,achieved,p50_us,p99_us,p999_us,server_cpu_us_per_call,gen_cpu_us_per_call,server_cores,errors,timeouts,unfinished,gen_cores,server_core_busy,gen_core_busy" \
        > "$OUT/capacity.csv"
    echo
    echo "## capacity: one pinned core of each server, cnode-load on the other"
    for server in ${BENCH_CAP_SERVERS//,/ }; do
        CAP_SERVER_OSPID=
        cap_start_server "$server"
        for request in ${BENCH_CAP_REQUESTS//,/ }; do
            for nodes in ${BENCH_CAP_NODES//,/ }; do
                cap_series "$server" "$request" "$nodes" || crc=1
            done
        done
        stop_node "$CAP_SERVER_PID" 30
        [ "$server" = cnode ] && log_problems "$RUN_DIR/cap-cnode.log" "C node (capacity)"
        CAP_SERVER_PID=
    done
    echo
    cap_report
    cap_plot
    for f in "${CAP_OUT[@]}"; do
        [ -s "$OUT/$f" ] || { echo "bench: $OUT/$f is missing" >&2; crc=1; }
    done
    if [ "$crc" -ne 0 ]; then
        echo "bench: the capacity section failed" >&2
        rc=1
    fi
}

cap_plot() {
    if ! command -v gnuplot >/dev/null 2>&1; then
        echo "bench: gnuplot is missing (WITH_BENCH=1 scripts/bootstrap.sh installs it): no capacity.png" >&2
        return 0
    fi
    gnuplot -e "dir='$OUT'" erlang_test/bench/capacity.gp 2>"$RUN_DIR/gnuplot-capacity.log" \
        || echo "bench: gnuplot failed (see $RUN_DIR/gnuplot-capacity.log)" >&2
    [ -s "$OUT/capacity.png" ] || { echo "bench: $OUT/capacity.png is missing" >&2; rc=1; }
}
