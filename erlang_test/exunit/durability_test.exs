defmodule DurabilityTest do
  @moduledoc """
  Issue 10: the journal. A kill -9 under load loses no acknowledged increment and hands no
  rate-limited client a fresh window, in crash and power modes; a torn journal tail is cut
  off; a journal from another snapshot is refused and moved aside; a full disk makes state
  changes answer `{:error, :not_durable}`, a restart after a failed save keeps the state the
  server held, and a failed final save makes the exit status non-zero.
  """
  use ExUnit.Case

  import CNodeTest

  @callers 8
  @abuser "abuser-42"

  defp counter(c), do: {:counter, c.node}
  defp limiter(c), do: {:rate_limiter, c.node}

  defp kill9(c), do: System.cmd("kill", ["-KILL", "#{c.os_pid}"], stderr_to_stdout: true)

  # Increments until the call fails (the node died): {acknowledged, in flight at the end}.
  defp caller_loop(server, acked) do
    try do
      _ = GenServer.call(server, :increment, 5_000)
      caller_loop(server, acked + 1)
    catch
      :exit, _ -> {acked, 1}
    end
  end

  defp limit_abuser(c) do
    Enum.reduce_while(1..20, nil, fn _, _ ->
      case GenServer.call(limiter(c), {:check_rate, @abuser}) do
        {:error, :rate_limited} -> {:halt, :limited}
        {:ok, _} -> {:cont, nil}
      end
    end)
  end

  defp kill_under_load(mode, ms, extra \\ []) do
    args = ["--durability", mode, "--max-requests", "5", "--window-ms", "600000"] ++ extra
    c = start_cnode(args: args)
    assert limit_abuser(c) == :limited
    tasks = for _ <- 1..@callers, do: Task.async(fn -> caller_loop(counter(c), 0) end)
    Process.sleep(ms)
    kill9(c)
    results = Enum.map(tasks, &Task.await(&1, 30_000))
    acked = results |> Enum.map(&elem(&1, 0)) |> Enum.sum()
    in_flight = results |> Enum.map(&elem(&1, 1)) |> Enum.sum()
    await_cnode_exit(c)
    c2 = restart_cnode!(c, args: args)
    value = GenServer.call(counter(c2), :get_value)
    assert acked > 0
    assert acked <= value, "#{mode}: #{acked} acknowledged, #{value} after the restart"
    assert value <= acked + in_flight, "#{mode}: #{value} after the restart, #{acked} + #{in_flight} sent"
    assert GenServer.call(limiter(c2), {:check_rate, @abuser}) == {:error, :rate_limited}
  end

  test "kill -9 under load in crash mode loses no acknowledged increment" do
    kill_under_load("crash", 1_000)
  end

  test "kill -9 under load in power mode loses no acknowledged increment" do
    kill_under_load("power", 1_000)
  end

  # A snapshot every 4 KiB of journal: the kill lands among forks, new journals and removals.
  test "kill -9 under load while background snapshots rotate the journal (crash, power)" do
    kill_under_load("crash", 1_000, ["--snapshot-bytes", "4096"])
    kill_under_load("power", 1_000, ["--snapshot-bytes", "4096"])
  end

  defp journals(c), do: Path.wildcard(Path.join(c.data_dir, "counter.journal.*")) |> Enum.reject(&(&1 =~ "foreign"))

  defp increments(c, n), do: for(_ <- 1..n, do: GenServer.call(counter(c), :increment))

  defp killed(c) do
    kill9(c)
    await_cnode_exit(c)
  end

  test "a torn journal tail is cut off and logged; the whole records count" do
    c = start_cnode(args: ["--durability", "crash"])
    increments(c, 10)
    killed(c)
    [journal] = journals(c)
    # A record whose length says 100 bytes, followed by 3: as a write cut short by the kill.
    File.write!(journal, <<100::32, 0::32, 1, 2, 3>>, [:append])
    c2 = restart_cnode!(c)
    assert GenServer.call(counter(c2), :get_value) == 10
    assert await_log_line(c2, ~r/torn tail: 11 bytes dropped/)
  end

  test "a journal from another snapshot is refused and moved aside" do
    a = start_cnode(args: ["--durability", "crash"])
    increments(a, 5)
    killed(a)
    b = start_cnode(args: ["--durability", "crash"])
    increments(b, 7)
    killed(b)
    [ja] = journals(a)
    [jb] = journals(b)
    foreign = File.read!(jb)
    File.cp!(jb, ja)
    a2 = restart_cnode!(a)
    # A's snapshot (taken at its start, value 0) and none of B's records.
    assert GenServer.call(counter(a2), :get_value) == 0
    assert await_log_line(a2, ~r/another lineage.*refused, moved to/)
    [aside] = Path.wildcard(Path.join(a.data_dir, "counter.journal.*.foreign-*"))
    assert File.read!(aside) == foreign
  end

  ## The disk says no: a small tmpfs, which only root can mount.

  @root System.cmd("id", ["-u"]) |> elem(0) |> String.trim() == "0"
  @tag_reason if @root, do: [], else: [skip: "disk full at runtime needs root to mount a tmpfs"]

  defp with_tmpfs(fun) do
    dir = Path.join(run_dir(), "tmpfs_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    {_, 0} = System.cmd("mount", ["-t", "tmpfs", "-o", "size=512k", "tmpfs", dir])

    try do
      fun.(dir)
    after
      System.cmd("umount", ["-l", dir])
    end
  end

  # Fills the file system: a filler file as large as it gets.
  defp fill(dir) do
    System.cmd("dd", ["if=/dev/zero", "of=#{dir}/filler", "bs=4k"], stderr_to_stdout: true)
    dir <> "/filler"
  end

  # Increments until the first {:error, :not_durable}: the number acknowledged before it.
  defp increment_until_refused(c, acked \\ 0) do
    case GenServer.call(counter(c), :increment) do
      {:error, :not_durable} -> acked
      v when is_integer(v) and acked < 100_000 -> increment_until_refused(c, acked + 1)
    end
  end

  defp count_lines(c, pattern),
    do: c.log |> File.read!() |> String.split("\n") |> Enum.count(&(&1 =~ pattern))

  @tag @tag_reason
  test "disk full at runtime: not_durable, logged once, no rollback, exit status 1" do
    with_tmpfs(fn dir ->
      data = Path.join(dir, "data")
      File.mkdir_p!(data)
      c = start_cnode(args: ["--durability", "crash"], data_dir: data)
      increments(c, 10)
      filler = fill(dir)
      acked = 10 + increment_until_refused(c)
      for _ <- 1..20, do: assert(GenServer.call(counter(c), :increment) == {:error, :not_durable})
      # The increment whose write failed was refused but stays in memory; the later ones changed nothing.
      held = GenServer.call(counter(c), :get_value)
      assert held in [acked, acked + 1]
      assert count_lines(c, ~r/counter: writing the journal failed/) == 1

      # A restart while the disk is full: the new incarnation has the value, not an older file.
      old = server_pid(counter(c))
      GenServer.stop(counter(c))
      await_new_pid(counter(c), old)
      assert GenServer.call(counter(c), :get_value) == held

      # Space again: within the retry period the counter accepts again.
      File.rm!(filler)

      wait_until(
        fn -> GenServer.call(counter(c), :increment) != {:error, :not_durable} end,
        10_000,
        "the counter to accept increments again"
      )

      held = held + 1
      assert await_log_line(c, ~r/counter: the disk accepts writes again/)

      # Full again at SIGTERM: the final save fails, and the exit status says so.
      fill(dir)
      status = stop_cnode(c)
      assert status == 1, "exit status #{status} after a failed final save\n" <> log_tail(c)
      File.rm!(filler)
      c2 = restart_cnode!(c, args: ["--durability", "crash"])
      assert GenServer.call(counter(c2), :get_value) == held
      # Stopped before the tmpfs goes, so its final save has somewhere to go.
      assert stop_cnode(c2) == 0
    end)
  end

  # A tmpfs cannot be remounted read-only while a file on it is open for writing (EBUSY),
  # and crash and power modes keep their journal open: terminate mode, which opens files
  # only to save, is where a runtime remount can be tested. (The journal's EROFS path is
  # the ENOSPC one above; test/test_journal.c injects EROFS.)
  @tag @tag_reason
  test "read-only at runtime (terminate mode): a restart keeps the value, SIGTERM exits 1" do
    with_tmpfs(fn dir ->
      data = Path.join(dir, "data")
      File.mkdir_p!(data)
      c = start_cnode(args: ["--durability", "terminate"], data_dir: data)
      increments(c, 5)
      {_, 0} = System.cmd("mount", ["-o", "remount,ro", dir])
      old = server_pid(counter(c))
      GenServer.stop(counter(c))
      await_new_pid(counter(c), old)
      # The save in terminate failed (EROFS): the new incarnation has the value, not the disk's.
      assert GenServer.call(counter(c), :get_value) == 5
      assert await_log_line(c, ~r/counter: the final snapshot failed/)
      status = stop_cnode(c)
      assert status == 1, "exit status #{status} after a failed final save\n" <> log_tail(c)
      {_, 0} = System.cmd("mount", ["-o", "remount,rw", dir])
    end)
  end
end
