%% The core interop cases from Erlang: the C node's counter is called, cast to and
%% monitored exactly as an Erlang gen_server on another node would be. Every case has its
%% own C node (started by cnode_ct_lib), so a case that stops the server affects no other.
%% Run by scripts/ct.sh (`make ct`).
-module(cnode_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([call_increment_decrement_get_value/1, cast_increment/1, unknown_call/1,
         noproc_for_unknown_name/1, sys_get_status/1, monitor_by_name_gets_down/1,
         monitor_by_pid_gets_down/1]).

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [call_increment_decrement_get_value, cast_increment, unknown_call,
     noproc_for_unknown_name, sys_get_status, monitor_by_name_gets_down,
     monitor_by_pid_gets_down].

init_per_testcase(_Case, Config) ->
    CNode = cnode_ct_lib:start([]),
    [{cnode, CNode}, {counter, {counter, maps:get(node, CNode)}} | Config].

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
    ?assertEqual({'EXIT', Exit}, catch gen_server:call({nope, Node}, x, 5000)),
    %% Again over the established connection.
    ?assertEqual(0, gen_server:call(?config(counter, Config), get_value)),
    ?assertEqual({'EXIT', Exit}, catch gen_server:call({nope, Node}, x, 5000)).

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
    ?assertMatch({'EXIT', {noproc, _}}, catch gen_server:call(Pid, get_value, 5000)).
