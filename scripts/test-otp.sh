#!/usr/bin/env bash
# The OTP matrix: the Common Test suites (erlang_test/ct), and the ExUnit suites where an
# Elixir from Debian runs on that OTP, against every OTP this machine can have, each run on
# its own private epmd with its own cookie (scripts/ct.sh, scripts/exunit.sh, lib.sh).
#
#   scripts/test-otp.sh               OTP 25, 27 and 29 (what `make test-otp` runs)
#   OTP_MATRIX="25 27" scripts/test-otp.sh
#   scripts/test-otp.sh -suite cnode_SUITE     extra arguments go to ct_run
#   OTP_EXUNIT=0 scripts/test-otp.sh           Common Test only
#
# scripts/otp.sh obtains each OTP once per machine (27 takes several minutes to build the
# first time). One that cannot be had is reported SKIPPED with the reason and does not fail
# the run; it is never counted as passed. Every suite runs on each OTP that is there, the
# connection cases in both directions (cnode_SUITE's groups), and mixed_otp_SUITE with a
# BEAM node of another OTP of the matrix calling at the same time (CNODE_TEST_OTHER_ERL).
#
# The last lines are a table (OTP, result, counts) and "test-otp: N passed, M failed,
# K skipped" over all test cases. Exit status 1 when a case failed or a run broke.
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT_DIR"
read -r -a versions <<< "${OTP_MATRIX:-25 27 29}"
LOG_DIR="$ROOT_DIR/build/test-logs/otp-matrix-$(date +%H%M%S)_$$"
mkdir -p "$LOG_DIR"

declare -A root reason
for v in "${versions[@]}"; do
    rc=0
    echo "test-otp: obtaining OTP $v"
    out=$(scripts/otp.sh "$v" 2> >(tee "$LOG_DIR/otp$v-obtain.log" >&2)) || rc=$?
    if [ "$rc" -eq 0 ]; then
        root[$v]=$out
        echo "test-otp: OTP $v at $out"
    else
        reason[$v]=$(grep -m1 '^SKIPPED: ' "$LOG_DIR/otp$v-obtain.log" | sed 's/^SKIPPED: //' || true)
        [ -n "${reason[$v]}" ] || reason[$v]="scripts/otp.sh $v failed with status $rc (see $LOG_DIR/otp$v-obtain.log)"
        echo "test-otp: OTP $v SKIPPED: ${reason[$v]}"
    fi
done

# other_erl V: the erl of another OTP of the matrix, preferring the oldest (the one whose
# sys differs most), for mixed_otp_SUITE.
other_erl() {
    local w
    for w in "${versions[@]}"; do
        if [ "$w" != "$1" ] && [ -n "${root[$w]:-}" ]; then
            echo "${root[$w]}/bin/erl"
            return
        fi
    done
}

total_ok=0 total_failed=0 total_skipped=0 broken=0
summary=()

