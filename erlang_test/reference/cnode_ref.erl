%% A BEAM stand-in for build/cnode: the same command line, the same READY line, and an
%% Erlang `counter` gen_server with the Counter contract of DESIGN.md. It exists to check
%% the interop harness and the tests' expectations against real OTP behaviour:
%%
%%   CNODE_BIN=erlang_test/reference/cnode_ref scripts/exunit.sh
%%   CNODE_BIN=erlang_test/reference/cnode_ref scripts/ct.sh
%%
%% It is not the product and not part of `make test`. Flags it cannot mean the same way
%% (--data-dir, --max-requests, --window-ms, --log-level, --durability, --snapshot-bytes)
%% are accepted and ignored (it keeps no state: the durability tests fail against it);
%% --handshake-timeout-ms becomes net_setuptime; --counter-initial is the counter's start.
-module(cnode_ref).
-behaviour(gen_server).

-export([main/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

main() ->
    %% Logs go to stderr, as the C node's do; stdout carries only the READY line.
    ok = logger:remove_handler(default),
    ok = logger:add_handler(default, logger_std_h, #{config => #{type => standard_error}}),
    try parse(init:get_plain_arguments(), #{connect => []}) of
        Opts -> start(Opts)
    catch
        throw:{usage, Msg} -> fail(Msg)
    end.

parse([], Opts) ->
    maps:is_key(name, Opts) orelse throw({usage, "--name is required"}),
    Opts;
parse(["--name", V | T], O) -> parse(T, O#{name => list_to_atom(V)});
parse(["--cookie", V | T], O) -> parse(T, O#{cookie => list_to_atom(V)});
parse(["--port", V | T], O) -> parse(T, O#{port => int(V)});
parse(["--connect", V | T], O = #{connect := C}) -> parse(T, O#{connect => C ++ [list_to_atom(V)]});
parse(["--net-ticktime", V | T], O) -> parse(T, O#{ticktime => int(V)});
parse(["--handshake-timeout-ms", V | T], O) -> parse(T, O#{setup_ms => int(V)});
parse(["--counter-initial", V | T], O) -> parse(T, O#{initial => int(V)});
%% The script gave erl -proto_dist already: the distribution's protocol is chosen at boot.
parse(["--proto-dist", V | T], O) when V =:= "inet_tcp"; V =:= "inet6_tcp" -> parse(T, O);
parse([F, _ | T], O) when F =:= "--data-dir"; F =:= "--max-requests";
                          F =:= "--window-ms"; F =:= "--log-level";
                          F =:= "--durability"; F =:= "--snapshot-bytes" -> parse(T, O);
parse([F | _], _) -> throw({usage, "bad flag " ++ F}).

int(V) ->
    try list_to_integer(V) catch error:badarg -> throw({usage, "not an integer: " ++ V}) end.

start(Opts = #{name := Name}) ->
    case Opts of
        #{port := P} ->
            application:set_env(kernel, inet_dist_listen_min, P),
            application:set_env(kernel, inet_dist_listen_max, P);
        _ -> ok
    end,
    case Opts of
        #{setup_ms := Ms} -> application:set_env(kernel, net_setuptime, Ms / 1000);
        _ -> ok
    end,
    DistOpts = #{name_domain => longnames, net_ticktime => maps:get(ticktime, Opts, 60)},
    case net_kernel:start(Name, DistOpts) of
        {ok, _} -> ok;
        {error, Reason} -> fail(io_lib:format("cannot start distribution as ~s: ~p", [Name, Reason]))
    end,
    maps:is_key(cookie, Opts) andalso erlang:set_cookie(maps:get(cookie, Opts)),
    {ok, _} = gen_server:start({local, counter}, ?MODULE, maps:get(initial, Opts, 0), []),
    [spawn(fun() -> keep_connected(Node) end) || Node <- maps:get(connect, Opts)],
    [Alive, _Host] = string:split(atom_to_list(Name), "@"),
    {port, Port, _} = erl_epmd:port_please(Alive, {127, 0, 0, 1}),
    io:format("READY ~s ~b~n", [Name, Port]).

%% --connect: join the node, and again whenever the connection goes.
keep_connected(Node) ->
    case net_kernel:connect_node(Node) of
        true ->
            erlang:monitor_node(Node, true),
            receive {nodedown, Node} -> ok end;
        _ ->
            timer:sleep(500)
    end,
    keep_connected(Node).

fail(Msg) ->
    io:format(standard_error, "cnode_ref: ~s~n", [Msg]),
    erlang:halt(1).

%% The Counter, as the Elixir module would answer.
init(Value) -> {ok, Value}.

handle_call(increment, _From, N) -> {reply, N + 1, N + 1};
handle_call(decrement, _From, N) -> {reply, N - 1, N - 1};
handle_call(get_value, _From, N) -> {reply, N, N};
handle_call(Request, _From, N) ->
    logger:warning("counter: unknown call ~p", [Request]),
    {reply, {error, {unknown_call, Request}}, N}.

handle_cast(increment, N) -> {noreply, N + 1};
handle_cast(Msg, N) ->
    logger:warning("counter: unknown cast ~p", [Msg]),
    {noreply, N}.

handle_info(Msg, N) ->
    logger:warning("counter: unexpected message ~p", [Msg]),
    {noreply, N}.
