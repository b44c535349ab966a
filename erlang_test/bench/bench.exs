# The caller node of `make bench` (started by scripts/bench.sh, which documents the knobs).
#
# Drives the C node and the BEAM peer in one run, side by side, from plain spawned processes
# doing tight loops of GenServer.call until a deadline, and writes the figures under
# BENCH_OUT: bench.md (the printed tables), bench.json, bench.csv, memory.csv and plot.dat
# (read by bench.gp). Every loop is bounded by a deadline or a count; a watchdog halts the
# node if the whole run overstays BENCH_MAX_S. The helper modules (Bench.Env, Bench.Hist,
# Bench.Proc, Bench.Json) are in bench_lib.ex, compiled onto the code path by scripts/bench.sh.

defmodule Bench do
  @moduledoc false
  alias Bench.{Env, Hist, Proc, Rounds}

  @call_timeout 15_000
  @id_prefix "client-"

  ## Setup

  def config do
    quick = System.get_env("BENCH_QUICK", "0") == "1"

    %{
      quick: quick,
      cnode: String.to_atom(Env.str("BENCH_CNODE")),
      peer: String.to_atom(Env.str("BENCH_PEER")),
      os_pid: os_pids(),
      # The tls section's second C node, in crash mode (BENCH_CNODE_CRASH, optional).
      cnode_crash: System.get_env("BENCH_CNODE_CRASH") |> then(&(&1 && String.to_atom(&1))),
      clk_tck: Env.int("BENCH_CLK_TCK"),
      out: Env.str("BENCH_OUT"),
      cell_s: Env.num("BENCH_CELL_S"),
      rounds: Env.int("BENCH_ROUNDS") |> max(1),
      warm_s: Env.num("BENCH_WARM_S"),
      cast_s: Env.num("BENCH_CAST_S"),
      casters: Env.str("BENCH_CASTERS") |> String.split(",") |> Enum.map(&String.to_integer/1),
      ids: Env.int("BENCH_IDS"),
      mem_clients: Env.int("BENCH_MEM_CLIENTS"),
      mem_callers: Env.int("BENCH_MEM_CALLERS"),
      max_requests: Env.int("BENCH_MAX_REQUESTS"),
      window_ms: Env.int("BENCH_WINDOW_MS"),
      concurrency: Env.str("BENCH_CONCURRENCY") |> String.split(",") |> Enum.map(&String.to_integer/1),
      cnode_flags: System.get_env("BENCH_CNODE_FLAGS", ""),
      peer_flags: System.get_env("BENCH_PEER_FLAGS", ""),
      caller_flags: System.get_env("BENCH_CALLER_FLAGS", ""),
      per_us: :erlang.convert_time_unit(1, :microsecond, :native)
    }
  end

  defp os_pids do
    pids = %{cnode: Env.int("BENCH_CNODE_OSPID"), beam: Env.int("BENCH_PEER_OSPID"), caller: String.to_integer(System.pid())}
    if System.get_env("BENCH_CNODE_CRASH"), do: Map.put(pids, :cnode_crash, Env.int("BENCH_CNODE_CRASH_OSPID")), else: pids
  end

  def server(cfg, target, name), do: {name, node_of(cfg, target)}
  defp node_of(cfg, :cnode), do: cfg.cnode
  defp node_of(cfg, :beam), do: cfg.peer
  defp node_of(cfg, :cnode_crash), do: cfg.cnode_crash

  def machine do
    cpuinfo = File.read!("/proc/cpuinfo")

    model =
      cpuinfo
      |> String.split("\n")
      |> Enum.find_value("unknown", fn line ->
        case String.split(line, ":", parts: 2) do
          [k, v] -> if String.trim(k) == "model name", do: String.trim(v)
          _ -> nil
        end
      end)

    %{
      nproc: :erlang.system_info(:logical_processors_available) |> then(&if(is_integer(&1), do: &1, else: :erlang.system_info(:logical_processors))),
      cpu_model: model,
      kernel: "/proc/sys/kernel/osrelease" |> File.read!() |> String.trim(),
      otp: "OTP #{:erlang.system_info(:otp_release)} (erts #{:erlang.system_info(:version)})",
      elixir: System.version(),
      caller_schedulers: :erlang.system_info(:schedulers_online)
    }
  end

  ## Call cells

  # One cell measured once (the TLS section and the memory cells): `conc` processes calling
  # `target` for `secs` seconds after a warm-up, every call timed.
  def call_cell(cfg, target, op, conc, secs) do
    hist = Hist.new()
    cell_of(cfg, target, op, conc, hist, call_round(cfg, target, op, conc, secs, hist, nil))
  end

  # The C node's and the BEAM peer's cells of one request and caller count, measured in
  # cfg.rounds alternating rounds of cell_s / rounds seconds each (C node first in the
  # even rounds, the BEAM peer in the odd ones), every round with its own warm-up. The
  # rounds' calls, time and CPU add up and their latencies go into one histogram per
  # server, so a drift of the shared machine's speed during the pair falls on both servers
  # alike instead of on whichever was measured second.
  def call_pair(cfg, op, conc) do
    secs = cfg.cell_s / cfg.rounds
    hists = %{cnode: Hist.new(), beam: Hist.new()}

    acc = Rounds.alternate([:cnode, :beam], cfg.rounds, & &1, fn t, a -> call_round(cfg, t, op, conc, secs, hists[t], a) end)

    for t <- [:cnode, :beam], do: cell_of(cfg, t, op, conc, hists[t], acc[t])
  end

  # One round of a cell: the calls started, the seconds measured and each process's CPU
  # over them, added to `acc` (nil for the first round).
  defp call_round(cfg, target, op, conc, secs, hist, acc) do
    srv = server(cfg, target, op_server(op))
    parent = self()
    ids = :persistent_term.get({Bench, :ids})
    nids = tuple_size(ids)
    per_us = cfg.per_us

    workers =
      for w <- 0..(conc - 1) do
        spawn_monitor(fn ->
          receive do
            {:go, measure_from, deadline} ->
              start = rem(div(nids * w, conc), nids)
              i = warm(srv, op, ids, nids, start, measure_from)
              {n, _} = loop(srv, op, ids, nids, i, deadline, hist, per_us, 0)
              send(parent, {:done, self(), n})
          end
        end)
      end

    now = :erlang.monotonic_time()
    measure_from = now + sec_native(cfg.warm_s)
    deadline = measure_from + sec_native(secs)
    Enum.each(workers, fn {pid, _} -> send(pid, {:go, measure_from, deadline}) end)
    sleep_until(measure_from)
    cpu0 = cpu_all(cfg)
    t0 = :erlang.monotonic_time()
    calls = collect(workers, secs + cfg.warm_s + 60, "#{target} #{op} x#{conc}")
    t1 = :erlang.monotonic_time()
    cpu1 = cpu_all(cfg)
    elapsed = (t1 - t0) / sec_native(1)
    Rounds.add(acc, %{calls: calls, elapsed: elapsed, cpu: cpu_delta(cpu0, cpu1), rounds: 1, per_round: [round(calls / elapsed)]})
  end

  defp cpu_delta(cpu0, cpu1), do: Map.new(cpu1, fn {k, {u, s}} -> {k, {u - elem(cpu0[k], 0), s - elem(cpu0[k], 1)}} end)

  defp cell_of(cfg, target, op, conc, hist, m) do
    lat = Hist.summary(hist, [50, 90, 99, 99.9])
    counted = lat.count

    %{
      kind: "call",
      target: target,
      op: op,
      concurrency: conc,
      rounds: m.rounds,
      per_round: m.per_round,
      seconds: Float.round(m.elapsed, 3),
      calls: counted,
      calls_started: m.calls,
      ops_per_s: round(counted / m.elapsed),
      p50_us: lat[50],
      p90_us: lat[90],
      p99_us: lat[99],
      p999_us: lat[99.9],
      max_us: lat.max
    }
    |> Map.merge(cpu_figures(cfg, target, m.cpu, counted, m.elapsed))
  end

  defp op_server(:increment), do: :counter
  defp op_server(:check_rate), do: :rate_limiter
  defp op_server(:cast), do: :counter

  defp warm(srv, op, ids, nids, i, until) do
    if :erlang.monotonic_time() < until do
      one(srv, op, ids, i)
      warm(srv, op, ids, nids, next(i, nids), until)
    else
      i
    end
  end

  # i: the next id index; c: calls done (each one timed into the histogram, the last one too).
  # Returns {calls, next id index}.
  defp loop(srv, op, ids, nids, i, deadline, hist, per_us, c) do
    t0 = :erlang.monotonic_time()
    one(srv, op, ids, i)
    t1 = :erlang.monotonic_time()
    Hist.add(hist, div(t1 - t0, per_us))

    if t1 < deadline do
      loop(srv, op, ids, nids, next(i, nids), deadline, hist, per_us, c + 1)
    else
      {c + 1, i}
    end
  end

  defp next(i, n) when i + 1 == n, do: 0
  defp next(i, _), do: i + 1

  defp one(srv, :increment, _ids, _i) do
    v = GenServer.call(srv, :increment, @call_timeout)
    true = is_integer(v)
  end

  defp one(srv, :check_rate, ids, i) do
    case GenServer.call(srv, {:check_rate, elem(ids, i)}, @call_timeout) do
      {:ok, _} -> :ok
      other -> exit({:unexpected_reply, other})
    end
  end

  defp collect(workers, timeout_s, what) do
    deadline = System.monotonic_time(:millisecond) + round(timeout_s * 1000)

    Enum.reduce(workers, 0, fn {pid, mref}, acc ->
      left = max(deadline - System.monotonic_time(:millisecond), 0)

      receive do
        {:done, ^pid, n} ->
          Process.demonitor(mref, [:flush])
          acc + n

        {:DOWN, ^mref, :process, ^pid, reason} ->
          abort("a caller of #{what} died: #{inspect(reason)}")
      after
        left -> abort("#{what}: the callers did not finish within #{timeout_s} s")
      end
    end)
  end

  def abort(msg) do
    IO.puts(:stderr, "bench: " <> msg)
    System.halt(1)
  end

  defp sec_native(s), do: round(s * :erlang.convert_time_unit(1, :second, :native))

  defp sleep_until(t) do
    ms = :erlang.convert_time_unit(t - :erlang.monotonic_time(), :native, :millisecond)
    if ms > 0, do: Process.sleep(ms)
  end

  defp cpu_all(cfg) do
    cfg.os_pid
    |> Map.new(fn {k, pid} -> {k, Proc.cpu_us(pid, cfg.clk_tck)} end)
    |> Map.put(:machine, Proc.machine_busy_us(cfg.clk_tck))
  end

  # cpu: each process's {user, system} µs over the measured rounds.
  defp cpu_figures(cfg, target, cpu, ops, elapsed) do
    {u, s} = cpu[target]
    d = fn k -> Tuple.sum(cpu[k]) end
    other = if target == :cnode, do: :beam, else: :cnode
    per = fn k -> if ops > 0, do: Float.round(d.(k) / ops, 2), else: nil end

    %{
      server_cpu_us: d.(target),
      server_cpu_user_us: u,
      server_cpu_sys_us: s,
      server_cpu_sys_fraction: if(d.(target) > 0, do: Float.round(s / d.(target), 2)),
      server_cpu_us_per_op: per.(target),
      server_cpu_share: Float.round(d.(target) / 1.0e6 / elapsed, 3),
      caller_cpu_us_per_op: per.(:caller),
      caller_cpu_sys_fraction: if(d.(:caller) > 0, do: Float.round(elem(cpu.caller, 1) / d.(:caller), 2)),
      caller_cpu_share: Float.round(d.(:caller) / 1.0e6 / elapsed, 3),
      idle_node_cpu_us: d.(other),
      # CPU the machine spent on anything but the three nodes (other users, the kernel's own
      # threads), in cores: a busy neighbour shows up here.
      foreign_cpu_share: Float.round(max(d.(:machine) - nodes_cpu(cfg, d), 0) / 1.0e6 / elapsed, 2),
      clk_tck: cfg.clk_tck
    }
  end

  # The CPU of all the run's nodes (the tls section's crash-mode C node too) between two samples.
  defp nodes_cpu(cfg, d), do: cfg.os_pid |> Map.keys() |> Enum.map(d) |> Enum.sum()

  ## Casts

  # The C node's and the BEAM peer's cast cells for `casters` processes, measured in
  # alternating rounds as the call cells are (call_pair): casts, time and CPU add up.
  def cast_pair(cfg, casters) do
    secs = cfg.cast_s / cfg.rounds
    acc = Rounds.alternate([:cnode, :beam], cfg.rounds, & &1, fn t, a -> cast_round(cfg, t, secs, casters, a) end)
    for t <- [:cnode, :beam], do: cast_cell_of(cfg, t, casters, acc[t])
  end

  # One round: `casters` processes cast :increment until the deadline, then each makes one
  # call (ordering per pair of processes: its casts are applied before that call's reply);
  # the final :get_value must have grown by exactly the casts sent. Added to `acc` (nil in
  # the first round).
  defp cast_round(cfg, target, secs, casters, acc) do
    srv = server(cfg, target, :counter)
    parent = self()
    v0 = GenServer.call(srv, :get_value, @call_timeout)

    workers =
      for _ <- 1..casters do
        spawn_monitor(fn ->
          receive do
            {:go, deadline} ->
              n = cast_loop(srv, deadline, 0)
              _ = GenServer.call(srv, :get_value, 120_000)
              send(parent, {:done, self(), n})
          end
        end)
      end

    cpu0 = cpu_all(cfg)
    t0 = :erlang.monotonic_time()
    deadline = t0 + sec_native(secs)
    Enum.each(workers, fn {pid, _} -> send(pid, {:go, deadline}) end)
    sent = collect(workers, secs + 150, "#{target} cast")
    t_sent = :erlang.monotonic_time()
    v1 = GenServer.call(srv, :get_value, @call_timeout)
    t1 = :erlang.monotonic_time()
    cpu1 = cpu_all(cfg)
    applied = v1 - v0

    if applied != sent do
      abort("#{target}: #{sent} casts sent but the counter grew by #{applied}")
    end

    elapsed = (t1 - t0) / sec_native(1)
    Rounds.add(acc, %{
      sent: sent,
      elapsed: elapsed,
      send_elapsed: (t_sent - t0) / sec_native(1),
      cpu: cpu_delta(cpu0, cpu1),
      rounds: 1,
      per_round: [round(sent / elapsed)]
    })
  end

  defp cast_cell_of(cfg, target, casters, m) do
    %{
      kind: "cast",
      target: target,
      op: :cast,
      concurrency: casters,
      rounds: m.rounds,
      per_round: m.per_round,
      seconds: Float.round(m.elapsed, 3),
      send_seconds: Float.round(m.send_elapsed, 3),
      calls: m.sent,
      applied: m.sent,
      ops_per_s: round(m.sent / m.elapsed)
    }
    |> Map.merge(cpu_figures(cfg, target, m.cpu, m.sent, m.elapsed))
  end

  defp cast_loop(srv, deadline, n) do
    GenServer.cast(srv, :increment)

    if :erlang.monotonic_time() < deadline,
      do: cast_loop(srv, deadline, n + 1),
      else: n + 1
  end

  ## Memory

  # `clients` distinct new ids, one check_rate each, from many callers; every reply must
  # be {:ok, max - 1} (a fresh client). RSS of the server's OS process before and after;
  # for the BEAM peer also the RateLimiter process's own memory (after a forced GC).
  def memory_cell(cfg, target, clients) do
    srv = server(cfg, target, :rate_limiter)
    os_pid = cfg.os_pid[target]
    conc = cfg.mem_callers
    expect = {:ok, cfg.max_requests - 1}
    parent = self()
    rss0 = Proc.rss_bytes(os_pid)
    probe0 = rl_probe(cfg, target)
    rss0b = Proc.rss_bytes(os_pid)
    t0 = :erlang.monotonic_time()

    workers =
      for w <- 0..(conc - 1) do
        spawn_monitor(fn ->
          n = mem_loop(srv, w, conc, clients, expect, 0)
          send(parent, {:done, self(), n})
        end)
      end

    # Ten minutes, plus a second per 10,000 clients for fills of millions.
    done = collect(workers, 600 + div(clients, 10_000), "#{target} memory")
    t1 = :erlang.monotonic_time()
    rss1 = Proc.rss_bytes(os_pid)
    probe1 = rl_probe(cfg, target)
    if done != clients, do: abort("#{target} memory: #{done} of #{clients} calls")
    elapsed = (t1 - t0) / sec_native(1)

    %{
      target: target,
      clients: clients,
      seconds: Float.round(elapsed, 3),
      calls_per_s: round(clients / elapsed),
      rss_before: rss0b,
      rss_after: rss1,
      rss_bytes_per_client: Float.round((rss1 - rss0b) / clients, 1),
      rss_probe_growth: rss0b - rss0,
      process_memory_before: probe0[:process],
      process_memory_after: probe1[:process],
      process_bytes_per_client: per_client(probe0[:process], probe1[:process], clients),
      state_bytes_before: probe0[:state],
      state_bytes_after: probe1[:state],
      state_bytes_per_client: per_client(probe0[:state], probe1[:state], clients),
      clients_before: probe0[:clients],
      clients_after: probe1[:clients]
    }
  end

  defp mem_loop(srv, k, step, clients, expect, n) when k < clients do
    id = @id_prefix <> Integer.to_string(1_000_000_000 + k)

    case GenServer.call(srv, {:check_rate, id}, @call_timeout) do
      ^expect -> mem_loop(srv, k + step, step, clients, expect, n + 1)
      other -> exit({:not_a_fresh_client, id, other})
    end
  end

  defp mem_loop(_srv, _k, _step, _clients, _expect, n), do: n

  defp rl_probe(_cfg, :cnode), do: %{}
  defp rl_probe(cfg, :beam), do: :erpc.call(cfg.peer, BenchPeer, :rate_limiter_memory, [], 120_000)

  defp per_client(nil, _, _), do: nil
  defp per_client(a, b, n), do: Float.round((b - a) / n, 1)

  # check_rate calls/s at the highest concurrency over `ids` (the call cells' round robin),
  # to compare the rate limiter at 1,000 clients with the filled table.
  defp size_cell(cfg, target, ids, what) do
    :persistent_term.put({Bench, :ids}, ids)
    conc = Enum.max(cfg.concurrency)
    c = call_cell(cfg, target, :check_rate, conc, cfg.cell_s)
    log("check_rate x#{pad(conc, 3)} #{pad(target, 5)}: #{pad(c.ops_per_s, 7)} calls/s over #{what}, p99 #{c.p99_us} µs")
    c
  end

  defp hot_ids, do: List.to_tuple(for i <- 0..999, do: "hot-" <> Integer.to_string(i))

  # Ids of the memory fill, drawn at random (fixed seed): each call finds a client among
  # all of them, the table's cache-missing worst case.
  defp filled_ids(clients) do
    :rand.seed(:exsss, {1, 2, 3})
    List.to_tuple(for _ <- 1..100_000, do: @id_prefix <> Integer.to_string(1_000_000_000 + :rand.uniform(clients) - 1))
  end

  ## The run

  def main do
    if System.get_env("BENCH_TLS", "0") == "1", do: tls_main(), else: plain_main()
  end

  defp plain_main do
    cfg = config()
    File.mkdir_p!(cfg.out)
    mach = machine()
    log("machine: #{mach.nproc} cores, #{mach.cpu_model}, Linux #{mach.kernel}; #{mach.otp}, Elixir #{mach.elixir}")

    log(
      "C node #{cfg.cnode} (os pid #{cfg.os_pid.cnode}), BEAM peer #{cfg.peer} (os pid #{cfg.os_pid.beam}), " <>
        "caller #{node()} (os pid #{cfg.os_pid.caller}, #{mach.caller_schedulers} schedulers)"
    )

    ids = List.to_tuple(for i <- 0..(cfg.ids - 1), do: @id_prefix <> Integer.to_string(i))
    :persistent_term.put({Bench, :ids}, ids)

    for target <- [:cnode, :beam] do
      node = node_of(cfg, target)
      true = Node.connect(node) || abort("cannot connect to #{node}")
      0 = GenServer.call(server(cfg, target, :counter), :get_value, @call_timeout)
      {:ok, _} = GenServer.call(server(cfg, target, :rate_limiter), {:check_rate, "warm-up"}, @call_timeout)
    end

    cells =
      for op <- [:increment, :check_rate], conc <- cfg.concurrency, cell <- call_pair(cfg, op, conc) do
        log(
          "#{pad(op, 10)} x#{pad(conc, 3)} #{pad(cell.target, 5)}: #{pad(cell.ops_per_s, 7)} calls/s, " <>
            "p50 #{cell.p50_us} µs, p99 #{cell.p99_us} µs, server #{cell.server_cpu_us_per_op} µs CPU/call, " <>
            "caller #{cell.caller_cpu_us_per_op} µs CPU/call, other load #{cell.foreign_cpu_share} cores" <>
            " (#{cell.rounds} rounds: #{Enum.join(cell.per_round, ", ")} calls/s)"
        )

        cell
      end

    casts =
      for casters <- cfg.casters, c <- cast_pair(cfg, casters) do
        log(
          "cast       x#{pad(casters, 3)} #{pad(c.target, 5)}: #{pad(c.ops_per_s, 7)} casts/s end to end " <>
            "(#{c.calls} sent in #{c.send_seconds} s, all applied after #{c.seconds} s), server #{c.server_cpu_us_per_op} µs CPU/cast, " <>
            "other load #{c.foreign_cpu_share} cores (#{c.rounds} rounds: #{Enum.join(c.per_round, ", ")} casts/s)"
        )

        c
      end

    memory =
      for target <- [:cnode, :beam] do
        small = size_cell(cfg, target, hot_ids(), "1000 ids before the fill")
        m = memory_cell(cfg, target, cfg.mem_clients)
        hot = size_cell(cfg, target, hot_ids(), "1000 ids at #{cfg.mem_clients} clients")
        spread = size_cell(cfg, target, filled_ids(cfg.mem_clients), "100000 random filled ids")
        :persistent_term.put({Bench, :ids}, ids)
        m = Map.merge(m, %{size_conc: small.concurrency, rl_1k_calls_per_s: small.ops_per_s, rl_filled_hot_calls_per_s: hot.ops_per_s, rl_filled_random_calls_per_s: spread.ops_per_s})
        extra =
          if m.process_bytes_per_client,
            do: ", RateLimiter process #{m.process_bytes_per_client} B/client, its state #{m.state_bytes_per_client} B/client",
            else: ""

        log(
          "memory     #{pad(target, 5)}: #{m.clients} clients in #{m.seconds} s (#{m.calls_per_s} calls/s), " <>
            "RSS #{mib(m.rss_before)} -> #{mib(m.rss_after)} MiB = #{m.rss_bytes_per_client} B/client" <> extra
        )

        m
      end

    report(cfg, mach, cells, casts, memory)
  end

  # The TLS row (BENCH_TLS=1): the same call cells, with the C node, the BEAM peer and this
  # caller all started with TLS distribution (scripts/bench.sh makes the certificates), so
  # the servers' CPU per call includes their TLS. Writes tls.md and tls.json.
  defp tls_main do
    cfg = config()
    File.mkdir_p!(cfg.out)
    log("TLS distribution: C node #{cfg.cnode}, BEAM peer #{cfg.peer}, caller #{node()}, all -proto_dist inet_tls")
    ids = List.to_tuple(for i <- 0..(cfg.ids - 1), do: @id_prefix <> Integer.to_string(i))
    :persistent_term.put({Bench, :ids}, ids)
    # The C node in terminate mode, as the BEAM peer keeps its state (in memory, saved in
    # terminate); then, when scripts/bench.sh started it, a C node in its default crash mode.
    targets = [:cnode, :beam] ++ if(cfg.cnode_crash, do: [:cnode_crash], else: [])

    for target <- targets do
      node = node_of(cfg, target)
      true = Node.connect(node) || abort("cannot connect to #{node} over TLS")
      0 = GenServer.call(server(cfg, target, :counter), :get_value, @call_timeout)
    end

    cells =
      for op <- [:increment, :check_rate], conc <- cfg.concurrency, target <- targets do
        cell = call_cell(cfg, target, op, conc, cfg.cell_s)

        log(
          "TLS #{pad(op, 10)} x#{pad(conc, 3)} #{pad(target, 11)}: #{pad(cell.ops_per_s, 7)} calls/s, " <>
            "p99 #{cell.p99_us} µs, server #{cell.server_cpu_us_per_op} µs CPU/call, " <>
            "caller #{cell.caller_cpu_us_per_op} µs CPU/call"
        )

        cell
      end

    rows =
      for op <- [:increment, :check_rate], conc <- cfg.concurrency do
        c = find(cells, :cnode, op, conc)
        b = find(cells, :beam, op, conc)

        [
          "| `#{inspect(op)}` calls/s, #{conc} caller(s) | #{fmt(c.ops_per_s)} | #{fmt(b.ops_per_s)} | **#{fmt(ratio(c.ops_per_s, b.ops_per_s))}** |",
          "| p99 µs, #{conc} caller(s), `#{inspect(op)}` | #{c.p99_us} | #{b.p99_us} | #{fmt(ratio(c.p99_us, b.p99_us))} |",
          "| server CPU µs per call, #{conc} caller(s), `#{inspect(op)}` | #{fmt(c.server_cpu_us_per_op)} | " <>
            "#{fmt(b.server_cpu_us_per_op)} | **#{fmt(ratio(c.server_cpu_us_per_op, b.server_cpu_us_per_op))}** |"
          | crash_rows(cells, op, conc, b)
        ]
      end

    md =
      Enum.join(
        [
          "## make bench: TLS distribution (inet_tls, mutual verification, every node)",
          "",
          "C node: `--durability terminate`, as the BEAM peer keeps its state in memory and saves it in terminate." <>
            if(cfg.cnode_crash, do: " Rows marked crash: a second C node in its default `--durability crash` (a journal write per loop turn).", else: ""),
          "",
          "| figure over TLS | C node | BEAM peer | C/BEAM |",
          "|---|---:|---:|---:|"
          | List.flatten(rows)
        ],
        "\n"
      ) <> "\n"

    IO.puts("\n" <> md)
    File.write!(Path.join(cfg.out, "tls.md"), md)
    File.write!(Path.join(cfg.out, "tls.json"), Bench.Json.encode(%{tls_calls: cells}) <> "\n")
  end

  # The crash-mode C node's rows beside the BEAM peer's, when it ran.
  defp crash_rows(cells, op, conc, b) do
    case find(cells, :cnode_crash, op, conc) do
      nil ->
        []

      k ->
        [
          "| crash: `#{inspect(op)}` calls/s, #{conc} caller(s) | #{fmt(k.ops_per_s)} | #{fmt(b.ops_per_s)} | #{fmt(ratio(k.ops_per_s, b.ops_per_s))} |",
          "| crash: server CPU µs per call, #{conc} caller(s), `#{inspect(op)}` | #{fmt(k.server_cpu_us_per_op)} | " <>
            "#{fmt(b.server_cpu_us_per_op)} | #{fmt(ratio(k.server_cpu_us_per_op, b.server_cpu_us_per_op))} |"
        ]
    end
  end

  defp log(line), do: IO.puts("[#{Time.utc_now() |> Time.truncate(:second)}] " <> line)
  defp pad(v, n), do: v |> to_string() |> String.pad_leading(n)
  defp mib(b), do: Float.round(b / 1_048_576, 1)

  ## Report

  defp find(cells, target, op, conc), do: Enum.find(cells, &(&1.target == target and &1.op == op and &1.concurrency == conc))

  defp ratio(_a, nil), do: nil
  defp ratio(nil, _b), do: nil
  defp ratio(_a, b) when b == 0, do: nil
  defp ratio(a, b), do: Float.round(a / b, 2)

  defp fmt(nil), do: "-"
  defp fmt(v) when is_float(v), do: :erlang.float_to_binary(v, decimals: 2)
  defp fmt(v) when is_integer(v) and v >= 10_000, do: v |> Integer.to_string() |> group()
  defp fmt(v), do: to_string(v)

  defp foreign_note(rows) do
    worst = Enum.max_by(rows, & &1.foreign_cpu_share)
    mean = Float.round(Enum.sum(Enum.map(rows, & &1.foreign_cpu_share)) / length(rows), 2)

    "CPU used on the machine by anything but the three nodes during the cells (/proc/stat): mean #{mean} " <>
      "cores, at most #{worst.foreign_cpu_share} (#{worst.target} #{worst.op} x#{worst.concurrency})" <>
      if(worst.foreign_cpu_share >= 0.1, do: ": **the machine was not quiet; the figures are disturbed**.", else: ".")
  end

  defp mem_ratio(c, b), do: if(b.rss_bytes_per_client > 0, do: ratio(c.rss_bytes_per_client, b.rss_bytes_per_client))

  defp cpu_cell(r), do: "#{fmt(r.server_cpu_us_per_op)} (#{round((r.server_cpu_sys_fraction || 0) * 100)} % sys)"

  defp group(s), do: s |> String.reverse() |> String.to_charlist() |> Enum.chunk_every(3) |> Enum.join(" ") |> String.reverse()

  defp report(cfg, mach, cells, casts, memory) do
    lo = Enum.min(cfg.concurrency)
    hi = Enum.max(cfg.concurrency)
    top_casters = Enum.max(cfg.casters)
    c_cast = find(casts, :cnode, :cast, top_casters)
    b_cast = find(casts, :beam, :cast, top_casters)
    c_mem = Enum.find(memory, &(&1.target == :cnode))
    b_mem = Enum.find(memory, &(&1.target == :beam))
    ci = find(cells, :cnode, :increment, hi)
    cr = find(cells, :cnode, :check_rate, hi)

    # The most C/BEAM could be on this machine if the C server cost nothing: every core
    # working for the caller, at the CPU per call the caller spent in the BEAM run.
    ceiling = fn b ->
      if b.caller_cpu_us_per_op && b.caller_cpu_us_per_op > 0,
        do: ratio(mach.nproc * 1.0e6 / b.caller_cpu_us_per_op, b.ops_per_s)
    end

    target_rows =
      [
        {"calls/s, #{hi} callers, C/BEAM, :increment", ci, find(cells, :beam, :increment, hi), :ge, 2.5},
        {"calls/s, #{hi} callers, C/BEAM, :check_rate", cr, find(cells, :beam, :check_rate, hi), :ge, 2.5},
        {"calls/s, #{lo} caller, C/BEAM, :increment", find(cells, :cnode, :increment, lo), find(cells, :beam, :increment, lo), :ge, 2.0},
        {"calls/s, #{lo} caller, C/BEAM, :check_rate", find(cells, :cnode, :check_rate, lo), find(cells, :beam, :check_rate, lo), :ge, 2.0},
        {"casts/s end to end, #{top_casters} caster(s), C/BEAM", c_cast, b_cast, :ge, 2.5},
        {"C node CPU µs per call, #{hi} callers, :increment", ci.server_cpu_us_per_op, nil, :le, 2.0},
        {"C node CPU µs per call, #{hi} callers, :check_rate", cr.server_cpu_us_per_op, nil, :le, 2.0},
        {"rate limiter bytes per client (C node RSS), #{c_mem.clients} clients", c_mem.rss_bytes_per_client, nil, :le, 150.0},
        {"C node check_rate calls/s / increment calls/s, #{hi} callers", ratio(cr.ops_per_s, ci.ops_per_s), nil, :ge, 0.9}
      ]
      |> Enum.map(fn
        {name, %{} = c, %{} = b, cmp, goal} -> {name, ratio(c.ops_per_s, b.ops_per_s), ceiling.(b), cmp, goal}
        {name, v, nil, cmp, goal} -> {name, v, nil, cmp, goal}
      end)
      |> Enum.map(fn {name, v, ceil, cmp, goal} ->
        pass = v != nil and if(cmp == :ge, do: v >= goal, else: v <= goal)
        %{figure: name, measured: v, ceiling: ceil, goal: "#{if cmp == :ge, do: "≥", else: "≤"} #{goal}", pass: pass}
      end)

    call_rows =
      for op <- [:increment, :check_rate], conc <- cfg.concurrency do
        c = find(cells, :cnode, op, conc)
        b = find(cells, :beam, op, conc)

        "| #{op} | #{conc} | #{fmt(c.ops_per_s)} | #{fmt(b.ops_per_s)} | **#{fmt(ratio(c.ops_per_s, b.ops_per_s))}** | " <>
          "#{c.p50_us} / #{c.p99_us} | #{b.p50_us} / #{b.p99_us} | #{cpu_cell(c)} | #{cpu_cell(b)} | " <>
          "#{fmt(ratio(c.server_cpu_us_per_op, b.server_cpu_us_per_op))} | #{fmt(c.caller_cpu_us_per_op)} / #{fmt(b.caller_cpu_us_per_op)} |"
      end

    cast_rows =
      for n <- cfg.casters, target <- [:cnode, :beam] do
        r = find(casts, target, :cast, n)
        other = find(casts, :beam, :cast, n)
        rat = if target == :cnode, do: "**#{fmt(ratio(r.ops_per_s, other.ops_per_s))}**", else: ""

        "| #{n} | #{if target == :cnode, do: "C node", else: "BEAM peer"} | #{fmt(r.calls)} | #{r.send_seconds} | #{r.seconds} | " <>
          "#{fmt(r.ops_per_s)} | #{rat} | #{cpu_cell(r)} | #{fmt(r.caller_cpu_us_per_op)} |"
      end

    rl_ratios =
      for conc <- cfg.concurrency do
        "#{conc}: #{fmt(ratio(find(cells, :cnode, :check_rate, conc).ops_per_s, find(cells, :cnode, :increment, conc).ops_per_s))}"
      end

    md = """
    ## make bench#{if cfg.quick, do: " (BENCH_QUICK=1 smoke run: short cells, fewer memory clients; not for comparison)", else: ""}

    Machine: #{mach.nproc} cores (#{mach.cpu_model}), Linux #{mach.kernel}, #{mach.otp}, Elixir #{mach.elixir}.
    All three nodes (C node, BEAM peer, caller) share these #{mach.nproc} cores, so a server's CPU
    share is taken from the caller; one target is driven at a time, the other one idles.

    Per call cell #{cfg.cell_s} s measured after #{cfg.warm_s} s of warm-up; every call is timed.
    check_rate goes round-robin over #{fmt(cfg.ids)} distinct binary ids (\"client-N\"); max_requests
    #{fmt(cfg.max_requests)}, window_ms #{fmt(cfg.window_ms)} on both targets, so no request is refused.
    CPU is utime+stime of the server's OS process from /proc/PID/stat (CLK_TCK #{cfg.clk_tck}) over the
    measured part of the cell, divided by the calls; the BEAM peer's figure is its whole VM.
    Flags: C node `#{cfg.cnode_flags}`; BEAM peer `#{cfg.peer_flags}`; caller `#{cfg.caller_flags}`.

    #{foreign_note(cells ++ casts)}

    ### GenServer.call

    | request | callers | C calls/s | BEAM calls/s | C/BEAM | C p50 / p99 µs | BEAM p50 / p99 µs | C CPU µs/call (kernel share) | BEAM CPU µs/call (kernel share) | CPU C/BEAM | caller CPU µs/call (C run / BEAM run) |
    |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
    #{Enum.join(call_rows, "\n")}

    C node check_rate calls/s / increment calls/s, by callers: #{Enum.join(rl_ratios, ", ")}.

    ### GenServer.cast(:increment), end to end

    N caster processes cast for #{Float.round(cfg.cast_s / cfg.rounds, 2)} s, then each makes a call (its casts are applied before the
    reply) and a final :get_value proves every cast was applied (asserted: the value grew by exactly the
    casts sent); #{cfg.rounds} such rounds per target, alternating with the other target's, the order
    swapped every round. casts/s = casts / (time from the first cast until that reply), summed over the rounds.

    | casters | target | casts sent | send time s | until all applied s | casts/s | C/BEAM | server CPU µs/cast (kernel share) | caller CPU µs/cast |
    |---:|---|---:|---:|---:|---:|---:|---:|---:|
    #{Enum.map_join(cast_rows, "\n", & &1)}

    ### Rate limiter memory, #{fmt(c_mem.clients)} new clients with one request each

    #{cfg.mem_callers} callers, one {:check_rate, id} per new id (every reply asserted {:ok, max - 1}).
    RSS is VmRSS of the server's OS process (/proc/PID/status) before and after: the C/BEAM ratio compares
    RSS with RSS. For the BEAM peer also the RateLimiter process's memory (:erlang.process_info(pid, :memory)
    after a forced GC) and the flat size of its state (:erts_debug.flat_size: the map, ids and lists alone),
    before and after. The limiter already holds the ids the call cells used (up to #{fmt(cfg.ids)}). A BEAM RSS delta
    is only meaningful when the fill outgrows what its allocators had cached (not so in a quick run).

    | target | RSS before MiB | RSS after MiB | RSS B/client | process B/client | state B/client | fill calls/s |
    |---|---:|---:|---:|---:|---:|---:|
    | C node | #{mib(c_mem.rss_before)} | #{mib(c_mem.rss_after)} | #{fmt(c_mem.rss_bytes_per_client)} | - | - | #{fmt(c_mem.calls_per_s)} |
    | BEAM peer | #{mib(b_mem.rss_before)} | #{mib(b_mem.rss_after)} | #{fmt(b_mem.rss_bytes_per_client)} | #{fmt(b_mem.process_bytes_per_client)} | #{fmt(b_mem.state_bytes_per_client)} | #{fmt(b_mem.calls_per_s)} |
    | C/BEAM | | | **#{fmt(mem_ratio(c_mem, b_mem))}** | #{fmt(ratio(c_mem.rss_bytes_per_client, b_mem.process_bytes_per_client))} | #{fmt(ratio(c_mem.rss_bytes_per_client, b_mem.state_bytes_per_client))} | #{fmt(ratio(c_mem.calls_per_s, b_mem.calls_per_s))} |

    Issue 13's figure: C node RSS bytes per client / the BEAM RateLimiter process's bytes per client,
    #{fmt(c_mem.rss_bytes_per_client)} / #{fmt(b_mem.process_bytes_per_client)} = **#{fmt(ratio(c_mem.rss_bytes_per_client, b_mem.process_bytes_per_client))}** (target <= 0.5).

    check_rate calls/s with #{c_mem.size_conc} callers: over 1,000 ids before the fill, over 1,000 ids once the
    table holds the #{fmt(c_mem.clients)} filled clients, and over 100,000 filled ids drawn at random (each call
    a client somewhere in the big table). "Before the fill" the table also holds the call cells' ids (up to
    #{fmt(cfg.ids)}). Filled/1,000 is the ratio issue 13 asks to be >= 1 (noisy on a shared machine).

    | target | 1,000 ids | 1,000 ids, filled | random filled ids | filled/1,000 | random/1,000 |
    |---|---:|---:|---:|---:|---:|
    #{Enum.map_join([c_mem, b_mem], "\n", fn m -> "| #{m.target} | #{fmt(m.rl_1k_calls_per_s)} | #{fmt(m.rl_filled_hot_calls_per_s)} | #{fmt(m.rl_filled_random_calls_per_s)} | #{fmt(ratio(m.rl_filled_hot_calls_per_s, m.rl_1k_calls_per_s))} | #{fmt(ratio(m.rl_filled_random_calls_per_s, m.rl_1k_calls_per_s))} |" end)}

    ### Targets (issue 5)

    The ceiling of a C/BEAM throughput ratio is what it would be if the C server cost no CPU at
    all: #{mach.nproc} cores × 10⁶ / (the caller's CPU µs per call in the BEAM run), over the BEAM
    calls/s. The caller node's own work bounds every throughput figure on a machine this size.

    | figure | measured | ceiling | target | result |
    |---|---:|---:|---:|---|
    #{Enum.map_join(target_rows, "\n", fn r -> "| #{r.figure} | #{fmt(r.measured)} | #{fmt(r.ceiling)} | #{r.goal} | #{if r.pass, do: "pass", else: "FAIL"} |" end)}
    """

    IO.puts("\n" <> md)
    File.write!(Path.join(cfg.out, "bench.md"), md)

    json = %{
      quick: cfg.quick,
      machine: mach,
      config: Map.drop(cfg, [:os_pid, :per_us, :out]) |> Map.update!(:cnode, &to_string/1) |> Map.update!(:peer, &to_string/1),
      calls: cells,
      casts: casts,
      memory: memory,
      targets: target_rows
    }

    File.write!(Path.join(cfg.out, "bench.json"), Bench.Json.encode(json) <> "\n")

    cols = [:kind, :target, :op, :concurrency, :seconds, :calls, :ops_per_s, :p50_us, :p90_us, :p99_us, :p999_us, :max_us, :server_cpu_us_per_op, :server_cpu_sys_fraction, :server_cpu_share, :caller_cpu_us_per_op, :caller_cpu_sys_fraction, :caller_cpu_share, :foreign_cpu_share]
    csv = [Enum.join(cols, ",") | Enum.map(cells ++ casts, fn r -> Enum.map_join(cols, ",", &csv_val(Map.get(r, &1))) end)]
    File.write!(Path.join(cfg.out, "bench.csv"), Enum.join(csv, "\n") <> "\n")

    mcols = [:target, :clients, :seconds, :calls_per_s, :rss_before, :rss_after, :rss_bytes_per_client, :process_memory_before, :process_memory_after, :process_bytes_per_client, :state_bytes_before, :state_bytes_after, :state_bytes_per_client, :rl_1k_calls_per_s, :rl_filled_hot_calls_per_s, :rl_filled_random_calls_per_s]
    mcsv = [Enum.join(mcols, ",") | Enum.map(memory, fn r -> Enum.map_join(mcols, ",", &csv_val(Map.get(r, &1))) end)]
    File.write!(Path.join(cfg.out, "memory.csv"), Enum.join(mcsv, "\n") <> "\n")

    # plot.dat: one line per (request, callers): label, C calls/s, BEAM calls/s, C p99, BEAM p99.
    plot =
      for op <- [:increment, :check_rate], conc <- cfg.concurrency do
        c = find(cells, :cnode, op, conc)
        b = find(cells, :beam, op, conc)
        "\"#{op} x#{conc}\" #{c.ops_per_s} #{b.ops_per_s} #{c.p99_us} #{b.p99_us}"
      end ++
        for n <- cfg.casters do
          "\"cast x#{n}\" #{find(casts, :cnode, :cast, n).ops_per_s} #{find(casts, :beam, :cast, n).ops_per_s} NaN NaN"
        end

    File.write!(Path.join(cfg.out, "plot.dat"), "# label c_ops beam_ops c_p99_us beam_p99_us\n" <> Enum.join(plot, "\n") <> "\n")
    File.write!(Path.join(cfg.out, "plot.title"), "#{mach.nproc} cores #{mach.cpu_model}, #{mach.otp}, Elixir #{mach.elixir}#{if cfg.quick, do: " (quick smoke run)", else: ""}\n")
  end

  defp csv_val(nil), do: ""
  defp csv_val(v), do: to_string(v)
end

max_s = Bench.Env.int("BENCH_MAX_S")

spawn(fn ->
  Process.sleep(max_s * 1000)
  IO.puts(:stderr, "bench: the run took longer than #{max_s} s; halting")
  System.halt(3)
end)

Bench.main()