# count KIND LOG STATUS: adds a run's counts to the totals and a row to the summary.
# Common Test's line: "TEST COMPLETE, 40 ok, 1 failed, 1 skipped of 42 test cases".
# ExUnit's: "51 tests, 1 failure, 2 excluded" (Elixir 1.14) or "Result: 50/51 passed" /
# "Result: 51 passed" (Elixir 1.20).
count() {
    local kind=$1 log=$2 rc=$3 v=$4 line ok=0 failed=0 skipped=0 total n
    if [ "$kind" = "CT    " ]; then
        line=$(grep 'TEST COMPLETE' "$log" | tail -1 || true)
        if [ -n "$line" ]; then
            ok=$(echo "$line" | grep -o '[0-9]* ok' | grep -o '[0-9]*' || echo 0)
            failed=$(echo "$line" | grep -o '[0-9]* failed' | grep -o '[0-9]*' || echo 0)
            skipped=$(echo "$line" | grep -o '[0-9]* skipped' | head -1 | grep -o '[0-9]*' || echo 0)
        fi
    else
        line=$(grep -E '^[0-9]+ tests?, [0-9]+ failures?|^Result: ' "$log" | tail -1 || true)
        case $line in
            Result:*/*)
                ok=$(echo "$line" | sed -E 's/^Result: ([0-9]+)\/([0-9]+).*/\1/')
                total=$(echo "$line" | sed -E 's/^Result: ([0-9]+)\/([0-9]+).*/\2/')
                failed=$((total - ok)) ;;
            Result:*)
                ok=$(echo "$line" | sed -E 's/^Result: ([0-9]+).*/\1/') ;;
            ?*)
                total=$(echo "$line" | sed -E 's/^([0-9]+) tests?.*/\1/')
                failed=$(echo "$line" | sed -E 's/^[0-9]+ tests?, ([0-9]+) failures?.*/\1/')
                for n in $(echo "$line" | grep -oE '[0-9]+ (excluded|skipped)' | grep -oE '^[0-9]+' || true); do
                    skipped=$((skipped + n))
                done
                ok=$((total - failed - skipped)) ;;
        esac
    fi
    if [ -z "$line" ]; then
        broken=1
        summary+=("OTP $v  $kind  BROKEN   the run ended (status $rc) without a result; see $log")
        return
    fi
    total_ok=$((total_ok + ok))
    total_failed=$((total_failed + failed))
    total_skipped=$((total_skipped + skipped))
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        broken=1
    fi
    summary+=("OTP $v  $kind  $([ "$failed" -eq 0 ] && [ "$rc" -eq 0 ] && echo passed || echo FAILED)   $ok passed, $failed failed, $skipped skipped")
}

# elixir_for V: the folder of an elixir that runs on OTP V, or nothing. Sid's Elixir
# unpacked beside OTP 29 (scripts/otp.sh) comes first; else Debian's own, which runs on 25
# and 27 but cannot load its code on 29.
elixir_for() {
    local v=$1 dir rel
    for dir in "${root[$v]}/../../lib/elixir/bin" "$(dirname "$(command -v elixir || echo /nonexistent/elixir)")"; do
        [ -x "$dir/elixir" ] || continue
        rel=$(PATH="${root[$v]}/bin:$dir:$PATH" elixir -e 'IO.write(System.otp_release())' 2>/dev/null || true)
        if [ "$rel" = "$v" ]; then
            (cd "$dir" && pwd)
            return
        fi
    done
}

for v in "${versions[@]}"; do
    if [ -z "${root[$v]:-}" ]; then
        summary+=("OTP $v  all     SKIPPED  ${reason[$v]}")
        continue
    fi
    echo "test-otp: === Common Test on OTP $v ==="
    log="$LOG_DIR/otp$v-ct.log"
    rc=0
    OTP_ROOT=${root[$v]} CNODE_TEST_OTHER_ERL=$(other_erl "$v") scripts/ct.sh "$@" 2>&1 |
        tee "$log" || rc=$?
    count "CT    " "$log" "$rc" "$v"
    if [ "${OTP_EXUNIT:-1}" = 0 ]; then
        continue
    fi
    exdir=$(elixir_for "$v")
    if [ -z "$exdir" ]; then
        summary+=("OTP $v  ExUnit  SKIPPED  no Elixir from Debian runs on OTP $v here (this machine's $(elixir --short-version 2>/dev/null || echo none) does not load its code there)")
        continue
    fi
    echo "test-otp: === ExUnit on OTP $v (Elixir $(PATH="${root[$v]}/bin:$exdir:$PATH" elixir --short-version)) ==="
    log="$LOG_DIR/otp$v-exunit.log"
    rc=0
    PATH="${root[$v]}/bin:$exdir:$PATH" scripts/exunit.sh 2>&1 | tee "$log" || rc=$?
    count ExUnit "$log" "$rc" "$v"
done

echo
echo "test-otp: the OTP matrix (logs in $LOG_DIR)"
for s in "${summary[@]}"; do
    echo "  $s"
done
unavailable=0
for v in "${versions[@]}"; do
    [ -n "${root[$v]:-}" ] || unavailable=$((unavailable + 1))
done
if [ "$unavailable" -gt 0 ]; then
    echo "test-otp: $unavailable of ${#versions[@]} OTP versions could not be obtained here and did not run (see SKIPPED above)"
fi
echo "test-otp: $total_ok passed, $total_failed failed, $total_skipped skipped"
[ "$total_failed" -eq 0 ] && [ "$broken" -eq 0 ]
