%% build/cnode-load, the load generator, for a fraction of a second against real nodes: the
%% C node's counter and rate_limiter, and an Erlang counter on this test node (a real BEAM
%% answering with gen:reply, so its replies come to the generator's aliases as ALIAS_SEND
%% or ALTACT_SIG_SEND). A smoke test: it checks that every call was answered, never how
%% fast. The binary is CNODE_LOAD_BIN, or cnode-load beside CNODE_BIN (or one folder up,
%% for build/san/cnode). Run by scripts/ct.sh (`make ct`).
-module(load_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1]).
-export([closed_loop_against_the_c_node/1, open_loop_check_rate_against_the_c_node/1,
         calls_and_casts_to_a_beam_server/1, a_missing_server_is_an_error_not_a_hang/1]).

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [closed_loop_against_the_c_node, open_loop_check_rate_against_the_c_node,
     calls_and_casts_to_a_beam_server, a_missing_server_is_an_error_not_a_hang].

init_per_suite(Config) ->
    [{load_bin, load_bin()} | Config].

end_per_suite(_Config) ->
    ok.

load_bin() ->
    Given = os:getenv("CNODE_LOAD_BIN"),
    CNodeDir = filename:dirname(os:getenv("CNODE_BIN")),
    Candidates = [B || B <- [Given, filename:join(CNodeDir, "cnode-load"),
                             filename:join(filename:dirname(CNodeDir), "cnode-load")], B =/= false],
    case [B || B <- Candidates, filelib:is_regular(B)] of
        [Bin | _] -> Bin;
        [] -> ct:fail("no cnode-load binary (tried ~p); make builds build/cnode-load", [Candidates])
    end.

%% Runs the generator against Target with Args; its RESULT line as a map of binaries.
run(Config, Target, Args) ->
    Name = lists:flatten(io_lib:format("ctload~b_~s", [erlang:unique_integer([positive]),
                                                       os:getenv("CNODE_TEST_RUN_ID")])),
    All = ["--target", atom_to_list(Target), "--cookie", atom_to_list(erlang:get_cookie()),
           "--name", Name, "--duration", "0.5", "--warmup", "0.2" | Args],
    Port = open_port({spawn_executable, ?config(load_bin, Config)},
                     [{args, All}, exit_status, stderr_to_stdout, binary, {line, 8192}]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    ok = file:write_file(os:getenv("CNODE_TEST_PIDFILE"), io_lib:format("~b~n", [OsPid]), [append]),
    {Status, Lines} = collect(Port, []),
    ct:log("cnode-load ~s~nexit status ~p~n~s", [lists:join(" ", All), Status, lists:join("\n", Lines)]),
    ?assertEqual(0, Status),
    [Result] = [L || <<"RESULT ", _/binary>> = L <- Lines],
    maps:from_list([list_to_tuple(binary:split(KV, <<"=">>))
                    || KV <- tl(binary:split(Result, <<" ">>, [global]))]).

collect(Port, Acc) ->
    receive
        {Port, {data, {eol, Line}}} -> collect(Port, [Line | Acc]);
        {Port, {data, {noeol, Line}}} -> collect(Port, [Line | Acc]);
        {Port, {exit_status, Status}} -> {Status, lists:reverse(Acc)}
    after 60000 ->
        ct:fail("cnode-load did not finish within 60 s")
    end.

int(R, Key) ->
    binary_to_integer(maps:get(Key, R)).

num(R, Key) ->
    binary_to_float(maps:get(Key, R)).

%% Every call due in the window was answered; none failed or timed out.
all_answered(R) ->
    ?assert(int(R, <<"calls">>) > 0),
    ?assertEqual(0, int(R, <<"errors">>)),
    ?assertEqual(0, int(R, <<"timeouts">>)),
    ?assertEqual(0, int(R, <<"unfinished">>)),
    ?assert(num(R, <<"p50_us">>) > 0.0),
    ?assert(num(R, <<"p99_us">>) >= num(R, <<"p50_us">>)).

with_cnode(Args, Fun) ->
    CNode = cnode_ct_lib:start(Args),
    try
        Fun(CNode)
    after
        ?assertEqual(0, cnode_ct_lib:stop(CNode))
    end.

closed_loop_against_the_c_node(Config) ->
    with_cnode([], fun(#{node := Node}) ->
        R = run(Config, Node, ["--nodes", "3", "--inflight", "4"]),
        all_answered(R),
        ?assertEqual(<<"closed">>, maps:get(<<"mode">>, R)),
        ?assertEqual(12, int(R, <<"peak_inflight">>)),
        %% Warm-up and drain calls count on the server too, so it saw at least the window's.
        ?assert(gen_server:call({counter, Node}, get_value) >= int(R, <<"calls">>))
    end).

open_loop_check_rate_against_the_c_node(Config) ->
    with_cnode([], fun(#{node := Node, os_pid := OsPid}) ->
        R = run(Config, Node, ["--nodes", "2", "--rate", "1000", "--request", "check_rate",
                               "--ids", "1000", "--server-pid", integer_to_list(OsPid)]),
        all_answered(R),
        ?assertEqual(<<"open">>, maps:get(<<"mode">>, R)),
        %% 700 calls over 1000 ids: no id is near the limit of 100.
        ?assertEqual(0, int(R, <<"rejected">>)),
        ?assert(num(R, <<"server_cpu_us_per_call">>) >= 0.0)
    end).

%% An Erlang counter registered on this node, answering with gen:reply as gen_server does.
calls_and_casts_to_a_beam_server(Config) ->
    Counter = spawn_link(fun() -> counter(0) end),
    true = register(counter, Counter),
    try
        R = run(Config, node(), ["--nodes", "2", "--inflight", "2"]),
        all_answered(R),
        Calls = counter_value(),
        ?assert(Calls >= int(R, <<"calls">>)),
        C = run(Config, node(), ["--request", "cast", "--rate", "500"]),
        ?assert(int(C, <<"calls">>) > 0),
        ?assertEqual(0, int(C, <<"errors">>)),
        %% Casts carry no reply: wait until the last ones are in.
        wait_until(fun() -> counter_value() >= Calls + int(C, <<"calls">>) end, 100)
    after
        unlink(Counter),
        exit(Counter, kill)
    end.

counter(N) ->
    receive
        {'$gen_call', From, increment} -> gen:reply(From, N + 1), counter(N + 1);
        {'$gen_call', From, get_value} -> gen:reply(From, N), counter(N);
        {'$gen_cast', increment} -> counter(N + 1)
    end.

counter_value() ->
    gen_server:call(counter, get_value).

wait_until(Fun, 0) -> ?assert(Fun());
wait_until(Fun, N) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(50), wait_until(Fun, N - 1)
    end.

%% No rate_limiter here: the BEAM answers MONITOR_P with a DOWN noproc, which fails each
%% call at once (as gen:call exits with noproc) instead of leaving it to time out.
a_missing_server_is_an_error_not_a_hang(Config) ->
    undefined = whereis(rate_limiter),
    R = run(Config, node(), ["--request", "check_rate", "--timeout-ms", "60000"]),
    ?assert(int(R, <<"errors">>) > 0),
    ?assertEqual(0, int(R, <<"calls">>)),
    ?assertEqual(0, int(R, <<"timeouts">>)),
    ?assertEqual(0, int(R, <<"unfinished">>)).
