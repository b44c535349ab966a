defmodule SupervisionTest do
  @moduledoc """
  Issue 3 from the outside: the C supervisor `cnode_sup`, exit signals and links with OTP's
  reasons, the `:sys` protocol, and state that survives restarts of a server and of the
  whole node (`--data-dir`). Every test has its own C node (and data dir). Waits are bounds
  that fail instead of hanging; a restart is awaited by polling for the new pid.
  """
  use CNodeTest.Case, async: false

  # A rate limiter whose windows outlast any test: a limited client stays limited.
  @limits ["--max-requests", "3", "--window-ms", "600000"]

  ## The supervisor

  test "cnode_sup is a one_for_one supervisor over counter and rate_limiter",
       %{node: node, counter: counter} do
    sup = {:cnode_sup, node}
    limiter = {:rate_limiter, node}

    assert [{:counter, c, :worker, [Counter]}, {:rate_limiter, r, :worker, [RateLimiter]}] =
             Supervisor.which_children(sup)

    assert c == server_pid(counter)
    assert r == server_pid(limiter)
    assert node(c) == node
    assert Supervisor.count_children(sup) == %{active: 2, specs: 2, supervisors: 0, workers: 2}

    ref = Process.monitor(c)
    Process.exit(c, :kill)
    assert_receive {:DOWN, ^ref, :process, ^c, :killed}, 10_000
    c2 = await_new_pid(counter, c)

    # one_for_one: only the counter was restarted.
    assert Supervisor.which_children(sup) ==
             [{:counter, c2, :worker, [Counter]}, {:rate_limiter, r, :worker, [RateLimiter]}]

    assert server_pid(limiter) == r
    assert Supervisor.count_children(sup) == %{active: 2, specs: 2, supervisors: 0, workers: 2}
  end

  test "GenServer.stop: DOWN :normal, then a new counter pid with the same value",
       %{counter: counter} do
    for n <- 1..3, do: assert(GenServer.call(counter, :increment) == n)
    pid = server_pid(counter)
    ref = Process.monitor(pid)

    assert GenServer.stop(counter) == :ok
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 10_000

    new = await_new_pid(counter, pid)
    assert GenServer.call(counter, :get_value) == 3
    assert GenServer.call(new, :increment) == 4
  end

  ## The :sys protocol

  test ":sys.get_state is the value; :sys.get_status shows it, the pid and the supervisor",
       %{node: node, counter: counter} do
    assert GenServer.call(counter, :increment) == 1
    assert :sys.get_state(counter) == 1

    {:status, sup, {:module, :gen_server}, _} = :sys.get_status({:cnode_sup, node})
    assert {:status, pid, {:module, :gen_server}, [_pdict, :running, ^sup, [], misc]} =
             :sys.get_status(counter)

    assert node(pid) == node
    assert pid != sup

    # What OTP's gen_server reports (gen_server:format_status/2).
    assert misc == [
             header: ~c"Status for generic server counter",
             data: [{~c"Status", :running}, {~c"Parent", sup}, {~c"Logged events", []}],
             data: [{~c"State", 1}]
           ]
  end

  test ":sys.suspend holds calls but answers :sys; :sys.resume then serves them",
       %{counter: counter} do
    assert :sys.suspend(counter) == :ok

    # A call by hand, so it is certainly sent before the :sys requests below (one sender).
    tag = make_ref()
    send(counter, {:"$gen_call", {self(), tag}, :increment})

    assert :sys.get_state(counter) == 0
    assert {:status, _, _, [_, :suspended | _]} = :sys.get_status(counter)
    # Had the call been served, its reply would have come before the :sys replies.
    refute_received {^tag, _}

    assert :sys.resume(counter) == :ok
    assert_receive {^tag, 1}, 10_000
    assert GenServer.call(counter, :get_value) == 1
  end

  # C cannot run the fun: the C node has the fun's own node (its rex) evaluate it.
  test ":sys.replace_state applies the caller's fun and returns the new state",
       %{counter: counter} do
    for n <- 1..3, do: assert(GenServer.call(counter, :increment) == n)

    assert :sys.replace_state(counter, fn s -> s + 10 end) == 13
    assert GenServer.call(counter, :get_value) == 13
    assert :sys.get_state(counter) == 13
  end

  ## Exit signals

  # Two increments, a stop (terminate saves 2), one more increment, a kill: the value after it.
  defp kill_after_a_save_and_an_increment(counter) do
    assert GenServer.call(counter, :increment) == 1
    assert GenServer.call(counter, :increment) == 2
    first = server_pid(counter)
    assert GenServer.stop(counter) == :ok
    pid = await_new_pid(counter, first)
    assert GenServer.call(counter, :increment) == 3

    ref = Process.monitor(pid)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}, 10_000

    new = await_new_pid(counter, pid)
    GenServer.call(new, :get_value)
  end

  # The seed's behaviour: terminate does not run for :kill, so the 3 was never saved.
  @tag cnode_args: ["--durability", "terminate"]
  test "Process.exit(pid, :kill) with --durability terminate: a new pid with the value last saved",
       %{counter: counter} do
    assert kill_after_a_save_and_an_increment(counter) == 2
  end

  # The default (crash): the acknowledged 3 was journaled before its reply left.
  test "Process.exit(pid, :kill) in crash mode: a new pid with every acknowledged increment",
       %{counter: counter} do
    assert kill_after_a_save_and_an_increment(counter) == 3
  end

  test "Process.exit(pid, :boom): DOWN :boom, terminate saves, the new pid has the latest value",
       %{counter: counter} do
    for n <- 1..3, do: assert(GenServer.call(counter, :increment) == n)
    pid = server_pid(counter)
    ref = Process.monitor(pid)

    Process.exit(pid, :boom)
    assert_receive {:DOWN, ^ref, :process, ^pid, :boom}, 10_000

    new = await_new_pid(counter, pid)
    assert GenServer.call(new, :get_value) == 3
  end

  test "Process.exit(pid, :normal) is ignored: the same pid serves on", %{counter: counter} do
    pid = server_pid(counter)
    ref = Process.monitor(pid)

    Process.exit(pid, :normal)
    # This call travels behind the exit signal.
    assert GenServer.call(pid, :increment) == 1
    assert server_pid(counter) == pid
    refute_received {:DOWN, ^ref, :process, _, _}
  end

  @tag cnode_args: @limits
  test "the rate limiter restarts with every client's window", %{node: node} do
    limiter = {:rate_limiter, node}
    assert GenServer.call(limiter, {:check_rate, "x"}) == {:ok, 2}
    assert GenServer.call(limiter, {:check_rate, "x"}) == {:ok, 1}
    assert GenServer.call(limiter, {:check_rate, "x"}) == {:ok, 0}
    assert GenServer.call(limiter, {:check_rate, "x"}) == {:error, :rate_limited}
    assert GenServer.call(limiter, {:check_rate, {:client, 2}}) == {:ok, 2}

    pid = server_pid(limiter)
    ref = Process.monitor(pid)
    Process.exit(pid, :boom)
    assert_receive {:DOWN, ^ref, :process, ^pid, :boom}, 10_000
    _ = await_new_pid(limiter, pid)

    assert GenServer.call(limiter, {:check_rate, "x"}) == {:error, :rate_limited}
    assert GenServer.call(limiter, {:check_rate, {:client, 2}}) == {:ok, 1}
    assert GenServer.call(limiter, {:check_rate, "fresh"}) == {:ok, 2}
  end

  ## Links

  test "a process linked to a C server gets {:EXIT, pid, reason} when the server dies",
       %{counter: counter} do
    Process.flag(:trap_exit, true)

    pid = server_pid(counter)
    Process.link(pid)
    Process.exit(pid, :kill)
    assert_receive {:EXIT, ^pid, :killed}, 10_000

    pid2 = await_new_pid(counter, pid)
    Process.link(pid2)
    Process.exit(pid2, :boom)
    assert_receive {:EXIT, ^pid2, :boom}, 10_000

    # A stop asked through :sys: the link gets the stop reason.
    pid3 = await_new_pid(counter, pid2)
    Process.link(pid3)
    assert :sys.terminate(pid3, :going_away) == :ok
    assert_receive {:EXIT, ^pid3, :going_away}, 10_000

    assert GenServer.call(counter, :get_value) == 0
  end

  test "a linked Elixir process exiting with :boom takes the C server down with :boom; it restarts with its state",
       %{counter: counter} do
    for n <- 1..3, do: assert(GenServer.call(counter, :increment) == n)
    pid = server_pid(counter)
    ref = Process.monitor(pid)
    holder = spawn_linked_holder(pid)

    send(holder, {:exit, :boom})
    assert_receive {:DOWN, ^ref, :process, ^pid, :boom}, 10_000

    new = await_new_pid(counter, pid)
    assert GenServer.call(new, :get_value) == 3
  end

  test "after Process.unlink, or for an exit :normal, a linked process's death leaves the C server alone",
       %{counter: counter} do
    pid = server_pid(counter)
    ref = Process.monitor(pid)

    unlinked = spawn_linked_holder(pid)
    send(unlinked, :unlink)
    assert_receive {^unlinked, :unlinked}, 5_000
    normal = spawn_linked_holder(pid)

    for {holder, reason} <- [{unlinked, :boom}, {normal, :normal}] do
      href = Process.monitor(holder)
      send(holder, {:exit, reason})
      assert_receive {:DOWN, ^href, :process, ^holder, ^reason}, 5_000
    end

    assert GenServer.call(pid, :increment) == 1
    assert server_pid(counter) == pid
    refute_received {:DOWN, ^ref, :process, _, _}
  end

  test "a lost connection to a node with a linked process kills the C server with :noconnection",
       %{counter: counter} do
    peer = start_peer!()
    for n <- 1..2, do: assert(GenServer.call(counter, :increment) == n)
    pid = server_pid(counter)
    ref = Process.monitor(pid)
    _holder = peer_call(peer, CNodeTest.Remote, :spawn_link_holder, [pid])

    # halt: the peer is gone at once, without exit signals; only its connection ends.
    catch_exit(peer_call(peer, :erlang, :halt, []))
    assert_receive {:DOWN, ^ref, :process, ^pid, :noconnection}, 10_000

    new = await_new_pid(counter, pid)
    assert GenServer.call(new, :get_value) == 2
  end

  ## Restart intensity and node shutdown

  @tag cnode: false
  test "a 4th restart within 5 s exceeds the intensity: children shut down, the node exits non-zero" do
    cnode = start_cnode()
    on_exit(fn -> stop_cnode(cnode) end)
    counter = {:counter, cnode.node}
    limiter = {:rate_limiter, cnode.node}
    assert GenServer.call(limiter, {:check_rate, "x"}) == {:ok, 99}

    # Three restarts are within the intensity (3 in 5 s) ...
    pid =
      Enum.reduce(1..3, server_pid(counter), fn _, pid ->
        ref = Process.monitor(pid)
        Process.exit(pid, :kill)
        assert_receive {:DOWN, ^ref, :process, ^pid, :killed}, 10_000
        await_new_pid(counter, pid)
      end)

    assert GenServer.call(counter, :increment) == 1

    # ... the fourth is not.
    Process.exit(pid, :kill)
    status = await_cnode_exit(cnode)
    assert status != 0, "exited 0 after exceeding the restart intensity\n" <> log_tail(cnode)
    assert await_log_line(cnode, ~r/intensity/) =~ ~r/\berror\b/

    # The rate limiter was shut down, not dropped: its terminate saved "x".
    again = restart_cnode!(cnode)
    assert GenServer.call({:rate_limiter, again.node}, {:check_rate, "x"}) == {:ok, 98}
  end

  @tag cnode_args: @limits
  test "SIGTERM saves every server, and a new node process on the same data dir has every value back",
       %{cnode: cnode, node: node, counter: counter} do
    limiter = {:rate_limiter, node}
    for n <- 1..5, do: assert(GenServer.call(counter, :increment) == n)
    assert GenServer.call(limiter, {:check_rate, "x"}) == {:ok, 2}
    assert GenServer.call(limiter, {:check_rate, "x"}) == {:ok, 1}
    assert GenServer.call(limiter, {:check_rate, "x"}) == {:ok, 0}
    assert GenServer.call(limiter, {:check_rate, "x"}) == {:error, :rate_limited}
    assert GenServer.call(limiter, {:check_rate, "y"}) == {:ok, 2}

    assert stop_cnode(cnode) == 0
    assert File.exists?(Path.join(cnode.data_dir, "counter.state"))
    assert File.exists?(Path.join(cnode.data_dir, "rate_limiter.state"))

    again = restart_cnode!(cnode, args: @limits)
    assert again.node == node
    assert GenServer.call(counter, :get_value) == 5
    assert GenServer.call(limiter, {:check_rate, "x"}) == {:error, :rate_limited}
    assert GenServer.call(limiter, {:check_rate, "y"}) == {:ok, 1}
    assert GenServer.call(limiter, {:check_rate, "z"}) == {:ok, 2}
  end

  ## The death of a top supervisor, net_kernel's end

  # Process.exit(cnode_sup, :kill) from here, with the pid iex would find: the children get
  # :killed through their links and save, and the C node stops by itself with status 1,
  # as an OTP node does when a permanent application's top supervisor dies. The next
  # start has the counter's value back. Returns the killed node and its successor.
  defp kill_root_sequence(opts) do
    cnode = start_cnode(opts)
    on_exit(fn -> stop_cnode(cnode) end)
    counter = {:counter, cnode.node}
    for n <- 1..3, do: assert(GenServer.call(counter, :increment) == n)

    {:status, sup, {:module, :gen_server}, _} = :sys.get_status({:cnode_sup, cnode.node})
    Process.exit(sup, :kill)
    status = await_cnode_exit(cnode)
    assert status == 1, "exited #{status} after its root supervisor was killed\n" <> log_tail(cnode)

    again = restart_cnode!(cnode, Keyword.take(opts, [:bin]))
    assert GenServer.call({:counter, again.node}, :get_value) == 3
    assert GenServer.call({:counter, again.node}, :increment) == 4
    {cnode, again}
  end

  @tag cnode: false
  test "Process.exit(cnode_sup, :kill): the node exits 1 by itself; the counter's value is back on the next start" do
    kill_root_sequence([])
  end

  @tag cnode: false
  test "the same against the sanitized node (ASan, UBSan): status 1, then 0 on SIGTERM, no sanitizer report" do
    bin = san_bin()
    assert File.exists?(bin), "#{bin} is missing: make SANITIZER=address,undefined builds it"
    {cnode, again} = kill_root_sequence(bin: bin)
    assert stop_cnode(again) == 0
    assert sanitizer_reports(cnode) == [], log_tail(cnode)
  end

  # OTP's net_kernel is a permanent child of kernel_sup; here too, and the node's SIGTERM
  # afterwards (checked when the test ends) stops the new one.
  test ":sys.terminate(net_kernel, :normal): kernel_sup starts a new one, Node.ping says :pong",
       %{node: node} do
    old = server_pid({:net_kernel, node})
    assert :sys.terminate({:net_kernel, node}, :normal) == :ok
    new = await_new_pid({:net_kernel, node}, old)
    assert node(new) == node
    assert Node.ping(node) == :pong
    # cnode_metrics, the metrics map's server, is kernel_sup's other child, left running.
    children = Supervisor.which_children({:kernel_sup, node})
    assert {:net_kernel, ^new, :worker, [:net_kernel]} = List.keyfind(children, :net_kernel, 0)
    assert {:cnode_metrics, pid, :worker, [:cnode_metrics]} = List.keyfind(children, :cnode_metrics, 0)
    assert is_pid(pid)
    assert length(children) == 2
  end

  ## State files

  @tag cnode: false
  test "a corrupt counter.state is moved aside with its bytes, logged, and the counter starts at 0" do
    name = unique_name("c")
    dir = data_dir_for(name)
    File.mkdir_p!(dir)
    path = Path.join(dir, "counter.state")
    garbage = "not a state file" <> <<0, 1, 2, 255>> <> :crypto.strong_rand_bytes(64)
    File.write!(path, garbage)

    cnode = start_cnode!(name: name)
    counter = {:counter, cnode.node}
    assert GenServer.call(counter, :get_value) == 0

    assert [aside] = Path.wildcard(path <> ".corrupt-*")
    assert File.read!(aside) == garbage
    assert await_log_line(cnode, ~r/#{Regex.escape(path)}/) =~ ~r/\bwarning\b/

    # It serves, and saves a good file again.
    assert GenServer.call(counter, :increment) == 1
    assert GenServer.call({:rate_limiter, cnode.node}, {:check_rate, "x"}) == {:ok, 99}
  end

  @tag cnode: false
  test "a saved counter.state with a flipped byte, or cut short, is set aside too" do
    damages = [
      flipped: fn good ->
        head = binary_part(good, 0, byte_size(good) - 1)
        head <> <<Bitwise.bxor(:binary.last(good), 0xFF)>>
      end,
      truncated: fn good -> binary_part(good, 0, byte_size(good) - 1) end
    ]

    for {what, damage} <- damages do
      first = start_cnode!()
      for n <- 1..7, do: assert(GenServer.call({:counter, first.node}, :increment) == n)
      assert stop_cnode(first) == 0

      path = Path.join(first.data_dir, "counter.state")
      bad = damage.(File.read!(path))
      File.write!(path, bad)

      again = restart_cnode!(first)
      assert GenServer.call({:counter, again.node}, :get_value) == 0, "#{what} file was loaded"
      asides = Path.wildcard(path <> ".corrupt-*")
      assert length(asides) == 1, "#{what} file: set aside as #{inspect(asides)}"
      assert File.read!(hd(asides)) == bad
    end
  end

  @tag cnode: false
  test "a data dir that cannot be created stops the node at start-up with one line on stderr" do
    file = Path.join(run_dir(), unique_name("plain_file"))
    File.write!(file, "a regular file\n")
    dir = Path.join(file, "data")

    case launch_cnode(data_dir: dir) do
      {:exited, status, cnode} ->
        assert status != 0
        stderr = File.read!(cnode.log)
        lines = String.split(stderr, "\n", trim: true)
        assert length(lines) == 1, "expected one line on stderr, got:\n#{stderr}"
        assert hd(lines) =~ dir

      {:ready, cnode} ->
        stop_cnode(cnode)
        flunk("#{cnode.node} printed READY with the data dir #{dir}\n" <> log_tail(cnode))
    end
  end
end
