defmodule MonitorTest do
  @moduledoc """
  Monitors and exits across the connection: noproc at once for a missing name, DOWN when a
  C server exits. A test that stops a server has its own C node (every test does).
  """
  use CNodeTest.Case, async: false

  test "a call to an unregistered name exits with :noproc", %{node: node, counter: counter} do
    # Once as the call that sets up the connection, once over the established one.
    assert catch_exit(GenServer.call({:nope, node}, :x, 5_000)) ==
             {:noproc, {GenServer, :call, [{:nope, node}, :x, 5_000]}}

    assert GenServer.call(counter, :get_value) == 0

    assert catch_exit(GenServer.call({:nope, node}, :x, 5_000)) ==
             {:noproc, {GenServer, :call, [{:nope, node}, :x, 5_000]}}
  end

  test "the counter answers the :sys protocol with its own pid on the C node",
       %{node: node, counter: counter} do
    assert {:status, pid, {:module, :gen_server}, _items} = :sys.get_status(counter)
    assert is_pid(pid)
    assert node(pid) == node
    # The pid addresses the same server as the name.
    assert GenServer.call(pid, :increment) == 1
    assert GenServer.call(counter, :get_value) == 1
  end

  test "Process.monitor of a C server pid gets DOWN with the exit reason", %{counter: counter} do
    {:status, pid, {:module, :gen_server}, _} = :sys.get_status(counter)
    ref = Process.monitor(pid)

    assert :sys.terminate(pid, :shutdown) == :ok
    assert_receive {:DOWN, ^ref, :process, ^pid, :shutdown}, 10_000

    # That pid is gone for good: a call to it now fails at once with :noproc.
    assert {:noproc, _} = catch_exit(GenServer.call(pid, :get_value, 5_000))
  end

  test "Process.monitor by name gets DOWN with the exit reason", %{node: node, counter: counter} do
    assert GenServer.call(counter, :get_value) == 0
    ref = Process.monitor(counter)

    assert :sys.terminate(counter, :shutdown) == :ok
    assert_receive {:DOWN, ^ref, :process, {:counter, ^node}, :shutdown}, 10_000
  end
end
