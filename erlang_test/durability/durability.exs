# Issue 10's figures, run by scripts/durability.sh on a named node with the run's cookie and
# epmd: the kill -9 table (8 callers incrementing, the node killed after 1, 4 and 10 s,
# restarted, the value compared with what was acknowledged; a rate-limited client checked
# after the restart) and a quick side-by-side of calls/s per durability mode at 64 callers.
# Argument: kill, speed or all.

here = __DIR__
run_dir = System.fetch_env!("CNODE_TEST_RUN_DIR")
ebin = Path.join(run_dir, "ebin")
File.mkdir_p!(ebin)
support = Path.wildcard(Path.join([here, "..", "exunit", "support", "*.ex"]))
{:ok, _, _} = Kernel.ParallelCompiler.compile_to_path(support, ebin)
true = Code.prepend_path(ebin)

defmodule Dur do
  import CNodeTest

  @abuser "abuser-42"

  def start(mode, extra \\ []) do
    args = ["--durability", mode] ++ extra

    case launch_cnode(args: args) do
      {:ready, c} -> {c, args}
      {:exited, status, c} -> raise "#{c.node} exited with #{status}\n" <> log_tail(c)
    end
  end

  def restart({c, args}) do
    wait_until(fn -> c.node not in Node.list(:connected) end, 10_000, "#{c.node} to go")
    {:ready, c2} = launch_cnode(args: args, name: c.name, data_dir: c.data_dir)
    c2
  end

  defp caller(server, n) do
    try do
      _ = GenServer.call(server, :increment, 5_000)
      caller(server, n + 1)
    catch
      :exit, _ -> n
    end
  end

  defp limited?(c) do
    GenServer.call({:rate_limiter, c.node}, {:check_rate, @abuser}) == {:error, :rate_limited}
  end

  def kill_row(mode, secs, callers) do
    {c, args} = start(mode, ["--max-requests", "5", "--window-ms", "600000"])
    for _ <- 1..6, do: GenServer.call({:rate_limiter, c.node}, {:check_rate, @abuser})
    true = limited?(c)
    tasks = for _ <- 1..callers, do: Task.async(fn -> caller({:counter, c.node}, 0) end)
    Process.sleep(secs * 1000)
    System.cmd("kill", ["-KILL", "#{c.os_pid}"])
    acked = tasks |> Enum.map(&Task.await(&1, 60_000)) |> Enum.sum()
    await_cnode_exit(c)
    c2 = restart({c, args})
    value = GenServer.call({:counter, c2.node}, :get_value)
    still = limited?(c2)
    stop_cnode(c2)
    lost = max(acked - value, 0)
    pct = if acked > 0, do: Float.round(100 * lost / acked, 1), else: 0.0

    IO.puts("| #{mode} | #{secs} s | #{acked} | #{value} | #{lost} (#{pct} %) | #{value - acked} | #{still} |")
    lost
  end

  defp loop(server, req, deadline, n) do
    if System.monotonic_time(:millisecond) >= deadline do
      n
    else
      GenServer.call(server, req, 10_000)
      loop(server, req, deadline, n + 1)
    end
  end

  def rate(c, server, reqs, secs) do
    deadline = System.monotonic_time(:millisecond) + secs * 1000

    reqs
    |> Enum.map(fn req -> Task.async(fn -> loop({server, c.node}, req, deadline, 0) end) end)
    |> Enum.map(&Task.await(&1, 60_000 + secs * 1000))
    |> Enum.sum()
    |> Kernel./(secs)
    |> round()
  end

  def speed(modes, callers, secs) do
    IO.puts("\n| mode | `:increment` calls/s | vs terminate | `check_rate` calls/s | vs terminate |")
    IO.puts("|---|---:|---:|---:|---:|")

    Enum.reduce(modes, nil, fn mode, base ->
      {c, _} = start(mode, ["--max-requests", "1000000000"])
      inc = rate(c, :counter, List.duplicate(:increment, callers), secs)
      chk = rate(c, :rate_limiter, for(i <- 1..callers, do: {:check_rate, "client-#{i}"}), secs)
      stop_cnode(c)
      {binc, bchk} = base || {inc, chk}
      IO.puts("| #{mode} | #{inc} | #{Float.round(inc / binc, 2)} | #{chk} | #{Float.round(chk / bchk, 2)} |")
      base || {inc, chk}
    end)
  end
end

what = List.first(System.argv(), "all")
modes = String.split(System.get_env("DUR_MODES", "crash power"))

if what in ["kill", "all"] do
  IO.puts("| mode | kill -9 after | acknowledged increments | value after restart | lost | in flight | limited client still limited |")
  IO.puts("|---|---|---:|---:|---:|---:|---|")
  lost = for mode <- modes, secs <- [1, 4, 10], do: Dur.kill_row(mode, secs, 8)
  if Enum.sum(lost) > 0, do: System.halt(1)
end

if what in ["speed", "all"] do
  secs = String.to_integer(System.get_env("DUR_SECONDS", "5"))
  Dur.speed(["terminate", "crash", "power"], 64, secs)
end
