defmodule CNodeTest do
  # Real C nodes under real supervisors: one at a time, since they share the machine.
  use ExUnit.Case, async: false

  import CNode.PkgTest
  import ExUnit.CaptureLog

  alias CNode.{Counter, RateLimiter}

  # A supervisor (restarting the CNode child) under the test's own, stopped when the test ends.
  defp start_tree(node, more \\ [], siblings \\ []) do
    children = [{CNode, opts(node, more)} | siblings]

    spec = %{
      id: :tree,
      type: :supervisor,
      start: {Supervisor, :start_link, [children, [strategy: :one_for_one, max_restarts: 5, max_seconds: 10]]}
    }

    sup = start_supervised!(spec)
    record_os_pid(CNode.info(child(sup, {CNode, node})).os_pid)
    sup
  end

  defp child(sup, id) do
    Enum.find_value(Supervisor.which_children(sup), fn
      {^id, pid, _, _} when is_pid(pid) -> pid
      _ -> nil
    end)
  end

  test "the child spec starts the node before the next child, and the client API answers as the Elixir one" do
    node = unique_node()
    # The next child calls the node from its own init: the node must be up by then.
    caller = %{id: :caller, start: {Agent, :start_link, [fn -> Counter.increment(node) end]}}
    sup = start_tree(node, [register: CNodeTest.Cnode], [caller])

    assert Agent.get(child(sup, :caller), & &1) == 1
    assert node in Node.list()
    assert Counter.increment(node) == 2
    assert Counter.decrement(node) == 1
    assert Counter.increment_async(node) == :ok
    assert Counter.get_value(node) == 2
    # The :register name and the other forms of a server.
    assert Counter.increment(CNodeTest.Cnode) == 3
    assert Counter.get_value({:counter, node}) == 3
    assert RateLimiter.check_rate(node, "a") == {:ok, 99}
    assert RateLimiter.check_rate(CNodeTest.Cnode, "a") == {:ok, 98}
    assert RateLimiter.check_rate(node, {:any, ["term"]}) == {:ok, 99}
    assert_raise ArgumentError, fn -> Counter.get_value(:not_a_cnode_name) end

    info = CNode.info(CNodeTest.Cnode)
    assert info.node == node and is_integer(info.port) and os_alive?(info.os_pid)
  end

  test "a rate limit passed in :args holds" do
    node = unique_node()
    start_tree(node, args: ["--max-requests", "2", "--window-ms", "60000"])
    assert RateLimiter.check_rate(node, "c") == {:ok, 1}
    assert RateLimiter.check_rate(node, "c") == {:ok, 0}
    assert RateLimiter.check_rate(node, "c") == {:error, :rate_limited}
  end

  test "the node's log lines reach Logger; a node that fails before READY stops the child with its status" do
    node = unique_node()

    log =
      capture_log(fn ->
        assert {:error, reason} = start_supervised({CNode, opts(node, args: ["--window-ms", "0"])})
        assert inspect(reason) =~ "{:cnode_exited_before_ready, #{inspect(node)}, 2}"
      end)

    assert log =~ ~r/\[error\].*--window-ms needs an integer/
  end

  test "kill -9 of the node: the child exits with a clear reason and the supervisor restarts it" do
    node = unique_node()
    sup = start_tree(node)
    assert Counter.increment(node) == 1
    old_child = child(sup, {CNode, node})
    %{os_pid: old} = CNode.info(old_child)
    ref = Process.monitor(old_child)

    log =
      capture_log(fn ->
        os_kill(old, "KILL")
        assert_receive {:DOWN, ^ref, :process, _, {:cnode_exited, ^node, 137}}, 20_000

        new_child =
          wait_until(
            fn -> (c = child(sup, {CNode, node})) && c != old_child && c end,
            30_000,
            "restarted CNode child"
          )

        %{os_pid: new} = CNode.info(new_child)
        record_os_pid(new)
        assert new != old
        refute os_alive?(old)

        value =
          wait_until(fn -> try_call(fn -> Counter.increment(node) end) end, 30_000, "call to the new node")

        assert is_integer(value)
      end)

    assert log =~ "exited with status 137 (killed by signal 9)"
  end

  test "stopping the supervisor: the node gets SIGTERM, exits 0, and the next start finds its value" do
    node = unique_node()
    sup = start_tree(node)
    for _ <- 1..3, do: Counter.increment(node)
    os_pid = CNode.info(child(sup, {CNode, node})).os_pid

    log = capture_log(fn -> assert stop_supervised(:tree) == :ok end)

    assert log =~ "[node] got SIGTERM"
    assert log =~ "cnode #{node} stopped: exit status 0"
    wait_until(fn -> not os_alive?(os_pid) end, 10_000, "exit of the stopped node")

    start_tree(node)
    assert Counter.get_value(node) == 3
  end

  test "durability: passes --durability MODE when given, and a kill -9 of the node loses no increment" do
    node = unique_node()
    sup = start_tree(node, durability: :crash)
    assert Counter.increment(node) == 1
    assert Counter.increment(node) == 2
    old_child = child(sup, {CNode, node})
    %{os_pid: old} = CNode.info(old_child)

    # In crash mode an acknowledged increment is in the journal before its reply leaves.
    capture_log(fn ->
      os_kill(old, "KILL")

      new_child =
        wait_until(fn -> (c = child(sup, {CNode, node})) && c != old_child && c end, 30_000, "restarted CNode child")

      record_os_pid(CNode.info(new_child).os_pid)
      value = wait_until(fn -> try_call(fn -> Counter.get_value(node) end) end, 30_000, "call to the new node")
      assert value == 2
    end)
  end

  test "durability: a mode the node does not know stops the child before READY" do
    node = unique_node()

    log =
      capture_log(fn ->
        assert {:error, reason} = start_supervised({CNode, opts(node, durability: :sometimes)})
        assert inspect(reason) =~ "cnode_exited_before_ready"
      end)

    assert log =~ "--durability"
  end

  test "kill -9 of the BEAM that owns the node leaves no node process behind" do
    node = unique_node("orphan")
    ebin = :cnode |> :code.lib_dir() |> to_string() |> Path.join("ebin")
    owner = "owner#{System.unique_integer([:positive])}_#{run_id()}@127.0.0.1"

    script = """
    {:ok, _} = Supervisor.start_link([{CNode, #{inspect(opts(node, register: :owned_cnode))}}], strategy: :one_for_one)
    IO.puts("NODE_OS_PID \#{CNode.info(:owned_cnode).os_pid}")
    Process.sleep(:infinity)
    """

    port =
      Port.open({:spawn_executable, System.find_executable("elixir")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 16_384},
        args: ["--name", owner, "--cookie", Atom.to_string(Node.get_cookie()), "-pa", ebin, "-e", script]
      ])

    {:os_pid, beam} = Port.info(port, :os_pid)
    record_os_pid(beam)
    node_os_pid = await_line(port, "NODE_OS_PID ") |> String.to_integer()
    record_os_pid(node_os_pid)

    # The elixir and erl scripts exec, so the port's process is the BEAM itself.
    assert File.read!("/proc/#{beam}/comm") =~ "beam"
    assert Counter.increment(node) == 1

    os_kill(beam, "KILL")
    started = System.monotonic_time(:millisecond)
    wait_until(fn -> not os_alive?(node_os_pid) end, 20_000, "end of the orphaned node")

    IO.puts(
      "\n  the node was gone #{System.monotonic_time(:millisecond) - started} ms after kill -9 of its BEAM"
    )

    name = node |> Atom.to_string() |> String.split("@") |> hd() |> to_charlist()

    wait_until(
      fn ->
        {:ok, names} = :erl_epmd.names()
        not List.keymember?(names, name, 0)
      end,
      10_000,
      "epmd to free the name"
    )

    # It stopped as on SIGTERM: its counter was saved.
    wait_until(fn -> node not in Node.list() end, 10_000, "the dead node to leave Node.list")
    start_tree(node)
    assert Counter.get_value(node) == 1
  end

  defp await_line(port, prefix) do
    receive do
      {^port, {:data, {:eol, line}}} ->
        if String.starts_with?(line, prefix),
          do: String.replace_prefix(line, prefix, ""),
          else: await_line(port, prefix)

      {^port, {:data, _}} ->
        await_line(port, prefix)

      {^port, {:exit_status, status}} ->
        flunk("the owner BEAM exited with status #{status}")
    after
      60_000 -> flunk("the owner BEAM printed no #{prefix}line")
    end
  end
end
