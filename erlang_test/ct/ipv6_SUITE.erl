%% The core interop cases over IPv6 (issue 12): a C node named ct_c...@::1, started with
%% --proto-dist inet6_tcp, and an OTP node started with -proto_dist inet6_tcp -name ...@::1,
%% both registered with the run's epmd on ::1 (the private epmd of scripts/lib.sh listens on
%% both loopbacks: epmd always adds them to -address).
%%
%% Common Test's own node speaks IPv4 distribution, and an inet_tcp node cannot reach an
%% inet6_tcp one, so it drives the IPv6 node through peer over that node's standard input
%% and output: the calls, casts and monitors run on the IPv6 node, in the helpers at the end
%% of this module (loaded there with -pa), and come back as values to assert on here.
%%
%% Each case has its own C node and runs in both connection directions: group accept (the
%% IPv6 BEAM node connects to the C node at its first call) and group connect (the C node
%% joins the BEAM node with --connect, and the case starts once that connection is up).
%% The whole suite is skipped, with the reason, where ::1 or the epmd on ::1 is unusable.
-module(ipv6_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_group/2,
         end_per_group/2, init_per_testcase/2, end_per_testcase/2]).
-export([call_increment_decrement_get_value/1, cast_increment/1, rate_limiter_check_rate/1,
         noproc_for_unknown_name/1, monitor_by_name_gets_down/1, monitor_by_pid_gets_down/1,
         names_and_logs_are_ipv6/1]).
%% Run on the IPv6 BEAM node through peer:call.
-export([calls/2, casts_then_get/3, caught_call/3, monitor_terminate/1,
         monitor_pid_terminate/1, await_node/2]).

-define(WAIT, 10000).
-define(LOOPBACK6, {0, 0, 0, 0, 0, 0, 0, 1}).

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [{group, accept}, {group, connect}].

groups() ->
    Cases = [call_increment_decrement_get_value, cast_increment, rate_limiter_check_rate,
             noproc_for_unknown_name, monitor_by_name_gets_down, monitor_by_pid_gets_down,
             names_and_logs_are_ipv6],
    [{accept, [], Cases}, {connect, [], Cases}].

init_per_suite(Config) ->
    case ipv6_epmd() of
        ok -> Config;
        {error, Why} -> {skip, lists:flatten(io_lib:format("::1 is unusable here: ~p", [Why]))}
    end.

end_per_suite(_Config) ->
    ok.

%% The epmd of the run answers on [::1]: IPv6 loopback works and epmd listens there.
ipv6_epmd() ->
    Port = list_to_integer(os:getenv("ERL_EPMD_PORT", "4369")),
    case gen_tcp:connect(?LOOPBACK6, Port, [inet6], 5000) of
        {ok, S} -> gen_tcp:close(S);
        {error, Why} -> {error, {epmd_on_ipv6_loopback, Why}}
    end.

%% One IPv6 BEAM node per group, not linked to init_per_group's process (which ends).
init_per_group(Direction, Config) ->
    {Peer, Node} = start_ipv6_beam(),
    [{direction, Direction}, {peer, Peer}, {beam, Node} | Config].

end_per_group(_Direction, Config) ->
    try peer:stop(?config(peer, Config)) catch _:_ -> ok end,
    ok.

start_ipv6_beam() ->
    Name = lists:flatten(io_lib:format("ct_b6_~b_~s", [erlang:unique_integer([positive]),
                                                       os:getenv("CNODE_TEST_RUN_ID")])),
    Args = ["-proto_dist", "inet6_tcp", "-setcookie", atom_to_list(erlang:get_cookie()),
            "-pa", filename:dirname(code:which(?MODULE))],
    {ok, Peer, Node} = peer:start(#{name => Name, host => "::1", longnames => true,
                                    connection => standard_io, args => Args}),
    %% The run's cleanup kills it by this pid if the suite dies first.
    OsPid = peer:call(Peer, os, getpid, []),
    ok = file:write_file(os:getenv("CNODE_TEST_PIDFILE"), [OsPid, "\n"], [append]),
    {Peer, Node}.

