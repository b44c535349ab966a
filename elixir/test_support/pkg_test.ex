defmodule CNode.PkgTest do
  @moduledoc """
  Shared setup of the package's tests. scripts/elixir-test.sh runs them on a distributed BEAM
  with a private epmd (`ERL_EPMD_PORT`, inherited by every node) and provides through the
  environment `CNODE_BIN`, `CNODE_TEST_RUN_ID` (in every node name), `CNODE_TEST_RUN_DIR`
  (data dirs and logs) and `CNODE_TEST_PIDFILE` (every OS pid started here is appended, so
  the script kills whatever a crashed run left behind, by pid).
  """
  import ExUnit.Assertions

  @host "127.0.0.1"

  def repo_root, do: Path.expand("../..", __DIR__)

  def bin, do: Path.expand(System.get_env("CNODE_BIN", "build/cnode"), repo_root())

  def run_id, do: System.get_env("CNODE_TEST_RUN_ID") || "r#{System.unique_integer([:positive])}"

  def run_dir do
    System.get_env("CNODE_TEST_RUN_DIR") || Path.join(System.tmp_dir!(), "cnode-pkg-#{run_id()}")
  end

  @doc "A node name unique in this run, e.g. `:\"pkg12_211500_4242@127.0.0.1\"`."
  def unique_node(prefix \\ "pkg"),
    do: :"#{prefix}#{System.unique_integer([:positive])}_#{run_id()}@#{@host}"

  def data_dir(node), do: Path.join([run_dir(), "data", node |> Atom.to_string() |> String.split("@") |> hd()])

  def record_os_pid(os_pid) do
    case System.get_env("CNODE_TEST_PIDFILE") do
      nil -> :ok
      file -> File.write!(file, "#{os_pid}\n", [:append])
    end
  end

  @doc "Is the OS process running? A zombie counts as gone."
  def os_alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> stat |> String.split(") ") |> List.last() |> String.first() != "Z"
      {:error, _} -> false
    end
  end

  def os_kill(os_pid, sig), do: :os.cmd(~c"kill -#{sig} #{os_pid} 2>/dev/null")

  @doc "Polls fun until it returns a truthy value (returned) or timeout ms pass (the test fails)."
  def wait_until(fun, timeout, what) do
    deadline = System.monotonic_time(:millisecond) + timeout
    poll(fun, deadline, timeout, what)
  end

  defp poll(fun, deadline, timeout, what) do
    case fun.() do
      result when result not in [nil, false] ->
        result

      _ ->
        if System.monotonic_time(:millisecond) > deadline, do: flunk("no #{what} within #{timeout} ms")
        Process.sleep(20)
        poll(fun, deadline, timeout, what)
    end
  end

  @doc "A call that exits (the node restarting) is nil, for wait_until."
  def try_call(fun) do
    fun.()
  catch
    :exit, _ -> nil
  end

  @doc "The CNode child's options for node, with this run's binary."
  def opts(node, more \\ []),
    do: Keyword.merge([name: node, data_dir: data_dir(node), bin: bin(), stop_timeout: 10_000], more)
end
