%% Issue 3 from Erlang, the core cases: the C supervisor cnode_sup, exit signals and links
%% with OTP's reasons, the sys protocol, and state that survives restarts of a server and
%% of the whole node (--data-dir). Issue 8: a killed top supervisor stops the node with
%% status 1 (also on the sanitized node, without a report), and net_kernel is restarted. Every case has its own C node and data dir; a case that
%% needs more nodes (a restart of the node, a node that must die) starts them itself, and
%% end_per_testcase stops every node a case started. Waits are bounds that fail instead of
%% hanging; a restart is awaited by polling for the new pid. Run by scripts/ct.sh.
-module(supervision_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([supervisor_children/1, stop_restarts_with_same_value/1, sys_get_state_and_status/1,
         sys_replace_state/1, kill_restarts_with_saved_value/1,
         kill_in_terminate_mode_restarts_with_the_terminate_save/1,
         exit_boom_restarts_with_latest_value/1, exit_normal_is_ignored/1,
         link_gets_exit_reason/1, linked_process_death_kills_server/1,
         unlink_leaves_server_alone/1, intensity_exceeded_exits_nonzero/1,
         sigterm_then_new_node_has_every_value/1, corrupt_state_file_set_aside/1,
         killed_root_exits_1_value_survives/1, killed_root_sanitized_no_report/1,
         net_kernel_terminated_is_restarted/1]).

-define(WAIT, 10000).
%% A rate limiter whose windows outlast any case: a limited client stays limited.
-define(LIMITS, ["--max-requests", "3", "--window-ms", "600000"]).

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [supervisor_children, stop_restarts_with_same_value, sys_get_state_and_status,
     sys_replace_state, kill_restarts_with_saved_value,
     kill_in_terminate_mode_restarts_with_the_terminate_save, exit_boom_restarts_with_latest_value,
     exit_normal_is_ignored, link_gets_exit_reason, linked_process_death_kills_server,
     unlink_leaves_server_alone, intensity_exceeded_exits_nonzero,
     sigterm_then_new_node_has_every_value, corrupt_state_file_set_aside,
     killed_root_exits_1_value_survives, killed_root_sanitized_no_report,
     net_kernel_terminated_is_restarted].

%% Cases that start their own nodes.
own_nodes(intensity_exceeded_exits_nonzero) -> true;
own_nodes(corrupt_state_file_set_aside) -> true;
own_nodes(killed_root_exits_1_value_survives) -> true;
own_nodes(killed_root_sanitized_no_report) -> true;
own_nodes(_) -> false.

args(sigterm_then_new_node_has_every_value) -> ?LIMITS;
args(kill_in_terminate_mode_restarts_with_the_terminate_save) -> ["--durability", "terminate"];
args(_) -> [].

init_per_testcase(Case, Config0) ->
    Tracker = spawn(fun() -> tracker([]) end),
    Config = [{tracker, Tracker} | Config0],
    case own_nodes(Case) of
        true ->
            Config;
        false ->
            CNode = start_tracked(Config, args(Case), #{}),
            Node = maps:get(node, CNode),
            [{cnode, CNode}, {node, Node}, {counter, {counter, Node}} | Config]
    end.

%% Every node the case started is stopped; each must exit 0 on SIGTERM (a crash during the
%% case shows up there), except one the case expected to die.
end_per_testcase(_Case, Config) ->
    Tracker = ?config(tracker, Config),
    Tracker ! {list, self()},
    Tracked = receive {tracked, T} -> T after 5000 -> [] end,
    exit(Tracker, kill),
    Statuses = [{CNode, Expect, cnode_ct_lib:stop(CNode)} || {CNode, Expect} <- Tracked],
    case [{maps:get(node, C), S, iolist_to_binary(cnode_ct_lib:log_tail(C))}
          || {C, 0, S} <- Statuses, S =/= 0] of
        [] -> ok;
        Bad -> {fail, {exit_status_on_sigterm, Bad}}
    end.

tracker(Tracked) ->
    receive
        {add, CNode, Expect} -> tracker([{CNode, Expect} | Tracked]);
        {list, From} -> From ! {tracked, Tracked}
    end.

start_tracked(Config, Args, Opts) ->
    track(Config, cnode_ct_lib:start(Args, Opts), 0).

track(Config, CNode, Expect) ->
    ?config(tracker, Config) ! {add, CNode, Expect},
    CNode.

%% The pid of a gen_server, from sys:get_status.
server_pid(Server) ->
    {status, Pid, {module, gen_server}, _} = sys:get_status(Server, 5000),
    Pid.

%% Polls until Server runs under a pid other than Old (restarted); the new pid.
await_new_pid(Server, Old) ->
    await_new_pid(Server, Old, 100).

await_new_pid(Server, Old, 0) ->
    ct:fail("~p did not come back under a pid other than ~p", [Server, Old]);
await_new_pid(Server, Old, N) ->
    case cnode_ct_lib:caught(fun() -> server_pid(Server) end) of
        Pid when is_pid(Pid), Pid =/= Old ->
            Pid;
        _OldOrNotYetRegistered ->
            timer:sleep(50),
            await_new_pid(Server, Old, N - 1)
    end.

await_down(Ref, Pid) ->
    receive
        {'DOWN', Ref, process, Pid, Reason} -> Reason
    after ?WAIT ->
        ct:fail("no DOWN from ~p", [Pid])
    end.

increment(Counter, N) ->
    ?assertEqual(lists:seq(1, N), [gen_server:call(Counter, increment) || _ <- lists:seq(1, N)]).

%% A process linked to Pid (a gen_server) that exits with the reason it is sent, or
%% unlinks when sent unlink (replying unlinked). Returns once the link is in place: a sys
%% request sent after the link was answered, and signals from one process arrive in order.
linked_holder(Pid) ->
    Parent = self(),
    Holder = spawn(fun() ->
                           link(Pid),
                           _ = sys:get_state(Pid, 5000),
                           Parent ! {self(), linked},
                           holder_loop(Pid, Parent)
                   end),
    receive {Holder, linked} -> Holder after ?WAIT -> ct:fail("no link from the holder") end.

holder_loop(Pid, Parent) ->
    receive
        {exit, Reason} ->
            exit(Reason);
        unlink ->
            unlink(Pid),
            _ = sys:get_state(Pid, 5000),
            Parent ! {self(), unlinked},
            holder_loop(Pid, Parent)
    after 60000 ->
        unlink(Pid)
    end.

%% --- cases -----------------------------------------------------------------------------

supervisor_children(Config) ->
    Node = ?config(node, Config),
    Counter = ?config(counter, Config),
    Sup = {cnode_sup, Node},
    [{counter, C, worker, ['Elixir.Counter']}, {rate_limiter, R, worker, ['Elixir.RateLimiter']}] =
        supervisor:which_children(Sup),
    ?assertEqual(C, server_pid(Counter)),
    ?assertEqual(R, server_pid({rate_limiter, Node})),
    Counts = [{specs, 2}, {active, 2}, {supervisors, 0}, {workers, 2}],
    ?assertEqual(lists:sort(Counts), lists:sort(supervisor:count_children(Sup))),
    Ref = erlang:monitor(process, C),
    exit(C, kill),
    ?assertEqual(killed, await_down(Ref, C)),
    C2 = await_new_pid(Counter, C),
    %% one_for_one: only the counter was restarted.
    ?assertEqual([{counter, C2, worker, ['Elixir.Counter']},
                  {rate_limiter, R, worker, ['Elixir.RateLimiter']}],
                 supervisor:which_children(Sup)).

stop_restarts_with_same_value(Config) ->
    Counter = ?config(counter, Config),
    increment(Counter, 3),
    Pid = server_pid(Counter),
    Ref = erlang:monitor(process, Pid),
    ?assertEqual(ok, gen_server:stop(Counter)),
    ?assertEqual(normal, await_down(Ref, Pid)),
    New = await_new_pid(Counter, Pid),
    ?assertEqual(3, gen_server:call(Counter, get_value)),
    ?assertEqual(4, gen_server:call(New, increment)).

sys_get_state_and_status(Config) ->
    Node = ?config(node, Config),
    Counter = ?config(counter, Config),
    increment(Counter, 1),
    ?assertEqual(1, sys:get_state(Counter)),
    {status, Sup, {module, gen_server}, _} = sys:get_status({cnode_sup, Node}),
    {status, Pid, {module, gen_server}, [_PDict, running, Sup, [], Misc]} = sys:get_status(Counter),
    ?assertEqual(Node, node(Pid)),
    ?assertNotEqual(Sup, Pid),
    ?assertEqual([{header, "Status for generic server counter"},
                  {data, [{"Status", running}, {"Parent", Sup}, {"Logged events", []}]},
                  {data, [{"State", 1}]}],
                 Misc).

%% C cannot run the fun: the C node has the fun's own node (its rex) evaluate it.
sys_replace_state(Config) ->
    Counter = ?config(counter, Config),
    increment(Counter, 3),
    ?assertEqual(13, sys:replace_state(Counter, fun(S) -> S + 10 end)),
    ?assertEqual(13, gen_server:call(Counter, get_value)),
    ?assertEqual(13, sys:get_state(Counter)).

%% The default durability (crash): every acknowledged increment is in the journal before its
%% reply leaves, so a kill, for which terminate does not run, loses none.
kill_restarts_with_saved_value(Config) ->
    ?assertEqual(3, kill_after_a_save_and_an_increment(Config)).

%% The seed's behaviour, --durability terminate: state is saved in terminate only, which a
%% kill skips, so the new server has the value of the last terminate.
kill_in_terminate_mode_restarts_with_the_terminate_save(Config) ->
    ?assertEqual(2, kill_after_a_save_and_an_increment(Config)).

%% 2 increments, a stop (terminate saves 2), one more increment, a kill: the value after it.
kill_after_a_save_and_an_increment(Config) ->
    Counter = ?config(counter, Config),
    increment(Counter, 2),
    First = server_pid(Counter),
    ?assertEqual(ok, gen_server:stop(Counter)),
    Pid = await_new_pid(Counter, First),
    ?assertEqual(3, gen_server:call(Counter, increment)),
    Ref = erlang:monitor(process, Pid),
    exit(Pid, kill),
    ?assertEqual(killed, await_down(Ref, Pid)),
    New = await_new_pid(Counter, Pid),
    gen_server:call(New, get_value).

exit_boom_restarts_with_latest_value(Config) ->
    Counter = ?config(counter, Config),
    increment(Counter, 3),
    Pid = server_pid(Counter),
    Ref = erlang:monitor(process, Pid),
    exit(Pid, boom),
    ?assertEqual(boom, await_down(Ref, Pid)),
    New = await_new_pid(Counter, Pid),
    ?assertEqual(3, gen_server:call(New, get_value)).

exit_normal_is_ignored(Config) ->
    Counter = ?config(counter, Config),
    Pid = server_pid(Counter),
    Ref = erlang:monitor(process, Pid),
    exit(Pid, normal),
    %% This call travels behind the exit signal.
    ?assertEqual(1, gen_server:call(Pid, increment)),
    ?assertEqual(Pid, server_pid(Counter)),
    receive {'DOWN', Ref, process, _, Reason} -> ct:fail("DOWN ~p", [Reason]) after 0 -> ok end.

link_gets_exit_reason(Config) ->
    Counter = ?config(counter, Config),
    process_flag(trap_exit, true),
    Pid = server_pid(Counter),
    link(Pid),
    exit(Pid, kill),
    receive {'EXIT', Pid, R1} -> ?assertEqual(killed, R1) after ?WAIT -> ct:fail("no EXIT") end,
    Pid2 = await_new_pid(Counter, Pid),
    link(Pid2),
    exit(Pid2, boom),
    receive {'EXIT', Pid2, R2} -> ?assertEqual(boom, R2) after ?WAIT -> ct:fail("no EXIT") end,
    process_flag(trap_exit, false).

linked_process_death_kills_server(Config) ->
    Counter = ?config(counter, Config),
    increment(Counter, 3),
    Pid = server_pid(Counter),
    Ref = erlang:monitor(process, Pid),
    Holder = linked_holder(Pid),
    Holder ! {exit, boom},
    ?assertEqual(boom, await_down(Ref, Pid)),
    New = await_new_pid(Counter, Pid),
    ?assertEqual(3, gen_server:call(New, get_value)).

unlink_leaves_server_alone(Config) ->
    Counter = ?config(counter, Config),
    Pid = server_pid(Counter),
    Ref = erlang:monitor(process, Pid),
    Holder = linked_holder(Pid),
    Holder ! unlink,
    receive {Holder, unlinked} -> ok after ?WAIT -> ct:fail("no unlink") end,
    HRef = erlang:monitor(process, Holder),
    Holder ! {exit, boom},
    ?assertEqual(boom, await_down(HRef, Holder)),
    ?assertEqual(1, gen_server:call(Pid, increment)),
    ?assertEqual(Pid, server_pid(Counter)),
    receive {'DOWN', Ref, process, _, Reason} -> ct:fail("DOWN ~p", [Reason]) after 0 -> ok end.

%% Three restarts in 5 s are within the intensity, a fourth is not: the children are shut
%% down (the rate limiter's terminate saves) and the node exits non-zero.
intensity_exceeded_exits_nonzero(Config) ->
    CNode = track(Config, cnode_ct_lib:start([], #{}), any),
    Node = maps:get(node, CNode),
    Counter = {counter, Node},
    ?assertEqual({ok, 99}, gen_server:call({rate_limiter, Node}, {check_rate, <<"x">>})),
    Kill = fun(Pid) ->
                   Ref = erlang:monitor(process, Pid),
                   exit(Pid, kill),
                   ?assertEqual(killed, await_down(Ref, Pid))
           end,
    Pid = lists:foldl(fun(_, P) -> Kill(P), await_new_pid(Counter, P) end,
                      server_pid(Counter), [1, 2, 3]),
    ?assertEqual(1, gen_server:call(Counter, increment)),
    exit(Pid, kill),
    Status = cnode_ct_lib:await_exit(CNode, ?WAIT),
    ?assert(is_integer(Status) andalso Status =/= 0),
    Again = track(Config, cnode_ct_lib:restart(CNode, []), 0),
    ?assertEqual({ok, 98}, gen_server:call({rate_limiter, maps:get(node, Again)}, {check_rate, <<"x">>})).

sigterm_then_new_node_has_every_value(Config) ->
    CNode = ?config(cnode, Config),
    Node = ?config(node, Config),
    Counter = ?config(counter, Config),
    Rl = {rate_limiter, Node},
    increment(Counter, 5),
    ?assertEqual([{ok, 2}, {ok, 1}, {ok, 0}, {error, rate_limited}],
                 [gen_server:call(Rl, {check_rate, <<"x">>}) || _ <- [1, 2, 3, 4]]),
    ?assertEqual({ok, 2}, gen_server:call(Rl, {check_rate, <<"y">>})),
    ?assertEqual(0, cnode_ct_lib:stop(CNode)),
    Again = track(Config, cnode_ct_lib:restart(CNode, ?LIMITS), 0),
    ?assertEqual(Node, maps:get(node, Again)),
    ?assertEqual(5, gen_server:call(Counter, get_value)),
    ?assertEqual({error, rate_limited}, gen_server:call(Rl, {check_rate, <<"x">>})),
    ?assertEqual({ok, 1}, gen_server:call(Rl, {check_rate, <<"y">>})).

corrupt_state_file_set_aside(Config) ->
    Name = lists:flatten(io_lib:format("ct_corrupt~b_~s", [erlang:unique_integer([positive]),
                                                            os:getenv("CNODE_TEST_RUN_ID")])),
    Dir = cnode_ct_lib:data_dir_for(Name),
    Path = filename:join(Dir, "counter.state"),
    ok = filelib:ensure_dir(Path),
    Garbage = <<"not a state file", 0, 1, 2, 255, (crypto:strong_rand_bytes(64))/binary>>,
    ok = file:write_file(Path, Garbage),
    CNode = start_tracked(Config, [], #{name => Name}),
    ?assertEqual(0, gen_server:call({counter, maps:get(node, CNode)}, get_value)),
    [Aside] = filelib:wildcard(Path ++ ".corrupt-*"),
    ?assertEqual({ok, Garbage}, file:read_file(Aside)),
    {ok, Log} = file:read_file(maps:get(log, CNode)),
    ?assertMatch([_ | _], [L || L <- string:split(Log, "\n", all),
                                string:find(L, Path) =/= nomatch,
                                string:find(L, "warning") =/= nomatch]),
    ?assertEqual(1, gen_server:call({counter, maps:get(node, CNode)}, increment)).

%% exit(RootSup, kill) with the pid a shell would find: the children get killed through
%% their links and save, and the C node stops by itself with status 1, as an OTP node does
%% when a permanent application's top supervisor dies. The next start has the value back.
%% Returns the killed node and its successor.
kill_root_sequence(Config, Opts) ->
    CNode = track(Config, cnode_ct_lib:start([], Opts), 1),
    Node = maps:get(node, CNode),
    increment({counter, Node}, 3),
    {status, Sup, {module, gen_server}, _} = sys:get_status({cnode_sup, Node}),
    exit(Sup, kill),
    Status = cnode_ct_lib:await_exit(CNode, ?WAIT),
    Status =:= 1 orelse ct:fail("exited ~p after its root supervisor was killed~n~s",
                                [Status, cnode_ct_lib:log_tail(CNode)]),
    Again = track(Config, cnode_ct_lib:restart(CNode, []), 0),
    ?assertEqual(3, gen_server:call({counter, maps:get(node, Again)}, get_value)),
    ?assertEqual(4, gen_server:call({counter, maps:get(node, Again)}, increment)),
    {CNode, Again}.

killed_root_exits_1_value_survives(Config) ->
    kill_root_sequence(Config, #{}).

killed_root_sanitized_no_report(Config) ->
    Bin = cnode_ct_lib:san_bin(),
    filelib:is_file(Bin) orelse ct:fail("~s is missing: make SANITIZER=address,undefined", [Bin]),
    {CNode, Again} = kill_root_sequence(Config, #{bin => Bin}),
    ?assertEqual(0, cnode_ct_lib:stop(Again)),
    ?assertEqual([], cnode_ct_lib:sanitizer_reports(CNode)).

%% OTP's net_kernel is a permanent child of kernel_sup; here too. The SIGTERM at the end of
%% the case (end_per_testcase) must stop the new one and exit 0.
net_kernel_terminated_is_restarted(Config) ->
    Node = ?config(node, Config),
    Old = server_pid({net_kernel, Node}),
    ?assertEqual(ok, sys:terminate({net_kernel, Node}, normal)),
    New = await_new_pid({net_kernel, Node}, Old),
    ?assertEqual(Node, node(New)),
    ?assertEqual(pong, net_adm:ping(Node)),
    %% cnode_metrics, the metrics map's server, is kernel_sup's other child, left running.
    Children = supervisor:which_children({kernel_sup, Node}),
    ?assertEqual({net_kernel, New, worker, [net_kernel]}, lists:keyfind(net_kernel, 1, Children)),
    ?assertMatch({cnode_metrics, Pid, worker, [cnode_metrics]} when is_pid(Pid),
                 lists:keyfind(cnode_metrics, 1, Children)),
    ?assertEqual(2, length(Children)).
