# shellcheck shell=bash
# Shell helpers shared by scripts/ct.sh and scripts/exunit.sh. Sourced, never run.
#
# A test run is isolated: it gets a run id, a fresh random cookie, a private epmd on a free
# port (exported as ERL_EPMD_PORT, which the BEAM and the C node both honour) and a log
# directory build/test-logs/<suite>-<run id>/. Every process the run starts is killed by its
# pid when the script exits, whether the tests passed, failed or were interrupted:
#   - the script's own jobs are recorded: epmd in EPMD_PID, the test BEAM in LIB_JOBS;
#   - the test code appends the OS pid of every C node and BEAM peer it starts to
#     $CNODE_TEST_PIDFILE, and a listed pid is killed only while its command line still
#     names this run, so a recycled pid is never hit.
# Cleanup prints nothing, so the suite's own closing line stays the last one printed.

LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB_JOBS=()
LIB_TMP_HOME=

# lib_init SUITE: sets RUN_ID, RUN_DIR, COOKIE, CNODE_BIN, CNODE_SAN_BIN; installs the
# cleanup traps. CNODE_SAN_BIN (default build/san/cnode, which `make ct` and `make exunit`
# build) is the sanitized node of the cases that must show no sanitizer report; a missing
# one fails those cases, not the run.
lib_init() {
    local suite=$1

    # rebar3 needs HOME; a temporary one is removed again at the end.
    if [ -z "${HOME:-}" ]; then
        LIB_TMP_HOME=$(mktemp -d)
        HOME=$LIB_TMP_HOME
    fi
    export HOME

    RUN_ID="$(date +%H%M%S)_$$"
    RUN_DIR="$LIB_ROOT/build/test-logs/$suite-$RUN_ID"
    mkdir -p "$RUN_DIR"
    # shellcheck disable=SC2034 # used by the scripts that source this file
    COOKIE="t$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

    CNODE_BIN=${CNODE_BIN:-build/cnode}
    case $CNODE_BIN in
        /*) ;;
        *) CNODE_BIN="$LIB_ROOT/$CNODE_BIN" ;;
    esac
    if [ ! -x "$CNODE_BIN" ]; then
        echo "$suite: $CNODE_BIN is missing or not executable (run make first)" >&2
        exit 1
    fi

    CNODE_SAN_BIN=${CNODE_SAN_BIN:-build/san/cnode}
    case $CNODE_SAN_BIN in
        /*) ;;
        *) CNODE_SAN_BIN="$LIB_ROOT/$CNODE_SAN_BIN" ;;
    esac

    export CNODE_BIN CNODE_SAN_BIN
    export CNODE_TEST_RUN_ID=$RUN_ID
    export CNODE_TEST_RUN_DIR=$RUN_DIR
    export CNODE_TEST_PIDFILE="$RUN_DIR/pids"
    : > "$CNODE_TEST_PIDFILE"

    trap lib_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# lib_alive PID: true while PID runs (a zombie counts as gone).
lib_alive() {
    local state
    [ -r "/proc/$1/stat" ] || return 1
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$state" ] && [ "$state" != Z ]
}

# lib_stop PID: SIGTERM, up to 5 s to go, then SIGKILL. Reaps PID if it is our child.
lib_stop() {
    local pid=$1 i
    if ! lib_alive "$pid"; then
        wait "$pid" 2>/dev/null || true
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        lib_alive "$pid" || break
        sleep 0.1
    done
    if lib_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# lib_sanitizer_sweep: fails (status 1, and says where) when any log of this run holds a
# report of AddressSanitizer, LeakSanitizer or UndefinedBehaviorSanitizer. The sanitized
# node aborts at the first report, so a case usually fails on its exit status already;
# the sweep also catches a report from a node whose status no case looked at.
lib_sanitizer_sweep() {
    local hits
    hits=$(grep -lE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$RUN_DIR"/*.log \
               "$RUN_DIR"/*/*.log 2>/dev/null || true)
    if [ -n "$hits" ]; then
        echo "sanitizer reports in: $hits" >&2
        return 1
    fi
    echo "no sanitizer report in the logs of $RUN_DIR"
}

# lib_job PID: records a background job of this script for cleanup.
lib_job() {
    LIB_JOBS+=("$1")
}

# The pids the test code recorded, still alive and still naming this run.
lib_recorded_pids() {
    local pid
    [ -f "${CNODE_TEST_PIDFILE:-}" ] || return 0
    sort -u "$CNODE_TEST_PIDFILE" | while read -r pid; do
        case $pid in ''|*[!0-9]*) continue ;; esac
        lib_alive "$pid" || continue
        tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$RUN_ID" && echo "$pid"
    done
}

lib_cleanup() {
    local rc=$? i pid
    trap - EXIT INT TERM
    # Cleanup goes on whatever fails (a `wait` returns the job's own failing status).
    set +e
    # The test BEAM first, then what it started, then epmd, so nodes leave a live epmd.
    for ((i = ${#LIB_JOBS[@]} - 1; i >= 0; i--)); do
        lib_stop "${LIB_JOBS[$i]}"
    done
    for pid in $(lib_recorded_pids); do
        lib_stop "$pid"
    done
    if [ -n "${EPMD_PID:-}" ]; then
        lib_stop "$EPMD_PID"
    fi
    if [ -n "$LIB_TMP_HOME" ]; then
        rm -rf "$LIB_TMP_HOME"
    fi
    exit "$rc"
}

# lib_start_epmd: a private epmd in the foreground, as a job of this script, on a free port
# of 127.0.0.1; exports ERL_EPMD_PORT. Retries another port when one turns out to be taken.
lib_start_epmd() {
    local port pid i
    for _ in $(seq 1 20); do
        port=$((20000 + RANDOM % 30000))
        # Something already listens there: try another port.
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue
        fi
        epmd -address 127.0.0.1 -port "$port" </dev/null >>"$RUN_DIR/epmd.log" 2>&1 &
        pid=$!
        EPMD_PID=$pid
        for i in $(seq 1 100); do
            lib_alive "$pid" || break
            if epmd -port "$port" -names >/dev/null 2>&1 && lib_owns_port "$pid" "$port"; then
                export ERL_EPMD_PORT=$port
                return 0
            fi
            sleep 0.05
        done
        lib_stop "$pid"
        EPMD_PID=
    done
    echo "could not start a private epmd (see $RUN_DIR/epmd.log)" >&2
    return 1
}

# lib_owns_port PID PORT: the listener on PORT is PID's (not an epmd that beat us to it).
lib_owns_port() {
    command -v ss >/dev/null 2>&1 || return 0
    ss -Hltnp "sport = :$2" 2>/dev/null | grep -q "pid=$1,"
}
