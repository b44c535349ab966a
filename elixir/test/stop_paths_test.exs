defmodule CNode.StopPathsTest do
  # The child's bounds, with stand-in binaries (shell scripts) that misbehave as a broken
  # node could: one that never prints READY, one that ignores SIGTERM. Neither may outlive
  # the child.
  use ExUnit.Case, async: false

  import CNode.PkgTest
  import ExUnit.CaptureLog

  defp script(name, body) do
    path = Path.join(run_dir(), "#{name}_#{System.unique_integer([:positive])}.sh")
    File.write!(path, "#!/bin/sh\n" <> body)
    File.chmod!(path, 0o755)
    path
  end

  # The OS pid of the stand-in: it writes it to a file, since init fails before info/1 could.
  defp pid_from(file), do: wait_until(fn -> read_pid(file) end, 10_000, "pid file #{file}")

  defp read_pid(file) do
    case File.read(file) do
      {:ok, text} -> text |> String.trim() |> Integer.parse() |> then(fn {n, _} -> n end)
      _ -> nil
    end
  end

  test "no READY within ready_timeout: the child fails with that reason and the process is stopped" do
    node = unique_node("silent")
    pid_file = Path.join(run_dir(), "silent_#{System.unique_integer([:positive])}.pid")
    bin = script("silent", "echo $$ > #{pid_file}\nexec sleep 600\n")

    log =
      capture_log(fn ->
        assert {:error, reason} = start_supervised({CNode, opts(node, bin: bin, ready_timeout: 300)})
        assert inspect(reason) =~ "{:cnode_ready_timeout, #{inspect(node)}, 300}"
      end)

    os_pid = pid_from(pid_file)
    record_os_pid(os_pid)
    wait_until(fn -> not os_alive?(os_pid) end, 10_000, "end of the silent stand-in")
    assert log =~ "stopped with status 143 (killed by signal 15)"
  end

  test "a process that ignores SIGTERM is killed after stop_timeout" do
    node = unique_node("deaf")
    pid_file = Path.join(run_dir(), "deaf_#{System.unique_integer([:positive])}.pid")
    # READY for a node that is not there: the connect fails, and the child stops it.
    bin = script("deaf", "trap '' TERM\necho $$ > #{pid_file}\necho \"READY #{node} 1\"\nexec sleep 600\n")

    log =
      capture_log(fn ->
        assert {:error, reason} = start_supervised({CNode, opts(node, bin: bin, stop_timeout: 300)})
        assert inspect(reason) =~ "cnode_connect_failed"
      end)

    os_pid = pid_from(pid_file)
    record_os_pid(os_pid)
    refute os_alive?(os_pid)
    assert log =~ "did not stop within 300 ms of SIGTERM: SIGKILL (status 137 (killed by signal 9))"
  end
end
