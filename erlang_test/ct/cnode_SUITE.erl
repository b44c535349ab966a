%% The core interop cases from Erlang: the C node's counter is called, cast to and
%% monitored exactly as an Erlang gen_server on another node would be. Every case has its
%% own C node (started by cnode_ct_lib), so a case that stops the server affects no other.
%% Each case runs in both connection directions: group accept (this node connects to the C
%% node, at its first call) and group connect (the C node joins this node by itself with
%% --connect, and the case starts only once that connection is up). Run by scripts/ct.sh
%% (`make ct`) and, once per OTP version, by scripts/test-otp.sh (`make test-otp`).
-module(cnode_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0, init_per_group/2, end_per_group/2, init_per_testcase/2,
         end_per_testcase/2]).
-export([call_increment_decrement_get_value/1, cast_increment/1, unknown_call/1,
         noproc_for_unknown_name/1, sys_get_status/1, monitor_by_name_gets_down/1,
         monitor_by_pid_gets_down/1, sys_get_state_and_replace_state/1,
         replace_state_failures_have_otps_shape/1, late_reply_is_dropped/1]).

-define(WAIT, 10000).

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [{group, accept}, {group, connect}].

groups() ->
    Cases = [call_increment_decrement_get_value, cast_increment, unknown_call,
             noproc_for_unknown_name, sys_get_status, monitor_by_name_gets_down,
             monitor_by_pid_gets_down, sys_get_state_and_replace_state,
             replace_state_failures_have_otps_shape, late_reply_is_dropped],
    [{accept, [], Cases}, {connect, [], Cases}].

init_per_group(Direction, Config) ->
    [{direction, Direction} | Config].

