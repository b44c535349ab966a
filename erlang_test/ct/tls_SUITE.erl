%% Distribution over TLS (issue 12): BEAM peers started with `-proto_dist inet_tls
%% -ssl_dist_optfile F` and mutual verification (verify_peer, fail_if_no_peer_cert) call,
%% cast to and monitor the C node started with --proto-dist inet_tls, in both directions
%% (group accept: the peer dials; group connect: the C node dials with --connect); and every
%% refusal: a plaintext peer, a certificate of another CA, an expired one, none at all, a
%% TLS peer with the wrong cookie, a server certificate that does not name the host. Each
%% refusal must be logged with the peer's address, and a witness peer must still work.
%% The groups ipv6_accept and ipv6_connect run the same cases over IPv6: the C node
%% cnode@::1 with --proto-dist inet6_tls, the peers -proto_dist inet6_tls @::1 (skipped,
%% with the reason, where ::1 or the run's epmd on it is unusable).
%%
%% The certificates are made at the start of the run with the openssl command, in the
%% suite's priv dir: a CA, a server and a client certificate, a rogue CA and a certificate
%% it signed, an expired certificate, and one that names another host. OTP's client checks
%% the host of the node it dials against the server's certificate as a string, so ours name
%% 127.0.0.1 and ::1 both as IP addresses and as DNS names.
%%
%% This node speaks plain TCP, so the TLS peers are driven over their standard input and
%% output (peer's connection standard_io), not over distribution; each peer's OS pid goes to
%% the run's pid file, so a crashed run leaves nothing behind.
-module(tls_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_group/2,
         end_per_group/2, init_per_testcase/2, end_per_testcase/2]).
-export([calls/1, casts/1, noproc_for_unknown_name/1, monitor_gets_down/1, tls13_calls/1,
         plaintext_peer_refused/1, rogue_ca_peer_refused/1, expired_peer_refused/1,
         certless_peer_refused/1, wrong_cookie_peer_refused/1, certless_peer_allowed_when_told/1,
         dialed_peer_must_name_its_host/1, dialed_rogue_peer_refused/1,
         bad_configuration_exits_at_start/1, one_optfile_for_both/1]).
%% Run on the peers.
-export([remote_call/3, remote_monitor_down/1, remote_wait_connected/2]).

-define(WAIT, 15000).
-define(LOOPBACK6, {0, 0, 0, 0, 0, 0, 0, 1}).

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [{group, accept}, {group, connect}, {group, ipv6_accept}, {group, ipv6_connect},
     {group, refusals}, bad_configuration_exits_at_start, one_optfile_for_both].

groups() ->
    Cases = [calls, casts, noproc_for_unknown_name, monitor_gets_down],
    [{accept, [], Cases ++ [tls13_calls]},
     {connect, [], Cases},
     {ipv6_accept, [], Cases ++ [rogue_ca_peer_refused]},
     {ipv6_connect, [], Cases},
     {refusals, [], [plaintext_peer_refused, rogue_ca_peer_refused, expired_peer_refused,
                     certless_peer_refused, wrong_cookie_peer_refused,
                     certless_peer_allowed_when_told, dialed_peer_must_name_its_host,
                     dialed_rogue_peer_refused]}].

init_per_suite(Config) ->
    case os:find_executable("openssl") of
        false ->
            {skip, "no openssl command"};
        _ ->
            Dir = ?config(priv_dir, Config),
            make_certs(Dir),
            [{certs, Dir} | Config]
    end.

end_per_suite(_Config) ->
    ok.

init_per_group(ipv6_accept, Config) ->
    ipv6_group(accept, Config);
init_per_group(ipv6_connect, Config) ->
    ipv6_group(connect, Config);
init_per_group(Group, Config) ->
    [{direction, Group}, {family, inet} | Config].

ipv6_group(Direction, Config) ->
    case ipv6_epmd() of
        ok -> [{direction, Direction}, {family, inet6} | Config];
        {error, Why} -> {skip, lists:flatten(io_lib:format("::1 is unusable here: ~p", [Why]))}
    end.

%% The epmd of the run answers on [::1]: IPv6 loopback works and epmd listens there.
ipv6_epmd() ->
    Port = list_to_integer(os:getenv("ERL_EPMD_PORT", "4369")),
    case gen_tcp:connect(?LOOPBACK6, Port, [inet6], 5000) of
        {ok, S} -> gen_tcp:close(S);
        {error, Why} -> {error, {epmd_on_ipv6_loopback, Why}}
    end.

end_per_group(_Group, _Config) ->
    ok.

%% What a case starts is kept by a holder process, so end_per_testcase stops it all, peers
%% first, whatever the case did.
init_per_testcase(Case, Config) ->
    Holder = spawn(fun() -> hold([]) end),
    Config1 = [{holder, Holder} | Config],
    case ?config(direction, Config) of
        accept -> start_pair(Config1, accept, Case);
        connect -> start_pair(Config1, connect, Case);
        _ -> Config1
    end.

end_per_testcase(_Case, Config) ->
    Holder = ?config(holder, Config),
    Holder ! {take, self()},
    Items = receive {held, I} -> I end,
    [stop_peer(P) || {peer, P} <- Items],
    Statuses = [{maps:get(node, C), cnode_ct_lib:stop(C)} || {cnode, C} <- Items],
    case [S || S = {_, Status} <- Statuses, Status =/= 0] of
        [] -> ok;
        Bad -> {fail, {exit_status_on_sigterm, Bad}}
    end.

hold(Items) ->
    receive
        {add, Item} -> hold([Item | Items]);
        {take, From} -> From ! {held, Items}
    end.

held(Config, Item) ->
    ?config(holder, Config) ! {add, Item},
    Item.

%% ---- Certificates ----

make_certs(Dir) ->
    Ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes",
    ok = file:write_file(filename:join(Dir, "ext.cnf"),
                         "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1,IP:::1,DNS:::1\n"),
    ok = file:write_file(filename:join(Dir, "other.cnf"),
                         "subjectAltName=IP:10.9.9.9,DNS:elsewhere.example\n"),
    [sh(Dir, io_lib:format("openssl req -x509 ~s -keyout ~s.key -out ~s.pem -subj /CN=~s -days 2",
                           [Ec, Ca, Ca, Ca])) || Ca <- ["ca", "rogue_ca"]],
    Leaf = fun(Name, Ca, Days, Ext) ->
                   sh(Dir, io_lib:format("openssl req ~s -keyout ~s.key -out ~s.csr -subj /CN=~s",
                                         [Ec, Name, Name, Name])),
                   sh(Dir, io_lib:format("openssl x509 -req -in ~s.csr -CA ~s.pem -CAkey ~s.key"
                                         " -CAcreateserial -out ~s.pem -days ~b -extfile ~s",
                                         [Name, Ca, Ca, Name, Days, Ext]))
           end,
    Leaf("server", "ca", 2, "ext.cnf"),
    Leaf("client", "ca", 2, "ext.cnf"),
    Leaf("rogue", "rogue_ca", 2, "ext.cnf"),
    %% -days -1: its validity ended before it began, so it is expired now.
    Leaf("expired", "ca", -1, "ext.cnf"),
    Leaf("otherhost", "ca", 2, "other.cnf"),
    ok.

sh(Dir, Cmd) ->
    Out = os:cmd(lists:flatten(["cd '", Dir, "' && ", Cmd, " 2>&1; echo \"rc=$?\""])),
    case string:find(Out, "rc=0") of
        nomatch -> ct:fail("~s failed:~n~s", [Cmd, Out]);
        _ -> ok
    end.

cert(Config, Name) ->
    filename:join(?config(certs, Config), Name).

%% ---- The C node and the peers ----

%% The C node's TLS flags: the server certificate, the CA, mutual verification.
cnode_tls_args(Config) ->
    ["--proto-dist", proto_dist(Config), "--tls-certfile", cert(Config, "server.pem"),
     "--tls-keyfile", cert(Config, "server.key"), "--tls-cacertfile", cert(Config, "ca.pem")].

%% inet_tls, or inet6_tls in the IPv6 groups; the host of every node's name to match.
proto_dist(Config) ->
    case ?config(family, Config) of inet6 -> "inet6_tls"; _ -> "inet_tls" end.

host(Config) ->
    case ?config(family, Config) of inet6 -> "::1"; _ -> "127.0.0.1" end.

%% A peer's address as the C node logs it: 127.0.0.1:PORT, or [::1]:PORT.
addr_re(Config) ->
    case ?config(family, Config) of inet6 -> "\\[::1\\]:[0-9]+"; _ -> "127\\.0\\.0\\.1:[0-9]+" end.

%% A C node over TLS (Extra: more flags), logging at debug so the TLS version shows.
start_cnode(Config, Extra) ->
    CNode = cnode_ct_lib:start(cnode_tls_args(Config) ++ ["--log-level", "debug"] ++ Extra,
                               #{host => host(Config)}),
    held(Config, {cnode, CNode}),
    CNode.

%% An -ssl_dist_optfile for a peer with certificate Cert (a name in the cert dir, or none)
%% that trusts CaName, with mutual verification as the issue asks; Versions: undefined
%% (OTP 25's TLS distribution default, TLS 1.2) or a list.
optfile(Config, Kind, Cert, CaName, Versions) ->
    Own = case Cert of
              none -> [];
              _ -> [{certfile, cert(Config, Cert ++ ".pem")}, {keyfile, cert(Config, Cert ++ ".key")}]
          end,
    Vsn = case Versions of undefined -> []; _ -> [{versions, Versions}] end,
    Common = Own ++ Vsn ++ [{cacertfile, cert(Config, CaName ++ ".pem")}, {verify, verify_peer}],
    %% The server side always has a certificate, or ssl refuses to listen.
    Server = [{certfile, cert(Config, "client.pem")}, {keyfile, cert(Config, "client.key")},
              {cacertfile, cert(Config, CaName ++ ".pem")}, {verify, verify_peer},
              {fail_if_no_peer_cert, true} | Vsn],
    File = filename:join(?config(priv_dir, Config),
                         io_lib:format("~s_~b.conf", [Kind, erlang:unique_integer([positive])])),
    ok = file:write_file(File, io_lib:format("~p.~n", [[{server, Server}, {client, Common}]])),
    lists:flatten(File).

%% A BEAM peer over TLS, driven through its standard I/O. Opts: cert (default "client"), ca
%% (default "ca"), versions, cookie, plain (true: no TLS at all).
start_peer(Config, Opts) ->
    Name = lists:flatten(io_lib:format("ct_tls~b_~s", [erlang:unique_integer([positive]),
                                                       os:getenv("CNODE_TEST_RUN_ID")])),
    Cookie = maps:get(cookie, Opts, atom_to_list(erlang:get_cookie())),
    Tls = case maps:get(plain, Opts, false) of
              true -> [];
              false -> ["-proto_dist", proto_dist(Config), "-ssl_dist_optfile",
                        optfile(Config, Name, maps:get(cert, Opts, "client"),
                                maps:get(ca, Opts, "ca"), maps:get(versions, Opts, undefined))]
          end,
    Args = ["-setcookie", Cookie, "-pa", filename:dirname(code:which(?MODULE))] ++ Tls,
    boot_peer(Config, Name, Args).

%% Starts a peer; its OS pid goes to the run's pid file, the peer to the case's holder.
boot_peer(Config, Name, Args) ->
    {ok, Peer, Node} = peer:start(#{name => Name, host => host(Config), longnames => true,
                                    connection => standard_io, args => Args}),
    held(Config, {peer, Peer}),
    OsPid = peer:call(Peer, os, getpid, []),
    ok = file:write_file(os:getenv("CNODE_TEST_PIDFILE"), [OsPid, "\n"], [append]),
    {Peer, Node}.

stop_peer(Peer) ->
    try peer:stop(Peer) catch _:_ -> ok end.

%% A C node and a good peer, connected in the group's direction.
start_pair(Config, Direction, Case) ->
    Versions = case Case of tls13_calls -> ['tlsv1.3']; _ -> undefined end,
    {Peer, PeerNode} = start_peer(Config, #{versions => Versions}),
    Extra = case Direction of accept -> []; connect -> ["--connect", atom_to_list(PeerNode)] end,
    CNode = start_cnode(Config, Extra),
    Node = maps:get(node, CNode),
    case Direction of
        connect -> ?assertEqual(ok, peer:call(Peer, ?MODULE, remote_wait_connected, [Node, 300], ?WAIT));
        accept -> ok
    end,
    [{peer, Peer}, {cnode, CNode}, {counter, {counter, Node}} | Config].

%% On a peer: what the call gives, an exit caught as {'EXIT', Reason}.
remote_call(Dest, Request, Timeout) ->
    try
        gen_server:call(Dest, Request, Timeout)
    catch
        exit:Reason -> {'EXIT', Reason}
    end.

%% On a peer: monitors Dest, has it terminated, and returns the DOWN's reason.
remote_monitor_down(Dest) ->
    Ref = erlang:monitor(process, Dest),
    ok = sys:terminate(Dest, shutdown),
    receive
        {'DOWN', Ref, process, _, Reason} -> Reason
    after 10000 ->
        no_down
    end.

%% On a peer: waits, up to N polls, for Node to have connected to it.
remote_wait_connected(_Node, 0) ->
    not_connected;
remote_wait_connected(Node, N) ->
    case lists:member(Node, nodes(connected)) of
        true -> ok;
        false -> timer:sleep(50), remote_wait_connected(Node, N - 1)
    end.

call(Config, Dest, Request) ->
    peer:call(?config(peer, Config), ?MODULE, remote_call, [Dest, Request, 5000], ?WAIT).

%% ---- Both directions ----

calls(Config) ->
    Counter = ?config(counter, Config),
    ?assertEqual(1, call(Config, Counter, increment)),
    ?assertEqual(2, call(Config, Counter, increment)),
    ?assertEqual(1, call(Config, Counter, decrement)),
    ?assertEqual(1, call(Config, Counter, get_value)),
    Limiter = {rate_limiter, maps:get(node, ?config(cnode, Config))},
    ?assertEqual({ok, 99}, call(Config, Limiter, {check_rate, <<"client-42">>})),
    ?assertEqual({ok, 98}, call(Config, Limiter, {check_rate, <<"client-42">>})),
    %% A large message crosses many TLS records each way.
    Big = binary:copy(<<"x">>, 300000),
    ?assertEqual({error, {unknown_call, {big, Big}}}, call(Config, Counter, {big, Big})),
    tls_in_use(Config).

casts(Config) ->
    Counter = ?config(counter, Config),
    Peer = ?config(peer, Config),
    ok = peer:call(Peer, gen_server, cast, [Counter, increment]),
    ok = peer:call(Peer, gen_server, cast, [Counter, increment]),
    ?assertEqual(2, call(Config, Counter, get_value)).

noproc_for_unknown_name(Config) ->
    Node = maps:get(node, ?config(cnode, Config)),
    ?assertEqual(0, call(Config, ?config(counter, Config), get_value)),
    ?assertEqual({'EXIT', {noproc, {gen_server, call, [{nope, Node}, x, 5000]}}},
                 call(Config, {nope, Node}, x)).

monitor_gets_down(Config) ->
    Counter = ?config(counter, Config),
    ?assertEqual(0, call(Config, Counter, get_value)),
    ?assertEqual(shutdown, peer:call(?config(peer, Config), ?MODULE, remote_monitor_down, [Counter], ?WAIT)).

%% OTP 25's TLS distribution speaks TLS 1.2 unless told; this peer allows only 1.3.
tls13_calls(Config) ->
    ?assertEqual(1, call(Config, ?config(counter, Config), increment)),
    await_log(?config(cnode, Config), "TLSv1\\.3 with 127\\.0\\.0\\.1:").

%% The C node's log says which TLS version each connection runs, with the peer's address
%% (IPv6 in the IPv6 groups); and the C node is named after that family's host.
tls_in_use(Config) ->
    CNode = ?config(cnode, Config),
    ?assertEqual(host(Config), lists:last(string:split(atom_to_list(maps:get(node, CNode)), "@", trailing))),
    await_log(CNode, "\\[tls\\] TLSv1\\.[23] with " ++ addr_re(Config)).

%% ---- Refusals ----

%% A witness peer that works before and after the refusal, on the same C node.
with_witness(Config, Refuse) ->
    {Witness, _} = start_peer(Config, #{}),
    CNode = start_cnode(Config, []),
    Config1 = [{peer, Witness} | Config],
    Counter = {counter, maps:get(node, CNode)},
    ?assertEqual(1, call(Config1, Counter, increment)),
    Refuse(CNode),
    ?assertEqual(2, call(Config1, Counter, increment)).

%% The refused peer cannot reach the C node: it gets pang.
ping(Peer, CNode) ->
    peer:call(Peer, net_adm, ping, [maps:get(node, CNode)], ?WAIT).

%% A peer with Opts is refused, and the C node logs Pattern (a regex after the address).
refused_peer(Config, Opts, Pattern) ->
    with_witness(Config, fun(CNode) ->
            {Bad, _} = start_peer(Config, Opts),
        ?assertEqual(pang, ping(Bad, CNode)),
        await_log(CNode, Pattern)
    end).

plaintext_peer_refused(Config) ->
    %% This very node speaks plain TCP distribution.
    with_witness(Config, fun(CNode) ->
        ?assertEqual(pang, net_adm:ping(maps:get(node, CNode))),
        await_log(CNode, "refused 127\\.0\\.0\\.1:[0-9]+: TLS: the peer sent plaintext")
    end).

%% Also in ipv6_accept, where the address logged is [::1]:PORT.
rogue_ca_peer_refused(Config) ->
    refused_peer(Config, #{cert => "rogue"},
                 "refused " ++ addr_re(Config) ++ ": TLS: the peer's certificate: unable to get local issuer"
                 " certificate, subject /CN=rogue").

expired_peer_refused(Config) ->
    refused_peer(Config, #{cert => "expired"},
                 "refused 127\\.0\\.0\\.1:[0-9]+: TLS: the peer's certificate: certificate has expired,"
                 " subject /CN=expired").

certless_peer_refused(Config) ->
    refused_peer(Config, #{cert => none},
                 "refused 127\\.0\\.0\\.1:[0-9]+: TLS: peer did not return a certificate").

wrong_cookie_peer_refused(Config) ->
    refused_peer(Config, #{cookie => "not_the_cookie"},
                 "refused ct_tls[0-9]+_[^ ]+ \\(127\\.0\\.0\\.1:[0-9]+\\): digest .* does not match our cookie").

%% --no-tls-fail-if-no-peer-cert: a peer without a certificate is let in.
certless_peer_allowed_when_told(Config) ->
    CNode = start_cnode(Config, ["--no-tls-fail-if-no-peer-cert"]),
    {Peer, _} = start_peer(Config, #{cert => none}),
    ?assertEqual(1, call([{peer, Peer} | Config], {counter, maps:get(node, CNode)}, increment)).

%% The C node dials a peer whose server certificate names another host: refused, logged,
%% and the C node's other connections go on.
dialed_peer_must_name_its_host(Config) ->
    dialed_refusal(Config, "otherhost", "ca", "the peer's certificate: hostname mismatch, subject /CN=otherhost").

dialed_rogue_peer_refused(Config) ->
    %% The peer sends its chain up to its own CA, which is not ours.
    dialed_refusal(Config, "rogue", "rogue_ca",
                   "the peer's certificate: (self-signed certificate in certificate chain|unable to get"
                   " local issuer certificate), subject /CN=rogue").

%% A peer whose own server certificate is Cert; the C node --connects to it and must refuse.
dialed_refusal(Config, Cert, Ca, Pattern) ->
    {Bad, BadNode} = start_server_peer(Config, Cert, Ca),
    CNode = start_cnode(Config, ["--connect", atom_to_list(BadNode)]),
    {Witness, _} = start_peer(Config, #{}),
    await_log(CNode, "TLS with " ++ atom_to_list(BadNode) ++
                  " \\(127\\.0\\.0\\.1:[0-9]+\\) failed: " ++ Pattern),
    ?assertEqual(1, call([{peer, Witness} | Config], {counter, maps:get(node, CNode)}, increment)),
    ?assertNot(lists:member(maps:get(node, CNode), peer:call(Bad, erlang, nodes, [connected]))).

%% A peer whose server side presents Cert (trusting CA Ca), for the C node to dial.
start_server_peer(Config, Cert, Ca) ->
    Name = lists:flatten(io_lib:format("ct_tls~b_~s", [erlang:unique_integer([positive]),
                                                       os:getenv("CNODE_TEST_RUN_ID")])),
    Opts = [{certfile, cert(Config, Cert ++ ".pem")}, {keyfile, cert(Config, Cert ++ ".key")},
            {cacertfile, cert(Config, Ca ++ ".pem")}, {verify, verify_peer},
            {fail_if_no_peer_cert, true}],
    File = filename:join(?config(priv_dir, Config), Name ++ ".conf"),
    ok = file:write_file(File, io_lib:format("~p.~n", [[{server, Opts}, {client, Opts}]])),
    Args = ["-setcookie", atom_to_list(erlang:get_cookie()), "-proto_dist", "inet_tls",
            "-ssl_dist_optfile", File],
    boot_peer(Config, Name, Args).

%% ---- erl's optfile ----

%% The C node reads the very -ssl_dist_optfile a BEAM peer runs with, and they talk.
one_optfile_for_both(Config) ->
    File = optfile(Config, "shared", "client", "ca", undefined),
    CNode = cnode_ct_lib:start(["--proto-dist", "inet_tls", "--ssl-dist-optfile", File,
                                "--log-level", "debug"]),
    held(Config, {cnode, CNode}),
    Name = lists:flatten(io_lib:format("ct_tls~b_~s", [erlang:unique_integer([positive]),
                                                       os:getenv("CNODE_TEST_RUN_ID")])),
    {Peer, _} = boot_peer(Config, Name, ["-setcookie", atom_to_list(erlang:get_cookie()),
                                         "-pa", filename:dirname(code:which(?MODULE)),
                                         "-proto_dist", "inet_tls", "-ssl_dist_optfile", File]),
    ?assertEqual(1, call([{peer, Peer} | Config], {counter, maps:get(node, CNode)}, increment)),
    %% OTP 25's TLS distribution defaults to TLS 1.2, later ones may pick 1.3.
    await_log(CNode, "\\[tls\\] TLSv1\\.[23] with 127\\.0\\.0\\.1:").

%% ---- Start-up checks ----

bad_configuration_exits_at_start(Config) ->
    Tls = fun(Cert, Key, Ca) ->
                  ["--proto-dist", "inet_tls", "--tls-certfile", cert(Config, Cert),
                   "--tls-keyfile", cert(Config, Key), "--tls-cacertfile", cert(Config, Ca)]
          end,
    Cases = [{Tls("missing.pem", "server.key", "ca.pem"), "cannot read the certificate file"},
             {Tls("server.pem", "client.key", "ca.pem"), "does not match the certificate"},
             {Tls("expired.pem", "expired.key", "ca.pem"), "has expired"},
             {Tls("server.pem", "server.key", "ext.cnf"), "cannot load the CA file"},
             {Tls("ext.cnf", "server.key", "ca.pem"), "cannot load the certificate file"},
             {["--tls-certfile", cert(Config, "server.pem")], "need --proto-dist inet_tls"},
             {["--ssl-dist-optfile", cert(Config, "ext.cnf")], "need --proto-dist inet_tls"},
             {["--proto-dist", "inet_tls", "--ssl-dist-optfile", cert(Config, "ext.cnf")],
              "expected the term's final '.'"}],
    [begin
         {exited, Status, CNode} = cnode_ct_lib:launch(Args, #{}),
         ?assertNotEqual(0, Status),
         {ok, Log} = file:read_file(maps:get(log, CNode)),
         Lines = [L || L <- string:split(Log, "\n", all), L =/= <<>>],
         ?assertMatch([_], Lines),
         ?assertNotEqual(nomatch, string:find(hd(Lines), Expect))
     end || {Args, Expect} <- Cases],
    ok.

%% ---- Logs ----

%% Waits (bounded) for a line of the C node's log to match Pattern; fails with the tail.
await_log(CNode, Pattern) ->
    await_log(CNode, Pattern, 200).

await_log(CNode, Pattern, 0) ->
    ct:fail("no line matching ~s in the C node's log~n~s", [Pattern, cnode_ct_lib:log_tail(CNode)]);
await_log(CNode = #{log := Log}, Pattern, N) ->
    {ok, Data} = file:read_file(Log),
    case re:run(Data, Pattern, [multiline]) of
        {match, _} -> ok;
        nomatch -> timer:sleep(50), await_log(CNode, Pattern, N - 1)
    end.
