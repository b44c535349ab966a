defmodule CNode.FreshAppTest do
  # Issue 14's first check, as a user meets it: a new mix project that depends on this
  # package by path, with the child spec in its application, started twice as its own BEAM.
  use ExUnit.Case, async: false

  import CNode.PkgTest

  @run_timeout 120_000

  @tag timeout: 300_000
  test "a fresh mix project with the child spec: increments, stops cleanly, finds its value again" do
    node = unique_node("fresh")
    dir = Path.join(run_dir(), "fresh_app_#{System.unique_integer([:positive])}")
    write_project(dir, node)

    # Each run: start the app, increment, print, and stop the whole system as a release does.
    script =
      ~S|IO.puts("VALUE #{CNode.Counter.increment(Fresh.Counter)} OSPID #{CNode.info(Fresh.Counter).os_pid}"); | <>
        ~S|System.stop(); Process.sleep(:infinity)|

    {out1, status1} = run_mix(dir, ["run", "-e", script])
    assert status1 == 0, out1
    assert [_, "1", os_pid] = Regex.run(~r/VALUE (\d+) OSPID (\d+)/, out1), out1
    refute os_alive?(String.to_integer(os_pid)), "the node outlived its app"
    # System.stop stopped the application: SIGTERM, and the node's own lines through Logger.
    assert out1 =~ "[node] got SIGTERM", out1
    assert out1 =~ "stopped: exit status 0", out1

    {out2, status2} = run_mix(dir, ["run", "-e", script])
    assert status2 == 0, out2
    assert [_, "2", _] = Regex.run(~r/VALUE (\d+) OSPID (\d+)/, out2), out2
  end

  defp write_project(dir, node) do
    File.mkdir_p!(Path.join(dir, "lib"))

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule Fresh.MixProject do
      use Mix.Project
      def project, do: [app: :fresh, version: "0.1.0", deps: [{:cnode, path: #{inspect(Path.expand("../..", __DIR__) |> Path.join("elixir"))}}]]
      def application, do: [mod: {Fresh.Application, []}, extra_applications: [:logger]]
    end
    """)

    File.write!(Path.join(dir, "lib/application.ex"), """
    defmodule Fresh.Application do
      use Application
      def start(_type, _args) do
        children = [
          {CNode, name: #{inspect(node)}, data_dir: #{inspect(Path.join(dir, "cnode"))}, bin: #{inspect(bin())}, register: Fresh.Counter}
        ]
        Supervisor.start_link(children, strategy: :one_for_one, name: Fresh.Supervisor)
      end
    end
    """)
  end

  # `elixir --name ... -S mix ARGS` in dir, as a port whose OS pid is recorded for cleanup:
  # its output and exit status, or the test fails after @run_timeout (and kills it).
  defp run_mix(dir, args) do
    name = "freshapp#{System.unique_integer([:positive])}_#{run_id()}@127.0.0.1"

    port =
      Port.open({:spawn_executable, System.find_executable("elixir")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        cd: dir,
        env: [{~c"MIX_ENV", ~c"dev"}],
        args: ["--name", name, "--cookie", Atom.to_string(Node.get_cookie()), "-S", "mix" | args]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    record_os_pid(os_pid)
    collect(port, os_pid, "")
  end

  defp collect(port, os_pid, acc) do
    receive do
      {^port, {:data, data}} -> collect(port, os_pid, acc <> data)
      {^port, {:exit_status, status}} -> {acc, status}
    after
      @run_timeout ->
        os_kill(os_pid, "KILL")
        flunk("mix did not finish within #{@run_timeout} ms:\n" <> acc)
    end
  end
end
