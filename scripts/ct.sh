#!/usr/bin/env bash
# The Common Test interop suite (erlang_test/ct) against the built C node.
#
#   scripts/ct.sh                      the whole suite through rebar3 (what `make ct` runs)
#   scripts/ct.sh --case=cast_increment  extra arguments go to `rebar3 ct`
#   CNODE_BIN=path scripts/ct.sh       another binary (default build/cnode)
#   OTP_ROOT=dir scripts/ct.sh [-suite S] [-case C]
#                                      the suites on the OTP in dir (dir/bin/erl), compiled
#                                      with its erlc and run by its common_test, without
#                                      rebar3; extra arguments go to ct_run. The OTP matrix
#                                      (scripts/test-otp.sh) runs this once per OTP.
#   CNODE_TEST_OTHER_ERL=path          the erl of a second OTP, for the cases that need
#                                      callers of two OTP versions at once (else skipped)
#
# A private epmd, a fresh cookie and unique node names per run (scripts/lib.sh). The suite
# starts its C nodes itself; their logs go to build/test-logs/ct-<run id>/, Common Test's
# own logs to _build/test/logs/ (rebar3) or that run folder's ct_logs/ (OTP_ROOT).
# Offline: rebar.config has no dependencies.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

lib_init ct
cd "$LIB_ROOT"

if [ -z "${OTP_ROOT:-}" ]; then
    lib_start_epmd
    rebar3 ct --name "ct_$RUN_ID@127.0.0.1" --setcookie "$COOKIE" "$@" &
    lib_job $!
    rc=0
    wait $! || rc=$?
    lib_sanitizer_sweep || rc=1
    exit "$rc"
fi

# That OTP's own epmd, erl and erlc come first in PATH, also for the nodes the suites start.
export PATH="$OTP_ROOT/bin:$PATH"
lib_start_epmd
# The suites are compiled here as rebar.config would (warnings are errors), into the run's
# folder, where ct_run finds them up to date and leaves the source tree alone.
suites="$RUN_DIR/suites"
mkdir -p "$suites" "$RUN_DIR/ct_logs"
cp erlang_test/ct/*.erl "$suites/"
erlc -Werror +debug_info -o "$suites" "$suites"/*.erl
# ct_run is `erl -s ct_run script_start -s erlang halt` plus its flags; erl is called
# directly so that an OTP whose programs run through wrappers (otp.sh 29) works alike.
echo "ct.sh: Common Test on OTP $(erl -noshell -eval 'io:put_chars(erlang:system_info(otp_release)), halt().') ($OTP_ROOT)"
erl -name "ct_$RUN_ID@127.0.0.1" -setcookie "$COOKIE" -noshell -pa "$suites" \
    -s ct_run script_start -s erlang halt \
    -dir "$suites" -logdir "$RUN_DIR/ct_logs" "$@" &
lib_job $!
rc=0
wait $! || rc=$?
lib_sanitizer_sweep || rc=1
exit "$rc"
