#!/usr/bin/env bash
# make example-test: the C library as its users get it. Installs into a temporary prefix
# (make install PREFIX=...), compiles every installed header alone and builds
# examples/stack with nothing but `pkg-config --cflags --libs cnode`, starts the stack
# node, calls it from an erl node with gen_server:call/cast, and stops it by its pid with
# SIGTERM (exit 0). A private epmd, a fresh cookie and unique names (scripts/lib.sh).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

lib_init example
lib_start_epmd
cd "$LIB_ROOT"

prefix="$RUN_DIR/prefix"
echo "== make install PREFIX=$prefix"
make --no-print-directory install PREFIX="$prefix" >"$RUN_DIR/install.log" 2>&1 \
    || { cat "$RUN_DIR/install.log"; exit 1; }
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"

# Each public header compiles by itself with the installed flags: none needs a header
# that was not installed.
echo "== every installed header alone"
for h in $(cd "$prefix/include" && find . -name '*.h' | sed 's|^\./||' | sort); do
    # shellcheck disable=SC2046 # pkg-config's words are separate flags
    printf '#include <%s>\n' "$h" | cc -std=gnu11 -Wall -Wextra -Werror $(pkg-config --cflags cnode) \
        -x c -c -o /dev/null - || { echo "example-test: $h does not compile alone" >&2; exit 1; }
done
if ls "$prefix"/include/*/*_int.h >/dev/null 2>&1; then
    echo "example-test: a private header was installed" >&2
    exit 1
fi

echo "== examples/stack with pkg-config"
make --no-print-directory -C examples/stack OUT="$RUN_DIR" CFLAGS="-O2 -Werror"

name="stack_$RUN_ID@127.0.0.1"
"$RUN_DIR/stack" "$name" "$COOKIE" >"$RUN_DIR/stack.out" 2>"$RUN_DIR/stack.log" &
stack_pid=$!
lib_job "$stack_pid"
for _ in $(seq 1 200); do
    grep -q "^READY $name " "$RUN_DIR/stack.out" && break
    lib_alive "$stack_pid" || { cat "$RUN_DIR/stack.log"; echo "example-test: stack exited" >&2; exit 1; }
    sleep 0.1
done
grep -q "^READY $name " "$RUN_DIR/stack.out" || { echo "example-test: no READY line" >&2; exit 1; }
echo "stack node: $(cat "$RUN_DIR/stack.out") (pid $stack_pid)"

# The calls, from a plain erl node; it prints ok and halts 0, or prints what differed.
erl -noshell -name "caller_$RUN_ID@127.0.0.1" -setcookie "$COOKIE" -eval "
    S = {stack, '$name'},
    Check = fun(What, Want, Got) when Want =:= Got -> io:format(\"ok   ~s~n\", [What]);
               (What, Want, Got) -> io:format(\"FAIL ~s: wanted ~p, got ~p~n\", [What, Want, Got]),
                                    halt(1) end,
    Check(\"size of a new stack\", 0, gen_server:call(S, size)),
    ok = gen_server:cast(S, {push, <<\"a\">>}),
    ok = gen_server:cast(S, {push, {any, [term, 1.5]}}),
    Check(\"size after two pushes\", 2, gen_server:call(S, size)),
    Check(\"pop the last\", {ok, {any, [term, 1.5]}}, gen_server:call(S, pop)),
    Check(\"pop the first\", {ok, <<\"a\">>}, gen_server:call(S, pop)),
    Check(\"pop an empty stack\", empty, gen_server:call(S, pop)),
    Check(\"an unknown call\", {error, {unknown_call, nope}}, gen_server:call(S, nope)),
    Check(\"sys:get_state\", 0, sys:get_state(S)),
    [{stack, Pid, worker, ['Elixir.Stack']}] = supervisor:which_children({cnode_sup, '$name'}),
    Check(\"the stack runs on the C node\", '$name', node(Pid)),
    halt(0)." 2>&1 | tee "$RUN_DIR/caller.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "example-test: the calls failed (see $RUN_DIR)" >&2; exit 1; }

kill -TERM "$stack_pid"
status=0
wait "$stack_pid" || status=$?
if [ "$status" -ne 0 ]; then
    cat "$RUN_DIR/stack.log"
    echo "example-test: stack exited with status $status on SIGTERM" >&2
    exit 1
fi
echo "example-test: passed (stack exited 0 on SIGTERM)"
