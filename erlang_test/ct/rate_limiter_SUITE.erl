%% The C node's rate_limiter called from Erlang with gen_server:call, against the
%% RateLimiter contract of DESIGN.md: the 100/101 sequence, term types as client ids (with
%% Erlang's own map-key equality as the model), unknown calls, and a limit that survives
%% gen_server:stop. Every case has its own C node (cnode_ct_lib), started with the limits
%% of args/1. Run by scripts/ct.sh (`make ct`).
-module(rate_limiter_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([hundred_then_limited/1, term_types_as_client_ids/1, same_term_built_differently/1,
         unknown_call/1, limit_survives_gen_server_stop/1]).

-define(CALL_TIMEOUT, 10000).

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [hundred_then_limited, term_types_as_client_ids, same_term_built_differently,
     unknown_call, limit_survives_gen_server_stop].

%% The C node's flags per case; the window is the default minute, so nothing expires.
args(hundred_then_limited) -> [];
args(unknown_call) -> [];
args(_) -> ["--max-requests", "3"].

init_per_testcase(Case, Config) ->
    CNode = cnode_ct_lib:start(args(Case)),
    [{cnode, CNode}, {rl, {rate_limiter, maps:get(node, CNode)}} | Config].

%% The node must exit 0 on SIGTERM; anything else (a crash during the case) fails it.
end_per_testcase(_Case, Config) ->
    CNode = ?config(cnode, Config),
    case cnode_ct_lib:stop(CNode) of
        0 -> ok;
        Status -> {fail, {exit_status_on_sigterm, Status, iolist_to_binary(cnode_ct_lib:log_tail(CNode))}}
    end.

check(Rl, Id) ->
    gen_server:call(Rl, {check_rate, Id}, ?CALL_TIMEOUT).

hundred_then_limited(Config) ->
    Rl = ?config(rl, Config),
    ?assertEqual([{ok, N} || N <- lists:seq(99, 0, -1)], [check(Rl, <<"a">>) || _ <- lists:seq(1, 100)]),
    ?assertEqual({error, rate_limited}, check(Rl, <<"a">>)),
    ?assertEqual({ok, 99}, check(Rl, <<"b">>)),
    ?assertEqual({error, rate_limited}, check(Rl, <<"a">>)),
    ?assertEqual({ok, 98}, check(Rl, <<"b">>)).

%% Four passes over pairwise different ids with max 3: ok 2, ok 1, ok 0, then limited.
term_types_as_client_ids(Config) ->
    Rl = ?config(rl, Config),
    Ids = [<<"a">>, a, "a", 'héllo', <<"日本"/utf8>>, 1, 1.0, -1, 256, 1 bsl 64, -(1 bsl 100),
           0.5, {user, 42}, [user, 42], {}, [], #{}, #{a => 1, <<"b">> => [2]},
           #{a => #{b => 1.0}}, self(), make_ref(), <<1:3>>, [1 | 2], fun lists:map/2],
    ?assertEqual(length(Ids), map_size(maps:from_list([{Id, x} || Id <- Ids]))),
    Got = [{Pass, Id, check(Rl, Id)} || Pass <- [1, 2, 3, 4], Id <- Ids],
    Want = [{Pass, Id, expected(Pass, 3)} || Pass <- [1, 2, 3, 4], Id <- Ids],
    ?assertEqual([], [{G, W} || {G, W} <- lists:zip(Got, Want), G =/= W]).

%% One client in two forms: alternate them; the fourth request is over max 3.
same_term_built_differently(Config) ->
    Rl = ?config(rl, Config),
    NegZero = binary_to_term(<<131, 70, 128, 0, 0, 0, 0, 0, 0, 0>>),
    Compound = #{k => [1.5, 'héllo', {1 bsl 70, -3}], <<"v">> => {0.1, "日本"}},
    Pairs = [{map_key_order, #{a => 1, b => 2, c => 3}, maps:from_list([{c, 3}, {b, 2}, {a, 1}])},
             {big_map_order, maps:from_list([{I, I} || I <- lists:seq(1, 40)]),
              maps:from_list([{I, I} || I <- lists:seq(40, 1, -1)])},
             {minor_version_0, Compound, binary_to_term(term_to_binary(Compound, [{minor_version, 0}]))},
             {string_and_list, "abc", [$a, $b, $c]},
             {atom_from_latin1, 'façade', binary_to_atom(<<"fa", 231, "ade">>, latin1)},
             {bignum, 1 bsl 64, 18446744073709551615 + 1}
             | negative_zero(NegZero)],
    [?assert(A =:= B) || {_, A, B} <- Pairs],
    Got = [{What, [check(Rl, Id) || Id <- [A, B, A, B]]} || {What, A, B} <- Pairs],
    Want = [{What, [{ok, 2}, {ok, 1}, {ok, 0}, {error, rate_limited}]} || {What, _, _} <- Pairs],
    ?assertEqual(Want, Got),
    %% 1 and 1.0 are two clients.
    ?assertEqual([{ok, 2}, {ok, 2}], [check(Rl, 7), check(Rl, 7.0)]).

unknown_call(Config) ->
    Rl = ?config(rl, Config),
    ?assertEqual({ok, 99}, check(Rl, <<"a">>)),
    Requests = [foo, {check_rate}, {check_rate, <<"a">>, extra}, {other, <<"a">>}, [check_rate, <<"a">>]],
    [?assertEqual({error, {unknown_call, R}}, gen_server:call(Rl, R, ?CALL_TIMEOUT)) || R <- Requests],
    ?assertEqual({ok, 98}, check(Rl, <<"a">>)).

limit_survives_gen_server_stop(Config) ->
    Rl = ?config(rl, Config),
    ?assertEqual([{ok, 2}, {ok, 1}, {ok, 0}, {error, rate_limited}], [check(Rl, <<"x">>) || _ <- [1, 2, 3, 4]]),
    ?assertEqual({ok, 2}, check(Rl, z)),
    {status, Old, _, _} = sys:get_status(Rl),
    ok = gen_server:stop(Rl),
    New = await_new_pid(Rl, Old, 200),
    ?assertEqual(node(Old), node(New)),
    ?assertEqual({error, rate_limited}, check(Rl, <<"x">>)),
    ?assertEqual({ok, 2}, check(Rl, <<"y">>)),
    ?assertEqual({ok, 1}, check(Rl, z)).

%% 0.0 and -0.0 are one term (=:=) and one map key up to OTP 26, two from OTP 27 on. The C
%% node keeps OTP 25's rule (genserver/term_key.h), so the pair is one client only where
%% this node agrees; on OTP 27 and later it is left out here.
negative_zero(NegZero) ->
    case +0.0 =:= NegZero of
        true -> [{negative_zero, 0.0, NegZero}];
        false -> []
    end.

expected(Pass, Max) when Pass =< Max -> {ok, Max - Pass};
expected(_, _) -> {error, rate_limited}.

%% Polls sys:get_status (every 50 ms, at most Tries times) until another pid answers.
await_new_pid(_Rl, Old, 0) ->
    ct:fail("no new rate_limiter pid after ~p stopped", [Old]);
await_new_pid(Rl, Old, Tries) ->
    case cnode_ct_lib:caught(fun() -> sys:get_status(Rl, 1000) end) of
        {status, Pid, _, _} when Pid =/= Old -> Pid;
        _ ->
            timer:sleep(50),
            await_new_pid(Rl, Old, Tries - 1)
    end.
