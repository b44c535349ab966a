%% A raw distribution peer for the adversary suite: it speaks the v6 handshake and the
%% framing itself, over gen_tcp, so a test can send any bytes an attacker could, well-formed
%% or not, and read exactly what the C node answers.
%%
%% Only the connecting role is played (the C node accepts). The peer's node name is its own
%% choice, so it can also claim names no real node would have. Pids "on" the raw peer are
%% built from their external format (pid/2), as binary_to_term accepts pids of any node.
-module(raw_dist).

-export([connect/3, connect/4, handshake_name/3, send_frame/3, send_raw/2, recv_frame/2,
         closed/2, pid/2, ref/2, close/1, flags/0, enc/1, digest/2]).

-define(DFLAGS,
        (16#04 bor 16#08 bor 16#10 bor 16#20 bor 16#80 bor 16#100 bor 16#200 bor 16#400
         bor 16#800 bor 16#4000 bor 16#10000 bor 16#20000 bor 16#40000 bor 16#1000000
         bor 16#2000000 bor (16#4 bsl 32) bor (16#8 bsl 32))).

%% The capability flags the raw peer advertises: OTP 25's mandatory set, monitors,
%% UNLINK_ID, V4_NC and ALIAS; no atom cache and no fragments, so every frame is plain.
flags() -> ?DFLAGS.

%% connect(Port, Name, Cookie) -> {ok, Sock} | {error, Why}: a finished handshake as node
%% Name (an atom or a binary), socket in {packet, 4} mode, passive.
connect(Port, Name, Cookie) ->
    connect(Port, Name, Cookie, ?DFLAGS).

connect(Port, Name, Cookie, Flags) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {packet, 2}, {active, false}], 5000) of
        {ok, S} ->
            case handshake(S, to_bin(Name), to_bin(Cookie), Flags) of
                ok ->
                    ok = inet:setopts(S, [{packet, 4}]),
                    {ok, S};
                Error ->
                    gen_tcp:close(S),
                    Error
            end;
        Error ->
            Error
    end.

%% Only the first message: send_name with Name, then the status the node answers
%% ({ok, Status} or {error, closed}). For names a real node would never send.
handshake_name(Port, Name, Flags) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {packet, 2}, {active, false}], 5000),
    ok = gen_tcp:send(S, send_name(to_bin(Name), Flags)),
    R = case gen_tcp:recv(S, 0, 5000) of
            {ok, <<$s, Status/binary>>} -> {ok, Status};
            {error, _} = E -> E
        end,
    gen_tcp:close(S),
    R.

handshake(S, Name, Cookie, Flags) ->
    ok = gen_tcp:send(S, send_name(Name, Flags)),
    case gen_tcp:recv(S, 0, 5000) of
        {ok, <<$s, "ok">>} -> challenge(S, Cookie);
        {ok, <<$s, Other/binary>>} -> {error, {status, Other}};
        {error, Why} -> {error, {status, Why}}
    end.

challenge(S, Cookie) ->
    case gen_tcp:recv(S, 0, 5000) of
        {ok, <<$N, _Flags:64, Challenge:32, _Creation:32, NLen:16, _Name:NLen/binary>>} ->
            Mine = rand:uniform(16#ffffffff),
            ok = gen_tcp:send(S, <<$r, Mine:32, (digest(Cookie, Challenge))/binary>>),
            Want = digest(Cookie, Mine),
            case gen_tcp:recv(S, 0, 5000) of
                {ok, <<$a, Want:16/binary>>} -> ok;
                {ok, Other} -> {error, {ack, Other}};
                {error, Why} -> {error, {ack, Why}}
            end;
        {ok, Other} ->
            {error, {challenge, Other}};
        {error, Why} ->
            {error, {challenge, Why}}
    end.

send_name(Name, Flags) ->
    <<$N, Flags:64, 7:32, (byte_size(Name)):16, Name/binary>>.

digest(Cookie, Challenge) ->
    erlang:md5([Cookie, integer_to_list(Challenge)]).

%% send_frame(Sock, Ctl, Msg): one frame, 'p' + the control term + the message (none for
%% Msg = none). Ctl and Msg are terms, or binaries sent as they are (already in external
%% format, version byte included), for malformed frames.
send_frame(S, Ctl, Msg) ->
    Payload = case Msg of
                  none -> <<>>;
                  _ -> enc(Msg)
              end,
    gen_tcp:send(S, [<<$p>>, enc(Ctl), Payload]).

%% Bytes as they are, outside any framing (the socket adds the 4-byte length).
send_raw(S, Bytes) ->
    gen_tcp:send(S, Bytes).

enc(B) when is_binary(B) -> B;
enc(T) -> term_to_binary(T).

%% recv_frame(Sock, Timeout) -> {ok, Ctl, Msg | none} | tick | {error, Why}. Ticks are
%% answered, so a long test keeps the connection alive.
recv_frame(S, Timeout) ->
    case gen_tcp:recv(S, 0, Timeout) of
        {ok, <<>>} ->
            ok = gen_tcp:send(S, <<>>),
            recv_frame(S, Timeout);
        {ok, <<$p, Rest/binary>>} ->
            {Ctl, Used} = binary_to_term(Rest, [used]),
            case Rest of
                <<_:Used/binary>> ->
                    {ok, Ctl, none};
                <<_:Used/binary, MsgBin/binary>> ->
                    {ok, Ctl, binary_to_term(MsgBin)}
            end;
        {ok, Other} ->
            {error, {unexpected, Other}};
        {error, _} = E ->
            E
    end.

%% closed(Sock, Timeout) -> true when the node closed the connection within Timeout
%% (whatever it sent before that is read and dropped), false when it is still open.
closed(S, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    closed_loop(S, Deadline).

closed_loop(S, Deadline) ->
    Left = Deadline - erlang:monotonic_time(millisecond),
    case Left =< 0 of
        true ->
            false;
        false ->
            case gen_tcp:recv(S, 0, Left) of
                {ok, _} -> closed_loop(S, Deadline);
                {error, timeout} -> false;
                {error, _} -> true
            end
    end.

close(S) ->
    gen_tcp:close(S).

%% A pid of node Node (an atom) with number Num, as NEW_PID_EXT.
pid(Node, Num) ->
    N = atom_to_binary(Node),
    binary_to_term(<<131, 88, 119, (byte_size(N)), N/binary, Num:32, 0:32, 7:32>>).

%% A reference of node Node, as NEWER_REFERENCE_EXT with three words.
ref(Node, Num) ->
    N = atom_to_binary(Node),
    binary_to_term(<<131, 90, 3:16, 119, (byte_size(N)), N/binary, 7:32, Num:32, 0:32, 0:32>>).

to_bin(A) when is_atom(A) -> atom_to_binary(A);
to_bin(L) when is_list(L) -> list_to_binary(L);
to_bin(B) when is_binary(B) -> B.