init_per_testcase(_Case, Config) ->
    Args = ["--proto-dist", "inet6_tcp"],
    CNode = case ?config(direction, Config) of
                accept -> cnode_ct_lib:start(Args, #{host => "::1"});
                connect -> start_connecting(Args, Config)
            end,
    [{cnode, CNode}, {counter, {counter, maps:get(node, CNode)}} | Config].

%% A C node started with --connect to the IPv6 BEAM node; returns once the BEAM node sees
%% the connection, which the C node made (the BEAM node has not called it yet).
start_connecting(Args, Config) ->
    Beam = ?config(beam, Config),
    CNode = cnode_ct_lib:start(Args ++ ["--connect", atom_to_list(Beam)], #{host => "::1"}),
    Node = maps:get(node, CNode),
    case on_beam(Config, await_node, [Node, ?WAIT]) of
        true -> CNode;
        false -> ct:fail("~p did not connect to ~p~n~s", [Node, Beam, cnode_ct_lib:log_tail(CNode)])
    end.

%% The node must exit 0 on SIGTERM; anything else (a crash during the case) fails it.
end_per_testcase(_Case, Config) ->
    CNode = ?config(cnode, Config),
    case cnode_ct_lib:stop(CNode) of
        0 -> ok;
        Status -> {fail, {exit_status_on_sigterm, Status, iolist_to_binary(cnode_ct_lib:log_tail(CNode))}}
    end.

on_beam(Config, F, A) ->
    peer:call(?config(peer, Config), ?MODULE, F, A, 30000).

%% ---- Cases ----

call_increment_decrement_get_value(Config) ->
    Counter = ?config(counter, Config),
    ?assertEqual([0, 1, 2, 1, 0, -1, -1],
                 on_beam(Config, calls, [Counter, [get_value, increment, increment, decrement,
                                                   decrement, decrement, get_value]])).

cast_increment(Config) ->
    %% The call travels behind the casts on the same connection, so it sees both.
    ?assertEqual(2, on_beam(Config, casts_then_get, [?config(counter, Config), increment, 2])).

rate_limiter_check_rate(Config) ->
    Rl = {rate_limiter, maps:get(node, ?config(cnode, Config))},
    ?assertEqual([{ok, 99}, {ok, 98}, {ok, 99}],
                 on_beam(Config, calls, [Rl, [{check_rate, <<"a">>}, {check_rate, <<"a">>},
                                              {check_rate, {client, 6}}]])).

noproc_for_unknown_name(Config) ->
    Node = maps:get(node, ?config(cnode, Config)),
    Exit = {noproc, {gen_server, call, [{nope, Node}, x, 5000]}},
    ?assertEqual({'EXIT', Exit}, on_beam(Config, caught_call, [{nope, Node}, x, 5000])),
    %% Again over the established connection.
    ?assertEqual([0], on_beam(Config, calls, [?config(counter, Config), [get_value]])),
    ?assertEqual({'EXIT', Exit}, on_beam(Config, caught_call, [{nope, Node}, x, 5000])).

monitor_by_name_gets_down(Config) ->
    Node = maps:get(node, ?config(cnode, Config)),
    ?assertEqual({down, {counter, Node}, shutdown},
                 on_beam(Config, monitor_terminate, [?config(counter, Config)])).

monitor_by_pid_gets_down(Config) ->
    Node = maps:get(node, ?config(cnode, Config)),
    {Pid, Down, After} = on_beam(Config, monitor_pid_terminate, [?config(counter, Config)]),
    ?assertEqual(Node, node(Pid)),
    ?assertEqual({down, Pid, shutdown}, Down),
    ?assertMatch({'EXIT', {noproc, _}}, After).

%% The names are inet6_tcp's (the C node's READY line named ct_c...@::1, which start/2
%% checks), and the C node logs the BEAM node's address in IPv6 form, [::1]:port.
names_and_logs_are_ipv6(Config) ->
    CNode = ?config(cnode, Config),
    ?assertMatch("::1", lists:last(string:split(atom_to_list(maps:get(node, CNode)), "@"))),
    ?assertEqual([1], on_beam(Config, calls, [?config(counter, Config), [increment]])),
    Beam = atom_to_list(?config(beam, Config)),
    ?assert(lists:member(maps:get(node, CNode), peer:call(?config(peer, Config), erlang, nodes, []))),
    {ok, Log} = file:read_file(maps:get(log, CNode)),
    Pattern = "connected to " ++ re_quote(Beam) ++ " \\(\\[::1\\]:[0-9]+\\)",
    case re:run(Log, Pattern) of
        {match, _} -> ok;
        nomatch -> ct:fail("no line matching ~s~n~s", [Pattern, cnode_ct_lib:log_tail(CNode)])
    end.

re_quote(S) ->
    re:replace(S, "[][\\\\^$.|?*+(){}]", "\\\\&", [global, {return, list}]).

%% ---- Run on the IPv6 BEAM node (peer:call) ----

%% The replies of gen_server:call(Server, R) for each R, in order.
calls(Server, Requests) ->
    [gen_server:call(Server, R) || R <- Requests].

%% N casts of Request, then the counter's value.
casts_then_get(Server, Request, N) ->
    [ok = gen_server:cast(Server, Request) || _ <- lists:seq(1, N)],
    gen_server:call(Server, get_value).

caught_call(Server, Request, Timeout) ->
    try
        gen_server:call(Server, Request, Timeout)
    catch
        exit:Reason -> {'EXIT', Reason}
    end.

%% Monitors Server by name, stops it with sys:terminate, and returns the DOWN it got.
monitor_terminate(Server) ->
    Ref = erlang:monitor(process, Server),
    ok = sys:terminate(Server, shutdown),
    receive
        {'DOWN', Ref, process, Who, Reason} -> {down, Who, Reason}
    after ?WAIT ->
        no_down
    end.

%% As monitor_terminate, by pid; then a call to the dead pid.
monitor_pid_terminate(Server) ->
    {status, Pid, _, _} = sys:get_status(Server),
    Ref = erlang:monitor(process, Pid),
    ok = sys:terminate(Pid, shutdown),
    Down = receive
               {'DOWN', Ref, process, Who, Reason} -> {down, Who, Reason}
           after ?WAIT ->
               no_down
           end,
    {Pid, Down, caught_call(Pid, get_value, 5000)}.

%% Whether Node shows up in nodes() within about Timeout ms, without contacting it.
await_node(Node, Timeout) when Timeout =< 0 ->
    lists:member(Node, nodes());
await_node(Node, Timeout) ->
    case lists:member(Node, nodes()) of
        true -> true;
        false -> timer:sleep(50), await_node(Node, Timeout - 50)
    end.