end_per_group(_Direction, _Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    CNode = case ?config(direction, Config) of
                accept -> cnode_ct_lib:start([]);
                connect -> start_connecting()
            end,
    [{cnode, CNode}, {counter, {counter, maps:get(node, CNode)}} | Config].

%% A C node started with --connect to this node; returns once its connection is up, made by
%% the C node (this node has not called it yet).
start_connecting() ->
    ok = net_kernel:monitor_nodes(true),
    CNode = cnode_ct_lib:start(["--connect", atom_to_list(node())]),
    Node = maps:get(node, CNode),
    receive
        {nodeup, Node} -> ok
    after ?WAIT ->
        ct:fail("~p did not connect to ~p~n~s", [Node, node(), cnode_ct_lib:log_tail(CNode)])
    end,
    ok = net_kernel:monitor_nodes(false),
    CNode.

%% The node must exit 0 on SIGTERM; anything else (a crash during the case) fails it.
end_per_testcase(_Case, Config) ->
    CNode = ?config(cnode, Config),
    case cnode_ct_lib:stop(CNode) of
        0 -> ok;
        Status -> {fail, {exit_status_on_sigterm, Status, iolist_to_binary(cnode_ct_lib:log_tail(CNode))}}
    end.

call_increment_decrement_get_value(Config) ->
    Counter = ?config(counter, Config),
    ?assertEqual(0, gen_server:call(Counter, get_value)),
    ?assertEqual(1, gen_server:call(Counter, increment)),
    ?assertEqual(2, gen_server:call(Counter, increment)),
    ?assertEqual(1, gen_server:call(Counter, decrement)),
    ?assertEqual(0, gen_server:call(Counter, decrement)),
    ?assertEqual(-1, gen_server:call(Counter, decrement)),
    ?assertEqual(-1, gen_server:call(Counter, get_value)).

cast_increment(Config) ->
    Counter = ?config(counter, Config),
    ok = gen_server:cast(Counter, increment),
    ok = gen_server:cast(Counter, increment),
    %% The call travels behind the casts on the same connection, so it sees both.
    ?assertEqual(2, gen_server:call(Counter, get_value)).

unknown_call(Config) ->
    Counter = ?config(counter, Config),
    Request = {frobnicate, <<"bin">>, [1.5, self()]},
    ?assertEqual({error, {unknown_call, Request}}, gen_server:call(Counter, Request)),
    ?assertEqual(1, gen_server:call(Counter, increment)).

noproc_for_unknown_name(Config) ->
    Node = maps:get(node, ?config(cnode, Config)),
    Exit = {noproc, {gen_server, call, [{nope, Node}, x, 5000]}},
    Call = fun() -> gen_server:call({nope, Node}, x, 5000) end,
    ?assertEqual({'EXIT', Exit}, cnode_ct_lib:caught(Call)),
    %% Again over the established connection.
    ?assertEqual(0, gen_server:call(?config(counter, Config), get_value)),
    ?assertEqual({'EXIT', Exit}, cnode_ct_lib:caught(Call)).

sys_get_status(Config) ->
    Node = maps:get(node, ?config(cnode, Config)),
    {status, Pid, {module, gen_server}, _} = sys:get_status(?config(counter, Config)),
    ?assertEqual(Node, node(Pid)),
    ?assertEqual(1, gen_server:call(Pid, increment)).

monitor_by_name_gets_down(Config) ->
    Node = maps:get(node, ?config(cnode, Config)),
    Counter = ?config(counter, Config),
    ?assertEqual(0, gen_server:call(Counter, get_value)),
    Ref = erlang:monitor(process, Counter),
    ?assertEqual(ok, sys:terminate(Counter, shutdown)),
    receive
        {'DOWN', Ref, process, {counter, Node}, Reason} -> ?assertEqual(shutdown, Reason)
    after 10000 ->
        ct:fail("no DOWN for the monitor of ~p", [Counter])
    end.

monitor_by_pid_gets_down(Config) ->
    {status, Pid, _, _} = sys:get_status(?config(counter, Config)),
    Ref = erlang:monitor(process, Pid),
    ?assertEqual(ok, sys:terminate(Pid, shutdown)),
    receive
        {'DOWN', Ref, process, Pid, Reason} -> ?assertEqual(shutdown, Reason)
    after 10000 ->
        ct:fail("no DOWN for the monitor of ~p", [Pid])
    end,
    ?assertMatch({'EXIT', {noproc, _}}, cnode_ct_lib:caught(fun() -> gen_server:call(Pid, get_value, 5000) end)).

%% sys on this node's OTP gets the plain state whatever its sys expects from the server
%% ({ok, State} from stdlib 5.1, OTP 26.1, on; the state itself before).
sys_get_state_and_replace_state(Config) ->
    Counter = ?config(counter, Config),
    ?assertEqual(0, sys:get_state(Counter)),
    ?assertEqual(1, gen_server:call(Counter, increment)),
    ?assertEqual(1, sys:get_state(Counter)),
    ?assertEqual(11, sys:replace_state(Counter, fun(S) -> S + 10 end)),
    ?assertEqual(11, sys:get_state(Counter, 5000)),
    ?assertEqual(-11, sys:replace_state(Counter, fun erlang:'-'/1, 5000)),
    ?assertEqual(-10, gen_server:call(Counter, increment)).

%% A failed replace_state raises what OTP's own gen_server gives, and changes nothing.
replace_state_failures_have_otps_shape(Config) ->
    Counter = ?config(counter, Config),
    ?assertEqual(1, gen_server:call(Counter, increment)),
    Failed = fun(Class, Reason) -> {callback_failed, {gen_server, system_replace_state}, {Class, Reason}} end,
    Raised = fun(F) ->
                     {'EXIT', {R, _Stack}} = cnode_ct_lib:caught(fun() -> sys:replace_state(Counter, F) end),
                     R
             end,
    ?assertEqual(Failed(error, boom), Raised(fun(_) -> error(boom) end)),
    ?assertEqual(Failed(exit, bye), Raised(fun(_) -> exit(bye) end)),
    %% The counter takes integers only.
    ?assertEqual(Failed(error, state_refused), Raised(fun(_) -> not_an_integer end)),
    ?assertEqual(1, sys:get_state(Counter)).

%% A call that timed out leaves no late reply behind: the reply goes to the call's alias,
%% which the caller's node has dropped.
late_reply_is_dropped(Config) ->
    Counter = ?config(counter, Config),
    ok = sys:suspend(Counter),
    %% The suspended server holds the call back, so it times out for certain.
    ?assertMatch({'EXIT', {timeout, _}},
                 cnode_ct_lib:caught(fun() -> gen_server:call(Counter, increment, 100) end)),
    ok = sys:resume(Counter),
    %% The held increment runs now, and its reply is sent before this call's.
    ?assertEqual(2, gen_server:call(Counter, increment)),
    receive
        Late -> ct:fail("a late reply arrived: ~p", [Late])
    after 0 ->
        ok
    end.
