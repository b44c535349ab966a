%% Starting and stopping C nodes for the Common Test suite.
%%
%% scripts/ct.sh provides the run through the environment: CNODE_BIN (the binary),
%% CNODE_SAN_BIN (the sanitized build, for the cases that must show no sanitizer report),
%% CNODE_TEST_RUN_ID (in every node name), CNODE_TEST_RUN_DIR (logs, data dirs),
%% CNODE_TEST_PIDFILE (every OS pid started here is appended, so the script can kill what a
%% crashed run left) and ERL_EPMD_PORT (the run's private epmd). The cookie is this node's.
%%
%% A C node runs under `sh -c 'exec ... 2>>log'`, so the port's OS pid is the node's own and
%% its stderr goes to <run dir>/<name>.log. The port belongs to an owner process that
%% outlives the test case process, so end_per_testcase can still stop the node.
-module(cnode_ct_lib).

-export([start/1, start/2, launch/2, restart/2, stop/1, await_exit/2, data_dir_for/1,
         log_tail/1, san_bin/0, sanitizer_reports/1, caught/1, start_beam/1]).

-define(READY_TIMEOUT, 20000).
-define(STOP_TIMEOUT, 10000).

%% start(Args) -> #{node, name, port, os_pid, log, owner, data_dir}. Extra flags in Args
%% (strings). Fails the test case when no READY line comes.
start(Args) ->
    start(Args, #{}).

%% start(Args, Opts): as start/1; Opts as for launch/2.
start(Args, Opts) ->
    case launch(Args, Opts) of
        {ready, CNode} ->
            CNode;
        {exited, Status, CNode} ->
            ct:fail("~p exited with status ~p before READY~n~s",
                    [maps:get(node, CNode), Status, log_tail(CNode)])
    end.

%% launch(Args, Opts) -> {ready, CNode} | {exited, Status, CNode}: starts a C node and waits
%% (bounded) for its READY line or its exit, whichever comes first. Opts: name (the part
%% before @; the same name again is a new process of the same node, on the same data dir
%% and log), data_dir (default <run dir>/data/<name>, created; a given one is passed on
%% as it is), bin (default CNODE_BIN; san_bin() for the sanitized node), env (extra
%% environment variables, [{Name, Value}], e.g. another epmd port) and host (the part after
%% @, default "127.0.0.1"; "::1" for a node started with --proto-dist inet6_tcp).
launch(Args, Opts) ->
    Name = case Opts of
               #{name := N} -> N;
               _ -> lists:flatten(io_lib:format("ct_c~b_~s", [erlang:unique_integer([positive]),
                                                              os:getenv("CNODE_TEST_RUN_ID")]))
           end,
    Node = list_to_atom(Name ++ "@" ++ maps:get(host, Opts, "127.0.0.1")),
    RunDir = os:getenv("CNODE_TEST_RUN_DIR"),
    Log = filename:join(RunDir, Name ++ ".log"),
    DataDir = case Opts of
                  #{data_dir := D} ->
                      D;
                  _ ->
                      D = data_dir_for(Name),
                      ok = filelib:ensure_dir(filename:join(D, "x")),
                      D
              end,
    AllArgs = ["--name", atom_to_list(Node), "--cookie", atom_to_list(erlang:get_cookie()),
               "--data-dir", DataDir | Args],
    Bin = maps:get(bin, Opts, os:getenv("CNODE_BIN")),
    Parent = self(),
    Ref = make_ref(),
    Env = maps:get(env, Opts, []),
    Owner = spawn(fun() -> own_port(Parent, Ref, Log, Bin, AllArgs, Env) end),
    CNode = #{node => Node, name => Name, log => Log, owner => Owner, data_dir => DataDir,
              bin => Bin},
    receive
        {Ref, ready, OsPid, ReadyNode, Port} when ReadyNode =:= Node ->
            {ready, CNode#{os_pid => OsPid, port => Port}};
        {Ref, ready, _, ReadyNode, _} ->
            ct:fail("READY named ~p, not ~p", [ReadyNode, Node]);
        {Ref, exited, Status} ->
            {exited, Status, CNode}
    after ?READY_TIMEOUT ->
        Status = stop(CNode),
        ct:fail("~p printed no READY line within ~b ms (stopped, status ~p)~n~s",
                [Node, ?READY_TIMEOUT, Status, log_tail(CNode)])
    end.

%% What `catch F()` gives, without the `catch` expression that OTP 29 deprecates (and the
%% suites compile with warnings as errors on every OTP): F's value, {'EXIT', Reason} for
%% an exit, {'EXIT', {Reason, Stack}} for an error, the term for a throw.
caught(F) ->
    try
        F()
    catch
        exit:Reason -> {'EXIT', Reason};
        error:Reason:Stack -> {'EXIT', {Reason, Stack}};
        throw:Term -> Term
    end.

%% start_beam(Erl) -> #{node, ...} as start/1 gives, for a BEAM node run by the erl
%% program Erl (another OTP's), with this node's cookie and epmd: stop/1 and log_tail/1
%% work on it as on a C node. Returns once it is up (it prints READY as a C node does).
start_beam(Erl) ->
    Name = lists:flatten(io_lib:format("ct_beam~b_~s", [erlang:unique_integer([positive]),
                                                         os:getenv("CNODE_TEST_RUN_ID")])),
    Node = list_to_atom(Name ++ "@127.0.0.1"),
    Log = filename:join(os:getenv("CNODE_TEST_RUN_DIR"), Name ++ ".log"),
    Ready = "io:format(\"READY ~s 0~n\", [node()]).",
    Args = ["-name", atom_to_list(Node), "-setcookie", atom_to_list(erlang:get_cookie()),
            "-noshell", "-eval", Ready],
    Parent = self(),
    Ref = make_ref(),
    Owner = spawn(fun() -> own_port(Parent, Ref, Log, Erl, Args) end),
    Beam = #{node => Node, name => Name, log => Log, owner => Owner},
    receive
        {Ref, ready, OsPid, Node, Port} -> Beam#{os_pid => OsPid, port => Port};
        {Ref, exited, Status} -> ct:fail("~s exited with status ~p~n~s", [Erl, Status, log_tail(Beam)])
    after ?READY_TIMEOUT ->
        stop(Beam),
        ct:fail("~s printed no READY line within ~b ms~n~s", [Erl, ?READY_TIMEOUT, log_tail(Beam)])
    end.

%% The data dir a C node named Name gets by default.
data_dir_for(Name) ->
    filename:join([os:getenv("CNODE_TEST_RUN_DIR"), "data", Name]).

%% restart(Old, Args) -> CNode: a new process of the node Old (same name, data dir, log and
%% binary), once Old has exited and this node has seen its connection go.
restart(Old = #{node := Node}, Args) ->
    wait_gone(Node, 200),
    start(Args, maps:with([name, data_dir, bin], Old)).

%% The sanitized C node (ASan and UBSan), which make ct builds first.
san_bin() ->
    case os:getenv("CNODE_SAN_BIN") of
        false -> filename:absname("build/san/cnode");
        Bin -> Bin
    end.

%% The sanitizer reports in a C node's log: AddressSanitizer, LeakSanitizer or UBSan lines.
sanitizer_reports(#{log := Log}) ->
    case file:read_file(Log) of
        {ok, Data} ->
            [L || L <- string:split(Data, "\n", all),
                  re:run(L, "ERROR: \\w+Sanitizer|runtime error:") =/= nomatch];
        {error, _} ->
            []
    end.

wait_gone(Node, 0) ->
    ct:fail("~p still in nodes(connected)", [Node]);
wait_gone(Node, N) ->
    case lists:member(Node, nodes(connected)) of
        true -> timer:sleep(50), wait_gone(Node, N - 1);
        false -> ok
    end.

%% await_exit(CNode, Timeout) -> exit status, once the node exits by itself (it is not
%% signalled), or the atom timeout.
await_exit(#{owner := Owner}, Timeout) ->
    ask_owner(Owner, await_exit, Timeout).

%% stop(CNode) -> exit status: SIGTERM (SIGKILL after a bound), then waits for it to go.
stop(#{owner := Owner}) ->
    ask_owner(Owner, stop, infinity).

%% Sends {Request, self(), Tag} to a node's port owner and waits, up to Timeout, for its
%% {Tag, Status}: Status, {owner_down, Reason} when the owner died, or timeout.
ask_owner(Owner, Request, Timeout) ->
    Tag = make_ref(),
    MRef = erlang:monitor(process, Owner),
    Owner ! {Request, self(), Tag},
    receive
        {Tag, Status} ->
            erlang:demonitor(MRef, [flush]),
            Status;
        {'DOWN', MRef, process, _, Reason} ->
            {owner_down, Reason}
    after Timeout ->
        erlang:demonitor(MRef, [flush]),
        timeout
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

own_port(Parent, Ref, Log, Bin, Args) ->
    own_port(Parent, Ref, Log, Bin, Args, []).

own_port(Parent, Ref, Log, Bin, Args, Extra) ->
    Script = "log=\"$1\"; shift; exec \"$@\" 2>>\"$log\"",
    %% The erl script of this node exported where its OTP lives; another OTP's erl must
    %% not inherit that. Extra: the caller's own variables (launch/2's env option).
    Env = [{V, false} || V <- ["ROOTDIR", "BINDIR", "EMU", "PROGNAME"]] ++ Extra,
    Port = open_port({spawn_executable, "/bin/sh"},
                     [binary, exit_status, use_stdio, {line, 4096}, {env, Env},
                      {args, ["-c", Script, "sh", Log, Bin | Args]}]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    ok = file:write_file(os:getenv("CNODE_TEST_PIDFILE"), [integer_to_list(OsPid), "\n"], [append]),
    port_loop(Port, OsPid, Parent, Ref, []).

%% Waiters are the {From, Tag} of await_exit/2 calls, told the status at the exit.
port_loop(Port, OsPid, Parent, Ref, Waiters) ->
    receive
        {Port, {data, {eol, <<"READY ", Rest/binary>>}}} ->
            case string:lexemes(Rest, " ") of
                [Node, TcpPort] ->
                    Parent ! {Ref, ready, OsPid, binary_to_atom(Node), binary_to_integer(TcpPort)};
                _ ->
                    ok
            end,
            port_loop(Port, OsPid, Parent, Ref, Waiters);
        {Port, {data, _Other}} ->
            port_loop(Port, OsPid, Parent, Ref, Waiters);
        {Port, {exit_status, Status}} ->
            Parent ! {Ref, exited, Status},
            [From ! {Tag, Status} || {From, Tag} <- Waiters],
            exited(Status);
        {await_exit, From, Tag} ->
            port_loop(Port, OsPid, Parent, Ref, [{From, Tag} | Waiters]);
        {stop, From, Tag} ->
            os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
            Status = receive
                         {Port, {exit_status, S}} -> S
                     after ?STOP_TIMEOUT ->
                         os:cmd("kill -KILL " ++ integer_to_list(OsPid)),
                         receive {Port, {exit_status, S}} -> S end
                     end,
            [W ! {WTag, Status} || {W, WTag} <- [{From, Tag} | Waiters]],
            exited(Status)
    end.

%% After the exit: every later stop/1 or await_exit/2 gets the same status.
exited(Status) ->
    receive
        {Request, From, Tag} when Request =:= stop; Request =:= await_exit ->
            From ! {Tag, Status},
            exited(Status)
    end.
