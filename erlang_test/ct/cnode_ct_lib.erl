%% Starting and stopping C nodes for the Common Test suite.
%%
%% scripts/ct.sh provides the run through the environment: CNODE_BIN (the binary),
%% CNODE_TEST_RUN_ID (in every node name), CNODE_TEST_RUN_DIR (logs, data dirs),
%% CNODE_TEST_PIDFILE (every OS pid started here is appended, so the script can kill what a
%% crashed run left) and ERL_EPMD_PORT (the run's private epmd). The cookie is this node's.
%%
%% A C node runs under `sh -c 'exec ... 2>>log'`, so the port's OS pid is the node's own and
%% its stderr goes to <run dir>/<name>.log. The port belongs to an owner process that
%% outlives the test case process, so end_per_testcase can still stop the node.
-module(cnode_ct_lib).

-export([start/1, stop/1, log_tail/1]).

-define(READY_TIMEOUT, 20000).
-define(STOP_TIMEOUT, 10000).

%% start(Args) -> #{node, port, os_pid, log, owner}. Extra flags in Args (strings).
%% Fails the test case when no READY line comes.
start(Args) ->
    Name = lists:flatten(io_lib:format("ct_c~b_~s", [erlang:unique_integer([positive]),
                                                      os:getenv("CNODE_TEST_RUN_ID")])),
    Node = list_to_atom(Name ++ "@127.0.0.1"),
    RunDir = os:getenv("CNODE_TEST_RUN_DIR"),
    Log = filename:join(RunDir, Name ++ ".log"),
    DataDir = filename:join([RunDir, "data", Name]),
    ok = filelib:ensure_dir(filename:join(DataDir, "x")),
    AllArgs = ["--name", atom_to_list(Node), "--cookie", atom_to_list(erlang:get_cookie()),
               "--data-dir", DataDir | Args],
    Parent = self(),
    Ref = make_ref(),
    Owner = spawn(fun() -> own_port(Parent, Ref, Log, AllArgs) end),
    CNode = #{node => Node, log => Log, owner => Owner},
    receive
        {Ref, ready, OsPid, ReadyNode, Port} when ReadyNode =:= Node ->
            CNode#{os_pid => OsPid, port => Port};
        {Ref, ready, _, ReadyNode, _} ->
            ct:fail("READY named ~p, not ~p", [ReadyNode, Node]);
        {Ref, exited, Status} ->
            ct:fail("~p exited with status ~p before READY~n~s", [Node, Status, log_tail(CNode)])
    after ?READY_TIMEOUT ->
        Status = stop(CNode),
        ct:fail("~p printed no READY line within ~b ms (stopped, status ~p)~n~s",
                [Node, ?READY_TIMEOUT, Status, log_tail(CNode)])
    end.

%% stop(CNode) -> exit status: SIGTERM (SIGKILL after a bound), then waits for it to go.
stop(#{owner := Owner}) ->
    Tag = make_ref(),
    MRef = erlang:monitor(process, Owner),
    Owner ! {stop, self(), Tag},
    receive
        {Tag, Status} ->
            erlang:demonitor(MRef, [flush]),
            Status;
        {'DOWN', MRef, process, _, Reason} ->
            {owner_down, Reason}
    end.

log_tail(#{log := Log}) ->
    case file:read_file(Log) of
        {ok, Data} ->
            Lines = string:split(Data, "\n", all),
            Tail = lists:nthtail(max(0, length(Lines) - 30), Lines),
            ["--- ", Log, " ---\n", lists:join("\n", Tail)];
        {error, Reason} ->
            io_lib:format("(no log ~s: ~p)", [Log, Reason])
    end.

own_port(Parent, Ref, Log, Args) ->
    Script = "log=\"$1\"; shift; exec \"$@\" 2>>\"$log\"",
    Port = open_port({spawn_executable, "/bin/sh"},
                     [binary, exit_status, use_stdio, {line, 4096},
                      {args, ["-c", Script, "sh", Log, os:getenv("CNODE_BIN") | Args]}]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    ok = file:write_file(os:getenv("CNODE_TEST_PIDFILE"), [integer_to_list(OsPid), "\n"], [append]),
    port_loop(Port, OsPid, Parent, Ref).

port_loop(Port, OsPid, Parent, Ref) ->
    receive
        {Port, {data, {eol, <<"READY ", Rest/binary>>}}} ->
            case string:lexemes(Rest, " ") of
                [Node, TcpPort] ->
                    Parent ! {Ref, ready, OsPid, binary_to_atom(Node), binary_to_integer(TcpPort)};
                _ ->
                    ok
            end,
            port_loop(Port, OsPid, Parent, Ref);
        {Port, {data, _Other}} ->
            port_loop(Port, OsPid, Parent, Ref);
        {Port, {exit_status, Status}} ->
            Parent ! {Ref, exited, Status},
            receive {stop, From, Tag} -> From ! {Tag, Status} end;
        {stop, From, Tag} ->
            os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
            receive
                {Port, {exit_status, Status}} -> From ! {Tag, Status}
            after ?STOP_TIMEOUT ->
                os:cmd("kill -KILL " ++ integer_to_list(OsPid)),
                receive {Port, {exit_status, Status}} -> From ! {Tag, Status} end
            end
    end.
