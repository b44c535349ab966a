defmodule HeartTest do
  @moduledoc """
  `cnode --heart` from the outside (issue 10): the watchdog restarts a node that segfaulted
  or whose loop stopped, stops it cleanly on SIGTERM, and leaves nothing behind when it is
  killed itself. The C node's OS pid the port holds is the watchdog's; the node is its only
  child (`/proc/<watchdog>/task/<watchdog>/children`). Times are printed, never asserted.

  State across a segfault is the journal's (`--durability crash`, the default, given
  explicitly here): the segfault test asserts that the counter kept every acknowledged
  increment.
  """
  use CNodeTest.Case, async: false

  @moduletag cnode: false

  ## Helpers

  # A C node under --heart, its READY line seen; SIGTERM to the watchdog when the test ends
  # (a no-op when it is gone already), and any node process it left is killed.
  defp start_heart!(args \\ [], opts \\ []) do
    {:ready, cnode} = launch_cnode(Keyword.put(opts, :args, ["--heart" | args]))

    ExUnit.Callbacks.on_exit(fn ->
      stop_cnode(cnode)
      for pid <- children(cnode.os_pid), do: System.cmd("kill", ["-KILL", "#{pid}"])
    end)

    cnode
  end

  defp children(os_pid) do
    case File.read("/proc/#{os_pid}/task/#{os_pid}/children") do
      {:ok, text} -> text |> String.split() |> Enum.map(&String.to_integer/1)
      {:error, _} -> []
    end
  end

  # The watchdog's node process (one other than `not`), recorded for the run's cleanup.
  defp node_pid(cnode, not_pid \\ nil) do
    pid =
      wait_until(
        fn ->
          case children(cnode.os_pid) do
            [pid] when pid != not_pid -> pid
            _ -> nil
          end
        end,
        15_000,
        "a node process under the watchdog #{cnode.os_pid}\n" <> log_tail(cnode)
      )

    File.write!(System.fetch_env!("CNODE_TEST_PIDFILE"), "#{pid}\n", [:append])
    pid
  end

  # Alive and not a zombie (an orphan's zombie may wait for a reaper that never comes).
  defp alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> not String.contains?(stat |> String.split(") ") |> List.last(), "Z ")
      {:error, _} -> false
    end
  end

  defp kill(sig, os_pid), do: {_, 0} = System.cmd("kill", ["-#{sig}", "#{os_pid}"])

  # Calls until one is answered (each failed try is a :noconnection or :noproc exit while
  # the node is down); the reply.
  defp await_call(server, request, timeout \\ 15_000) do
    wait_until(
      fn ->
        try do
          {:reply, GenServer.call(server, request, 1_000)}
        catch
          :exit, _ ->
            Process.sleep(2)
            nil
        end
      end,
      timeout,
      "#{inspect(server)} to answer #{inspect(request)}"
    )
    |> elem(1)
  end

  # A sanitized node (make interop-san) would catch the SIGSEGV, report it as a bug (failing
  # the run's sanitizer sweep) and exit 1; the test wants the real signal's death. Tests run
  # one at a time, and the port inherits this BEAM's environment when it starts the node.
  defp with_real_segv(fun) do
    saved = System.get_env("ASAN_OPTIONS")
    System.put_env("ASAN_OPTIONS", Enum.join(Enum.reject([saved, "handle_segv=0"], &is_nil/1), ":"))

    try do
      fun.()
    after
      if saved, do: System.put_env("ASAN_OPTIONS", saved), else: System.delete_env("ASAN_OPTIONS")
    end
  end

  defp ms_since(t0), do: System.convert_time_unit(System.monotonic_time() - t0, :native, :microsecond) / 1000

  ## Tests

  test "kill -SEGV of the node: the watchdog starts it again and it serves GenServer.call" do
    cnode = with_real_segv(fn -> start_heart!(["--durability", "crash"]) end)
    counter = {:counter, cnode.node}
    for n <- 1..5, do: assert(GenServer.call(counter, :increment) == n)
    old = node_pid(cnode)

    t0 = System.monotonic_time()
    kill("SEGV", old)
    # The new node process prints READY again; the port's owner passes it to this process.
    assert_receive {_ref, :ready, _, node_name, _port}, 15_000
    ready_ms = ms_since(t0)
    assert node_name == Atom.to_string(cnode.node)
    value = await_call(counter, :get_value)
    back_ms = ms_since(t0)

    new = node_pid(cnode, old)
    refute alive?(old)

    IO.puts(
      "\n    heart: after kill -SEGV the new node was READY in #{Float.round(ready_ms, 1)} ms and " <>
        "answered GenServer.call in #{Float.round(back_ms, 1)} ms " <>
        "(node pid #{old} -> #{new}, --durability crash)"
    )

    # The five increments were acknowledged, so the journal holds them all.
    assert value == 5
    assert GenServer.call(counter, :increment) == value + 1
    await_log_line(cnode, ~r/\[heart\] .* \(pid #{old}\) was killed by SIGSEGV after \d+ ms; restart 1 in 0 ms/)
  end

  test "SIGSTOP of the node with --heart-timeout 2: killed for missed heartbeats and restarted" do
    cnode = start_heart!(["--heart-timeout", "2"])
    counter = {:counter, cnode.node}
    assert GenServer.call(counter, :increment) == 1
    old = node_pid(cnode)

    t0 = System.monotonic_time()
    kill("STOP", old)
    new = node_pid(cnode, old)
    assert is_integer(await_call(counter, :get_value))
    IO.puts("\n    heart: a stopped node (timeout 2 s) was replaced and serving after #{round(ms_since(t0))} ms")

    refute alive?(old)
    assert alive?(new)
    await_log_line(cnode, ~r/\[heart\] .* \(pid #{old}\) sent no heartbeat for 2 s; killing it/)
    await_log_line(cnode, ~r/\(pid #{old}\) missed its heartbeats for 2 s \(killed with SIGKILL\)/)
  end

  test "SIGTERM to the watchdog: the node stops cleanly, both exit 0, the name is free" do
    cnode = start_heart!()
    counter = {:counter, cnode.node}
    for n <- 1..3, do: assert(GenServer.call(counter, :increment) == n)
    child = node_pid(cnode)

    assert stop_cnode(cnode) == 0
    refute alive?(child)
    assert children(cnode.os_pid) == []
    await_log_line(cnode, ~r/\(pid #{child}\) exited with status 0; the watchdog exits with status 0/)
    [name, _host] = String.split(Atom.to_string(cnode.node), "@")
    assert :erl_epmd.port_please(String.to_charlist(name), ~c"127.0.0.1") == :noport

    # A clean stop saved the state (terminate), and a new node under --heart has it.
    again = start_heart!([], name: cnode.name, data_dir: cnode.data_dir)
    assert await_call({:counter, again.node}, :get_value) == 3
  end

  test "SIGKILL to the watchdog: the node notices and stops, leaving no process" do
    cnode = start_heart!()
    counter = {:counter, cnode.node}
    assert GenServer.call(counter, :increment) == 1
    child = node_pid(cnode)

    t0 = System.monotonic_time()
    kill("KILL", cnode.os_pid)
    assert await_cnode_exit(cnode) == 128 + 9
    wait_until(fn -> not alive?(child) end, 15_000, "the orphaned node #{child} to stop\n" <> log_tail(cnode))
    IO.puts("\n    heart: the node stopped #{round(ms_since(t0))} ms after its watchdog was killed")

    await_log_line(cnode, ~r/\[heart\] the watchdog is gone/)
    # It stopped the ordinary way: the servers saved, so the value is there for the next start.
    again = start_heart!([], name: cnode.name, data_dir: cnode.data_dir)
    assert await_call({:counter, again.node}, :get_value) == 1
  end
end
