%% Callers on two OTP versions at once (issue 11). A server's sys replies differ by the
%% caller's stdlib: from 5.1 (OTP 26.1) on, the caller's sys expects {ok, State}; before,
%% the state itself. Nothing in the distribution protocol says which, so the C node asks
%% each calling node once. Here this node and a BEAM node of another OTP call the same
%% server at the same time; each one's sys:get_state and sys:replace_state must return
%% the plain state.
%%
%% The other OTP's erl comes from CNODE_TEST_OTHER_ERL, which scripts/test-otp.sh (`make
%% test-otp`) sets; without it the suite is skipped, saying so.
-module(mixed_otp_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([two_otps_each_get_the_plain_state/1]).

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [two_otps_each_get_the_plain_state].

init_per_suite(Config) ->
    case os:getenv("CNODE_TEST_OTHER_ERL", "") of
        "" -> {skip, "no second OTP: CNODE_TEST_OTHER_ERL is not set (make test-otp sets it)"};
        Erl -> [{other_erl, Erl} | Config]
    end.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    CNode = cnode_ct_lib:start([]),
    Other = cnode_ct_lib:start_beam(?config(other_erl, Config)),
    [{cnode, CNode}, {other, Other}, {counter, {counter, maps:get(node, CNode)}} | Config].

end_per_testcase(_Case, Config) ->
    cnode_ct_lib:stop(?config(other, Config)),
    CNode = ?config(cnode, Config),
    case cnode_ct_lib:stop(CNode) of
        0 -> ok;
        Status -> {fail, {exit_status_on_sigterm, Status, iolist_to_binary(cnode_ct_lib:log_tail(CNode))}}
    end.

two_otps_each_get_the_plain_state(Config) ->
    Counter = ?config(counter, Config),
    Other = maps:get(node, ?config(other, Config)),
    Mine = erlang:system_info(otp_release),
    Theirs = rpc:call(Other, erlang, system_info, [otp_release]),
    ?assertNotEqual(Mine, Theirs),
    ct:comment("callers on OTP ~s and OTP ~s", [Mine, Theirs]),
    ?assertEqual([1, 2, 3], [gen_server:call(Counter, increment) || _ <- [1, 2, 3]]),
    %% Both nodes ask at once, several times each: the first request from each node makes
    %% the server ask that node which sys it runs, while the other node's requests wait.
    Keys = [rpc:async_call(Other, sys, get_state, [Counter]) || _ <- lists:seq(1, 5)],
    Local = [sys:get_state(Counter) || _ <- lists:seq(1, 5)],
    Remote = [rpc:yield(K) || K <- Keys],
    ?assertEqual(lists:duplicate(5, 3), Local),
    ?assertEqual(lists:duplicate(5, 3), Remote),
    %% replace_state from each; the fun runs on its caller's node.
    ?assertEqual(-3, rpc:call(Other, sys, replace_state, [Counter, fun erlang:'-'/1])),
    ?assertEqual(3, sys:replace_state(Counter, fun erlang:'-'/1)),
    ?assertEqual(3, rpc:call(Other, sys, get_state, [Counter])),
    ?assertEqual(3, sys:get_state(Counter)),
    %% The supervisor is a server too.
    Sup = {cnode_sup, maps:get(node, ?config(cnode, Config))},
    ?assertEqual(sys:get_state(Sup), rpc:call(Other, sys, get_state, [Sup])).
