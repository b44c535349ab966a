defmodule ConnectionTest do
  @moduledoc """
  The distribution layer as other nodes meet it: cookies, silent and malformed peers,
  --connect and ticks. Outcomes only; every wait is a bound that fails instead of hanging.
  """
  use CNodeTest.Case, async: false

  # Handshake capability flags (erts dist.h): PUBLISHED and the OTP 25 mandatory set.
  @send_name_flags 0x1 + 0x4 + 0x10 + 0x80 + 0x100 + 0x200 + 0x400 + 0x800 + 0x10000 +
                     0x20000 + 0x40000 + 0x1000000

  test "a peer with a wrong cookie cannot connect, and the log names it",
       %{cnode: cnode, node: node, counter: counter} do
    {_, peer_node} = peer = start_peer!(cookie: "wrong#{System.unique_integer([:positive])}")

    assert peer_call(peer, Node, :ping, [node]) == :pang
    refute node in peer_call(peer, Node, :list, [])

    line = await_log_line(cnode, ~r/#{Regex.escape(Atom.to_string(peer_node))}/)
    assert line =~ ~r/refus|reject/i

    # Nodes with the right cookie are still served.
    assert GenServer.call(counter, :increment) == 1
  end

  @tag cnode_args: ["--handshake-timeout-ms", "60000"]
  test "200 silent TCP connections do not block a real call", %{cnode: cnode, counter: counter} do
    socks = open_raw(cnode, 200)

    assert GenServer.call(counter, :increment) == 1

    # They were open during the call: they still are (recv with no wait finds no close).
    assert Enum.count(socks, &(:gen_tcp.recv(&1, 0, 0) == {:error, :timeout})) == 200
    Enum.each(socks, &:gen_tcp.close/1)
  end

  @tag cnode_args: ["--handshake-timeout-ms", "500"]
  test "silent connections are closed by the node after the handshake timeout",
       %{cnode: cnode, counter: counter} do
    socks = open_raw(cnode, 200)

    assert Enum.frequencies(await_closed(socks)) == %{closed: 200}
    assert GenServer.call(counter, :increment) == 1
  end

  @tag cnode_args: ["--handshake-timeout-ms", "1000"]
  test "garbage instead of a handshake gets a client disconnected, and the node serves on",
       %{cnode: cnode, counter: counter} do
    name = "garbage_#{CNodeTest.run_id()}@127.0.0.1"
    flags = @send_name_flags

    inputs = %{
      "a frame with an unknown tag" => <<5::16, "Xjunk">>,
      "an empty frame" => <<0::16>>,
      "a truncated send_name" => <<3::16, ?N, 0, 0>>,
      "a send_name with a name length past its frame" =>
        <<17::16, ?N, flags::64, 1::32, 60_000::16, "ab">>,
      "an HTTP request" => "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
      "random bytes" => :crypto.strong_rand_bytes(4096),
      "a valid send_name, then garbage for the challenge reply" =>
        [frame([?N, <<flags::64, 1::32, byte_size(name)::16>>, name]), <<3::16, ?r, 1, 2>>]
    }

    for {what, bytes} <- inputs do
      [sock] = open_raw(cnode, 1)
      # A send that fails because the node already hung up is fine too.
      _ = :gen_tcp.send(sock, bytes)
      assert await_closed([sock], 10_000) in [[:closed], [:econnreset]],
             "still connected after #{what}"
      :gen_tcp.close(sock)
    end

    assert GenServer.call(counter, :increment) == 1
  end

  @tag cnode: false
  test "--connect joins a running Elixir node by itself, which then calls it" do
    {_, peer_node} = peer = start_peer!()
    cnode = start_cnode!(args: ["--connect", Atom.to_string(peer_node)])

    wait_until(
      fn -> cnode.node in peer_call(peer, Node, :list, []) end,
      20_000,
      "#{cnode.node} in Node.list() of #{peer_node}\n" <> log_tail(cnode)
    )

    assert peer_call(peer, GenServer, :call, [{:counter, cnode.node}, :increment]) == 1
  end

  @tag cnode_args: ["--net-ticktime", "2"]
  test "an idle connection survives several tick intervals", %{node: node, counter: counter} do
    # The peer talks to the C node only: this node keeps the default net_ticktime.
    peer = start_peer!(args: ["-kernel", "net_ticktime", "2"])
    assert peer_call(peer, GenServer, :call, [counter, :increment]) == 1

    # Three ticktimes of silence from the caller's side.
    assert peer_call(peer, CNodeTest.Remote, :nodedowns_during, [node, 6_000]) == []
    assert node in peer_call(peer, Node, :list, [])
    assert peer_call(peer, GenServer, :call, [counter, :get_value]) == 1
  end

  # IPv6 (issue 12): this node speaks IPv4 distribution, so an IPv6 peer (driven over stdio)
  # is the caller; the C node is named cnode...@::1 and registers with the epmd on ::1.
  @tag cnode: false
  test "over IPv6, an Elixir node with -proto_dist inet6_tcp calls, casts to and monitors a C node on ::1" do
    cnode = start_cnode!(host: "::1", args: ["--proto-dist", "inet6_tcp"])
    peer = start_peer!(host: "::1", args: ["-proto_dist", "inet6_tcp"])
    counter = {:counter, cnode.node}

    assert peer_call(peer, GenServer, :call, [counter, :increment]) == 1
    assert peer_call(peer, GenServer, :cast, [counter, :increment]) == :ok
    assert peer_call(peer, GenServer, :call, [counter, :get_value]) == 2
    rl = {:rate_limiter, cnode.node}
    assert peer_call(peer, GenServer, :call, [rl, {:check_rate, "v6"}]) == {:ok, 99}

    assert {:noproc, _} = catch_exit(peer_call(peer, GenServer, :call, [{:nope, cnode.node}, :x, 5_000]))
    assert peer_call(peer, CNodeTest.Remote, :monitor_terminate, [counter]) == {:down, counter, :shutdown}
    assert await_log_line(cnode, ~r/connected to .*\(\[::1\]:\d+\)/) =~ "[::1]:"
  end

  @tag cnode: false
  test "over IPv6, --connect joins an Elixir node with -proto_dist inet6_tcp, which then calls it" do
    {_, peer_node} = peer = start_peer!(host: "::1", args: ["-proto_dist", "inet6_tcp"])
    cnode = start_cnode!(host: "::1", args: ["--proto-dist", "inet6_tcp", "--connect", Atom.to_string(peer_node)])

    wait_until(
      fn -> cnode.node in peer_call(peer, Node, :list, []) end,
      20_000,
      "#{cnode.node} in Node.list() of #{peer_node}\n" <> log_tail(cnode)
    )

    assert peer_call(peer, GenServer, :call, [{:counter, cnode.node}, :increment]) == 1
  end

  # The scheduling policy of every thread of the node (field 41 of /proc/PID/task/TID/stat:
  # 0 SCHED_OTHER, 3 SCHED_BATCH), after a call that ran on them.
  defp thread_policies(cnode) do
    for task <- Path.wildcard("/proc/#{cnode.os_pid}/task/*/stat") do
      [_, after_comm] = String.split(File.read!(task), ") ", parts: 2)
      after_comm |> String.split(" ") |> Enum.at(41 - 3) |> String.to_integer()
    end
  end

  @tag cnode: false
  test "the node's threads run under SCHED_BATCH; --sched normal keeps SCHED_OTHER; another word exits 2" do
    batch = start_cnode!()
    assert GenServer.call({:counter, batch.node}, :increment) == 1
    assert [_ | _] = policies = thread_policies(batch)
    assert Enum.uniq(policies) == [3]

    normal = start_cnode!(args: ["--sched", "normal"])
    assert GenServer.call({:counter, normal.node}, :increment) == 1
    assert Enum.uniq(thread_policies(normal)) == [0]

    assert {:exited, 2, bad} = launch_cnode(args: ["--sched", "fifo"])
    assert File.read!(bad.log) =~ "--sched takes batch or normal, not 'fifo'"
  end

  @tag cnode: false
  test "--busy-poll-when takes spare-core or always; another word exits 2" do
    for mode <- ["spare-core", "always"] do
      cnode = start_cnode!(args: ["--busy-poll-when", mode])
      assert GenServer.call({:counter, cnode.node}, :increment) == 1
    end

    assert {:exited, 2, bad} = launch_cnode(args: ["--busy-poll-when", "never"])
    assert File.read!(bad.log) =~ "--busy-poll-when takes spare-core or always, not 'never'"
  end

  defp frame(iodata), do: [<<IO.iodata_length(iodata)::16>>, iodata]
end
