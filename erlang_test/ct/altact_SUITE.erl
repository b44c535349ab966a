%% OTP 28's DFLAG_ALTACT_SIG and ALTACT_SIG_SEND, live (issue 11). The C node advertises
%% ALTACT_SIG and replies to a caller's alias with ALTACT_SIG_SEND when the caller's node
%% has it (OTP 28 on), with ALIAS_SEND when it has only ALIAS (OTP 24 to 27). The C node's
%% debug log says which it sent ("reply to an alias on N sent as K"), and which
%% ALTACT_SIG_SEND it received, so every case here checks the wire, not only the result,
%% and fails on either OTP if the node picks the wrong one. Each case runs in both
%% connection directions, as cnode_SUITE's do. Run by scripts/ct.sh on the system's OTP and,
%% once per OTP of the matrix, by scripts/test-otp.sh: the ALTACT_SIG side needs OTP 28+.
-module(altact_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0, init_per_group/2, end_per_group/2, init_per_testcase/2,
         end_per_testcase/2]).
-export([replies_use_the_callers_alias_message/1, late_reply_is_dropped/1,
         priority_message_to_a_name/1, priority_exit_to_a_pid/1]).

-define(WAIT, 10000).

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [{group, accept}, {group, connect}].

groups() ->
    Cases = [replies_use_the_callers_alias_message, late_reply_is_dropped,
             priority_message_to_a_name, priority_exit_to_a_pid],
    [{accept, [], Cases}, {connect, [], Cases}].

init_per_group(Direction, Config) ->
    [{direction, Direction} | Config].

end_per_group(_Direction, _Config) ->
    ok.

init_per_testcase(Case, Config) ->
    case {lists:member(Case, [priority_message_to_a_name, priority_exit_to_a_pid]), altact()} of
        {true, false} ->
            {skip, "priority signals (ALTACT_SIG_SEND from the BEAM) need OTP 28 or later"};
        _ ->
            CNode = case ?config(direction, Config) of
                        accept -> cnode_ct_lib:start(["--log-level", "debug"]);
                        connect -> start_connecting()
                    end,
            [{cnode, CNode}, {counter, {counter, maps:get(node, CNode)}} | Config]
    end.

start_connecting() ->
    ok = net_kernel:monitor_nodes(true),
    CNode = cnode_ct_lib:start(["--log-level", "debug", "--connect", atom_to_list(node())]),
    Node = maps:get(node, CNode),
    receive
        {nodeup, Node} -> ok
    after ?WAIT ->
        ct:fail("~p did not connect to ~p~n~s", [Node, node(), cnode_ct_lib:log_tail(CNode)])
    end,
    ok = net_kernel:monitor_nodes(false),
    CNode.

end_per_testcase(_Case, Config) ->
    CNode = ?config(cnode, Config),
    case cnode_ct_lib:stop(CNode) of
        0 -> ok;
        Status -> {fail, {exit_status_on_sigterm, Status, iolist_to_binary(cnode_ct_lib:log_tail(CNode))}}
    end.

%% Whether this node's OTP has DFLAG_ALTACT_SIG (OTP 28 on).
altact() ->
    list_to_integer(erlang:system_info(otp_release)) >= 28.

%% {Expected, Other}: the reply message this node's OTP must get, and the one it must not.
reply_kinds() ->
    case altact() of
        true -> {"ALTACT_SIG_SEND", "ALIAS_SEND"};
        false -> {"ALIAS_SEND", "ALTACT_SIG_SEND"}
    end.

%% How many alias replies to this node the C node logged as Kind.
replies_logged(CNode, Kind) ->
    Line = "reply to an alias on " ++ atom_to_list(node()) ++ " sent as " ++ Kind ++ "\n",
    count(CNode, Line).

count(CNode, Text) ->
    {ok, Log} = file:read_file(maps:get(log, CNode)),
    length(binary:matches(Log, list_to_binary(Text))).

replies_use_the_callers_alias_message(Config) ->
    CNode = ?config(cnode, Config),
    Counter = ?config(counter, Config),
    {Want, Other} = reply_kinds(),
    ct:comment("OTP ~s caller: replies as ~s", [erlang:system_info(otp_release), Want]),
    ?assertEqual([1, 2, 3], [gen_server:call(Counter, increment) || _ <- [1, 2, 3]]),
    ?assertEqual(3, replies_logged(CNode, Want)),
    ?assertEqual(0, replies_logged(CNode, Other)).

%% The late reply goes to the call's alias, in the message the caller's OTP gets, and the
%% caller's node drops it: the alias died with the call.
late_reply_is_dropped(Config) ->
    CNode = ?config(cnode, Config),
    Counter = ?config(counter, Config),
    {Want, Other} = reply_kinds(),
    ok = sys:suspend(Counter),
    Before = replies_logged(CNode, Want),
    ?assertMatch({'EXIT', {timeout, _}},
                 cnode_ct_lib:caught(fun() -> gen_server:call(Counter, increment, 100) end)),
    ok = sys:resume(Counter),
    ?assertEqual(2, gen_server:call(Counter, increment)),
    %% Three replies to aliases since: resume's, the late one, the last call's.
    ?assertEqual(Before + 3, replies_logged(CNode, Want)),
    ?assertEqual(0, replies_logged(CNode, Other)),
    receive
        Late -> ct:fail("a late reply arrived: ~p", [Late])
    after 0 ->
        ok
    end.

%% erlang:send/3 with priority: the BEAM sends ALTACT_SIG_SEND with NAME and PRIO (flags
%% 0x09) only to a node that negotiated ALTACT_SIG with it, else a plain REG_SEND. The C
%% node logs what it got, so this also proves the BEAM saw our flag.
priority_message_to_a_name(Config) ->
    CNode = ?config(cnode, Config),
    Counter = ?config(counter, Config),
    ok = erlang:send(Counter, {'$gen_cast', increment}, [priority]),
    ?assertEqual(1, gen_server:call(Counter, get_value)),
    ?assertEqual(1, count(CNode, "ALTACT_SIG_SEND from " ++ atom_to_list(node()) ++ ", flags 0x09\n")).

%% erlang:exit/3 with priority to a pid: ALTACT_SIG_SEND with EXIT and PRIO (0x11), the
%% reason as payload. kill cannot be trapped: the counter dies, its monitor says killed.
priority_exit_to_a_pid(Config) ->
    CNode = ?config(cnode, Config),
    Counter = ?config(counter, Config),
    {status, Pid, _, _} = sys:get_status(Counter),
    MRef = erlang:monitor(process, Pid),
    true = erlang:exit(Pid, kill, [priority]),
    receive
        {'DOWN', MRef, process, Pid, Reason} -> ?assertEqual(killed, Reason)
    after ?WAIT ->
        ct:fail("no DOWN after a priority kill~n~s", [cnode_ct_lib:log_tail(CNode)])
    end,
    ?assertEqual(1, count(CNode, "ALTACT_SIG_SEND from " ++ atom_to_list(node()) ++ ", flags 0x11\n")).
