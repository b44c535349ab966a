# The caller node of the durability section of `make bench` (started by scripts/bench.sh,
# which starts the servers and documents the knobs).
#
# One caller node drives, one at a time, the C node in each durability mode (one C node per
# mode, started with --durability MODE) and a Redis server per matched appendfsync setting,
# with :increment / INCR and check_rate / the usual sorted-set sliding-window script, at each
# number of callers. Every call is timed. Matched pairs run back to back, so a neighbour's load
# disturbs both sides of a ratio alike. Writes durability.md, durability.csv and
# durability.json under BENCH_OUT. Bounded: every loop by a deadline, the run by BENCH_MAX_S.
#
# Environment (set by scripts/bench.sh): BENCH_DUR_TARGETS, a space-separated list of
# cnode:MODE:NODE:OSPID and redis:MODE:PORT:OSPID (MODE is ours: terminate, crash, power);
# BENCH_DUR_CELL_S, BENCH_DUR_WARM_S, BENCH_DUR_CALLERS, BENCH_IDS,
# BENCH_DUR_MAX_REQUESTS, BENCH_DUR_WINDOW_MS, BENCH_CLK_TCK, BENCH_OUT, BENCH_MAX_S.

defmodule Durability do
  @moduledoc false
  alias Bench.{Env, Hist, Proc, Resp, Rounds}

  @call_timeout 15_000
  @modes [:terminate, :crash, :power]
  # Our mode -> the appendfsync it is compared with (the issue's matching; the README and
  # the report say what each one survives).
  @fsync %{terminate: "no", crash: "everysec", power: "always"}

  # The sliding-window limiter as Redis users write it: one sorted set per client, scored
  # by the time of each accepted request, in one script so it is atomic. The time is the
  # server's (TIME; Redis 7 replicates and journals a script's effects, so this is allowed),
  # as our node uses its own clock. A request counts when now - t < window, as in our
  # limiter. ARGV: window ms, limit, a member unique to the request. Returns what is left
  # after this request, or -1 when it is refused.
  @limiter_lua """
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local window = tonumber(ARGV[1])
  local limit = tonumber(ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[1])
  if count >= limit then
    return -1
  end
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return limit - count - 1
  """

  def limiter_lua, do: @limiter_lua
  def fsync_of(mode), do: Map.fetch!(@fsync, mode)

  ## Setup

  def config do
    targets =
      Env.str("BENCH_DUR_TARGETS")
      |> String.split()
      |> Enum.map(fn t ->
        [server, mode, addr, os_pid] = String.split(t, ":", parts: 4)
        mode = String.to_existing_atom(mode)
        true = mode in @modes

        case server do
          "cnode" -> %{server: :cnode, mode: mode, node: String.to_atom(addr), os_pid: String.to_integer(os_pid)}
          "redis" -> %{server: :redis, mode: mode, port: String.to_integer(addr), os_pid: String.to_integer(os_pid)}
        end
      end)

    %{
      targets: targets,
      quick: System.get_env("BENCH_QUICK", "0") == "1",
      out: Env.str("BENCH_OUT"),
      cell_s: Env.num("BENCH_DUR_CELL_S"),
      warm_s: Env.num("BENCH_DUR_WARM_S"),
      rounds: Env.int("BENCH_ROUNDS") |> max(1),
      callers: Env.str("BENCH_DUR_CALLERS") |> String.split(",") |> Enum.map(&String.to_integer/1),
      ids: Env.int("BENCH_IDS"),
      max_requests: Env.int("BENCH_DUR_MAX_REQUESTS"),
      window_ms: Env.int("BENCH_DUR_WINDOW_MS"),
      clk_tck: Env.int("BENCH_CLK_TCK"),
      caller_os_pid: String.to_integer(System.pid()),
      cnode_flags: System.get_env("BENCH_DUR_CNODE_FLAGS", ""),
      data_fs: System.get_env("BENCH_DUR_FS", "unknown"),
      per_us: :erlang.convert_time_unit(1, :microsecond, :native)
    }
  end

  def find_target(cfg, server, mode), do: Enum.find(cfg.targets, &(&1.server == server and &1.mode == mode))

  # Connects to every target, checks it serves and, for Redis, that its persistence is what
  # the mode is matched with; loads the limiter script. Returns the targets with :sha.
  def prepare(cfg) do
    Enum.map(cfg.targets, fn
      %{server: :cnode} = t ->
        true = Node.connect(t.node) || abort("cannot connect to #{t.node}")
        _ = GenServer.call({:counter, t.node}, :get_value, @call_timeout)
        {:ok, _} = GenServer.call({:rate_limiter, t.node}, {:check_rate, "warm-up"}, @call_timeout)
        t

      %{server: :redis} = t ->
        sock = Resp.connect(t.port)
        ["appendonly", "yes"] = Resp.command(sock, ["CONFIG", "GET", "appendonly"])
        fsync = fsync_of(t.mode)
        ["appendfsync", ^fsync] = Resp.command(sock, ["CONFIG", "GET", "appendfsync"])
        sha = Resp.command(sock, ["SCRIPT", "LOAD", @limiter_lua])
        true = is_binary(sha) || abort("SCRIPT LOAD on port #{t.port}: #{inspect(sha)}")
        [version] = for "redis_version:" <> v <- String.split(Resp.command(sock, ["INFO", "server"]), "\r\n"), do: v
        Resp.close(sock)
        Map.merge(t, %{sha: sha, version: version})
    end)
  end

  ## Cells

  # The cells of one request, caller count and mode: the C node's and Redis's, measured in
  # cfg.rounds alternating rounds of cell_s / rounds seconds each (the C node first in the
  # even rounds, Redis in the odd ones), each round with its own connections and warm-up.
  # Calls, time and CPU add up over the rounds and latencies go into one histogram per
  # server, so a drift of the shared machine (or of its disk, in power mode) during the pair
  # falls on both alike.
  def pair(cfg, op, conc, mode) do
    ts = for server <- [:cnode, :redis], t = find_target(cfg, server, mode), t != nil, do: t
    secs = cfg.cell_s / cfg.rounds
    hists = Map.new(ts, fn t -> {t.server, Hist.new()} end)

    acc = Rounds.alternate(ts, cfg.rounds, & &1.server, fn t, a -> round_of(cfg, t, op, conc, secs, hists[t.server], a) end)

    for t <- ts, do: cell_of(t, op, conc, hists[t.server], acc[t.server])
  end

  # One round: `conc` callers, each with its own connection (a distribution hop for the C
  # node, one TCP connection for Redis), opened before the clock starts; calls before
  # `measure_from` warm up and are not counted. Its figures are added to `acc` (nil at first).
  defp round_of(cfg, t, op, conc, secs, hist, acc) do
    parent = self()
    ids = :persistent_term.get({Durability, :ids})
    nids = tuple_size(ids)
    per_us = cfg.per_us

    workers =
      for w <- 0..(conc - 1) do
        spawn_monitor(fn ->
          conn = open(cfg, t)
          send(parent, {:ready, self()})

          receive do
            {:go, measure_from, deadline} ->
              start = rem(div(nids * w, conc), nids)
              {i, warm_acks} = warm(conn, op, ids, nids, start, measure_from, 0)
              {n, limited} = loop(conn, op, ids, nids, i, deadline, hist, per_us, 0, 0)
              close(conn)
              send(parent, {:done, self(), n, limited, warm_acks + n})
          end
        end)
      end

    what = "#{label(t)} #{op} x#{conc}"
    Enum.each(workers, fn {pid, mref} -> await(pid, mref, :ready, what) end)
    now = :erlang.monotonic_time()
    measure_from = now + sec_native(cfg.warm_s)
    deadline = measure_from + sec_native(secs)
    Enum.each(workers, fn {pid, _} -> send(pid, {:go, measure_from, deadline}) end)
    sleep_until(measure_from)
    cpu0 = cpu(cfg, t)
    t0 = :erlang.monotonic_time()
    results = Enum.map(workers, fn {pid, mref} -> await(pid, mref, :done, what, secs + cfg.warm_s + 60) end)
    t1 = :erlang.monotonic_time()
    cpu1 = cpu(cfg, t)

    r = %{
      elapsed: (t1 - t0) / sec_native(1),
      limited: Enum.sum(Enum.map(results, fn {_n, l, _a} -> l end)),
      acknowledged: Enum.sum(Enum.map(results, fn {_n, _l, a} -> a end)),
      cpu: Map.new(cpu1, fn {k, v} -> {k, v - cpu0[k]} end),
      rounds: 1
    }

    Rounds.add(acc, r)
  end

  defp cell_of(t, op, conc, hist, m) do
    lat = Hist.summary(hist, [50, 99, 99.9])
    d = m.cpu
    per = fn k -> if lat.count > 0, do: Float.round(d[k] / lat.count, 2) end

    %{
      server: t.server,
      mode: t.mode,
      op: op,
      callers: conc,
      rounds: m.rounds,
      seconds: Float.round(m.elapsed, 3),
      calls: lat.count,
      ops_per_s: round(lat.count / m.elapsed),
      p50_us: lat[50],
      p99_us: lat[99],
      p999_us: lat[99.9],
      max_us: lat.max,
      limited: m.limited,
      acknowledged: m.acknowledged,
      server_cpu_us_per_op: per.(:server),
      caller_cpu_us_per_op: per.(:caller),
      foreign_cpu_share: Float.round(max(d.machine - d.server - d.caller, 0) / 1.0e6 / m.elapsed, 2)
    }
  end

  defp open(_cfg, %{server: :cnode} = t), do: {:cnode, t.node}

  defp open(cfg, %{server: :redis} = t) do
    {:redis, Resp.connect(t.port), t.sha, Integer.to_string(cfg.window_ms), Integer.to_string(cfg.max_requests)}
  end

  defp close({:redis, sock, _, _, _}), do: Resp.close(sock)
  defp close(_), do: :ok

  defp await(pid, mref, :ready, what) do
    receive do
      {:ready, ^pid} -> :ok
      {:DOWN, ^mref, :process, ^pid, reason} -> abort("a caller of #{what} died connecting: #{inspect(reason)}")
    after
      30_000 -> abort("#{what}: a caller did not connect within 30 s")
    end
  end

  defp await(pid, mref, :done, what, timeout_s) do
    receive do
      {:done, ^pid, n, limited, acked} ->
        Process.demonitor(mref, [:flush])
        {n, limited, acked}

      {:DOWN, ^mref, :process, ^pid, reason} ->
        abort("a caller of #{what} died: #{inspect(reason)}")
    after
      round(timeout_s * 1000) -> abort("#{what}: the callers did not finish within #{timeout_s} s")
    end
  end

  defp warm(conn, op, ids, nids, i, until, acks) do
    if :erlang.monotonic_time() < until do
      one(conn, op, ids, i)
      warm(conn, op, ids, nids, next(i, nids), until, acks + 1)
    else
      {i, acks}
    end
  end

  # Returns {calls, refused check_rates}; every call is timed into the histogram.
  defp loop(conn, op, ids, nids, i, deadline, hist, per_us, c, limited) do
    t0 = :erlang.monotonic_time()
    r = one(conn, op, ids, i)
    t1 = :erlang.monotonic_time()
    Hist.add(hist, div(t1 - t0, per_us))
    limited = if r == :limited, do: limited + 1, else: limited

    if t1 < deadline,
      do: loop(conn, op, ids, nids, next(i, nids), deadline, hist, per_us, c + 1, limited),
      else: {c + 1, limited}
  end

  defp next(i, n) when i + 1 == n, do: 0
  defp next(i, _), do: i + 1

  # One request: :ok, or :limited for a refused check_rate. Anything else (an error term
  # of a node whose disk says no, a Redis error) stops the run: the figures would lie.
  defp one({:cnode, node}, :increment, _ids, _i) do
    case GenServer.call({:counter, node}, :increment, @call_timeout) do
      v when is_integer(v) -> :ok
      other -> exit({:unexpected_reply, other})
    end
  end

  defp one({:cnode, node}, :check_rate, ids, i) do
    case GenServer.call({:rate_limiter, node}, {:check_rate, elem(ids, i)}, @call_timeout) do
      {:ok, _} -> :ok
      {:error, :rate_limited} -> :limited
      other -> exit({:unexpected_reply, other})
    end
  end

  defp one({:redis, sock, _sha, _w, _m}, :increment, _ids, _i) do
    case Resp.command(sock, ["INCR", "counter"]) do
      v when is_integer(v) -> :ok
      other -> exit({:unexpected_reply, other})
    end
  end

  defp one({:redis, sock, sha, window, max}, :check_rate, ids, i) do
    member = Integer.to_string(:erlang.unique_integer([:positive]))

    case Resp.command(sock, ["EVALSHA", sha, "1", "rl:" <> elem(ids, i), window, max, member]) do
      -1 -> :limited
      v when is_integer(v) and v >= 0 -> :ok
      other -> exit({:unexpected_reply, other})
    end
  end

  defp cpu(cfg, t) do
    s = fn pid -> pid |> Proc.cpu_us(cfg.clk_tck) |> Tuple.sum() end
    %{server: s.(t.os_pid), caller: s.(cfg.caller_os_pid), machine: Tuple.sum(Proc.machine_busy_us(cfg.clk_tck))}
  end

  ## After the cells: every acknowledged increment is in the counter; Redis's own account
  ## of its persistence work.

  def final_checks(cfg, targets, cells) do
    Enum.map(targets, fn t ->
      acked = cells |> Enum.filter(&(&1.server == t.server and &1.mode == t.mode and &1.op == :increment)) |> Enum.map(& &1.acknowledged) |> Enum.sum()

      {value, info} =
        case t.server do
          :cnode ->
            {GenServer.call({:counter, t.node}, :get_value, @call_timeout), %{}}

          :redis ->
            sock = Resp.connect(t.port)
            v = Resp.command(sock, ["GET", "counter"])
            info = Resp.command(sock, ["INFO", "persistence"])
            Resp.close(sock)
            keep = ~w(aof_rewrites aof_delayed_fsync aof_last_write_status aof_current_size)

            fields =
              for line <- String.split(info, "\r\n"), [k, v] <- [String.split(line, ":", parts: 2)], k in keep, into: %{}, do: {k, v}

            {if(v, do: String.to_integer(v), else: 0), fields}
        end

      if value != acked, do: abort("#{label(t)}: #{acked} acknowledged increments but the counter is #{value}")
      _ = cfg
      Map.merge(%{server: t.server, mode: t.mode, increments: acked, counter: value}, info)
    end)
  end

  ## Helpers

  def label(%{server: :cnode, mode: m}), do: "C node #{m}"
  def label(%{server: :redis, mode: m}), do: "Redis #{fsync_of(m)}"

  def abort(msg) do
    IO.puts(:stderr, "bench durability: " <> msg)
    System.halt(1)
  end

  defp sec_native(s), do: round(s * :erlang.convert_time_unit(1, :second, :native))

  defp sleep_until(t) do
    ms = :erlang.convert_time_unit(t - :erlang.monotonic_time(), :native, :millisecond)
    if ms > 0, do: Process.sleep(ms)
  end

  def log(line), do: IO.puts("[#{Time.utc_now() |> Time.truncate(:second)}] " <> line)
  def pad(v, n), do: v |> to_string() |> String.pad_leading(n)

  ## The run

  def main do
    cfg = config()
    File.mkdir_p!(cfg.out)
    ids = List.to_tuple(for i <- 0..(cfg.ids - 1), do: "client-" <> Integer.to_string(i))
    :persistent_term.put({Durability, :ids}, ids)
    targets = prepare(cfg)
    cfg = %{cfg | targets: targets}
    redis = Enum.find(targets, &(&1.server == :redis))

    log(
      "durability: C node modes #{Enum.map_join(for(%{server: :cnode} = t <- targets, do: t.mode), ", ", &to_string/1)}" <>
        "; Redis #{redis && redis.version} appendfsync #{Enum.map_join(for(%{server: :redis} = t <- targets, do: fsync_of(t.mode)), ", ", & &1)}"
    )

    cells =
      for op <- [:increment, :check_rate], conc <- cfg.callers, mode <- @modes, c <- pair(cfg, op, conc, mode) do
        t = find_target(cfg, c.server, mode)

        log(
          "#{pad(op, 10)} x#{pad(conc, 3)} #{String.pad_trailing(label(t), 17)}: #{pad(c.ops_per_s, 7)} calls/s, " <>
            "p50 #{c.p50_us} µs, p99 #{c.p99_us} µs, server #{c.server_cpu_us_per_op} µs CPU/call" <>
            if(c.limited > 0, do: ", #{c.limited} refused", else: "") <>
            ", other load #{c.foreign_cpu_share} cores (#{c.rounds} rounds)"
        )

        c
      end

    checks = final_checks(cfg, targets, cells)
    Durability.Report.write(cfg, targets, cells, checks)
  end
end

defmodule Durability.Report do
  @moduledoc false

  defp find(cells, server, mode, op, n),
    do: Enum.find(cells, &(&1.server == server and &1.mode == mode and &1.op == op and &1.callers == n))

  defp ratio(a, b) when is_number(a) and is_number(b) and b > 0, do: Float.round(a / b, 2)
  defp ratio(_, _), do: nil

  defp ops(nil), do: nil
  defp ops(c), do: c.ops_per_s
  defp p99(nil), do: nil
  defp p99(c), do: c.p99_us

  defp fmt(nil), do: "-"
  defp fmt(v) when is_float(v), do: :erlang.float_to_binary(v, decimals: 2)
  defp fmt(v) when is_integer(v) and v >= 10_000, do: v |> Integer.to_string() |> group()
  defp fmt(v), do: to_string(v)

  defp group(s), do: s |> String.reverse() |> String.to_charlist() |> Enum.chunk_every(3) |> Enum.join(" ") |> String.reverse()

  defp server_cell(%{server: :cnode}), do: "C node"
  defp server_cell(%{server: :redis, mode: m}), do: "Redis (appendfsync #{Durability.fsync_of(m)})"

  def write(cfg, targets, cells, checks) do
    rows =
      for c <- cells do
        other = if c.server == :cnode, do: find(cells, :redis, c.mode, c.op, c.callers)
        base = find(cells, c.server, :terminate, c.op, c.callers)
        vs_term = if c.mode != :terminate, do: ratio(ops(c), ops(base))
        bold = fn nil -> "-"; v -> "**#{fmt(v)}**" end

        "| #{c.mode} | #{server_cell(c)} | #{c.op} | #{c.callers} | #{fmt(c.ops_per_s)} | #{c.p50_us} | #{c.p99_us} | " <>
          "#{fmt(c.server_cpu_us_per_op)} | #{fmt(c.caller_cpu_us_per_op)} | #{if other, do: bold.(ratio(ops(c), ops(other))), else: "-"} | " <>
          "#{if other, do: fmt(ratio(p99(c), p99(other))), else: "-"} | #{fmt(vs_term)} |" <>
          if(c.limited > 0, do: " #{c.limited} refused |", else: " |")
      end

    hi = Enum.max(cfg.callers)
    lo = Enum.min(cfg.callers)
    targets_rows = target_rows(cells, lo, hi)

    guarantee =
      for op <- [:increment, :check_rate], n <- cfg.callers do
        c = find(cells, :cnode, :crash, op, n)
        r = find(cells, :redis, :terminate, op, n)
        "#{op} x#{n}: #{fmt(ratio(ops(c), ops(r)))}"
      end

    redis_work =
      for %{server: :redis} = k <- checks do
        "appendfsync #{Durability.fsync_of(k.mode)}: #{k["aof_rewrites"]} AOF rewrite(s), #{k["aof_delayed_fsync"]} delayed fsync(s), " <>
          "AOF #{fmt(String.to_integer(k["aof_current_size"] || "0"))} bytes at the end"
      end

    worst = Enum.max_by(cells, & &1.foreign_cpu_share)
    redis = Enum.find(targets, &(&1.server == :redis))

    md = """
    ## make bench: durability (the C node in each mode against Redis at matched durability)#{if cfg.quick, do: " (BENCH_QUICK=1 smoke run: short cells; not for comparison)", else: ""}

    One caller node drives one server at a time: a C node per mode (`--durability MODE`, fresh data
    dir) and a Redis #{redis && redis.version} per matched setting (`appendonly yes`, `save ""`, private port and dir),
    the C node and the Redis of a mode back to back. Each caller process has its own connection: the
    distribution connection for the C node, one TCP connection for Redis (a pool of one per caller),
    through a plain RESP client in the caller (`erlang_test/bench/resp.ex`). :increment against `INCR`;
    check_rate against the usual sliding-window script over a sorted set (ZREMRANGEBYSCORE, ZCARD, ZADD,
    PEXPIRE, loaded with SCRIPT LOAD, called with EVALSHA), both with max_requests #{cfg.max_requests}
    and window_ms #{fmt(cfg.window_ms)} (our limiter's defaults), round-robin over #{fmt(cfg.ids)} ids.
    #{cfg.cell_s} s per cell after #{cfg.warm_s} s of warm-up; every call is timed. C node flags `#{cfg.cnode_flags}`.
    Data dirs (the C nodes' and Redis's) on #{cfg.data_fs}.
    CPU per call is utime+stime of the OS process (Redis: all its threads) over the measured part of
    the cell, over the calls; the caller's shows how much of the round trip is the caller's own work.

    Matching (the issue's): terminate ~ appendfsync no, crash ~ everysec, power ~ always. By what
    survives, Redis `no` already equals our crash (Redis writes the AOF before it replies, so a killed
    Redis loses nothing; power loss loses what the kernel had not written back) and terminate has no
    AOF counterpart (Redis without AOF). C node crash / Redis no, by guarantee: #{Enum.join(guarantee, ", ")}.

    CPU used by anything but the server under test and the caller: at most #{worst.foreign_cpu_share} cores
    (#{Durability.label(worst)} #{worst.op} x#{worst.callers})#{if worst.foreign_cpu_share >= 0.1, do: ": **the machine was not quiet; the figures are disturbed**", else: ""}.
    The kernel threads that write back and fsync (jbd2, kworkers) and a Redis AOF rewrite's child count
    there too, so fsync-heavy cells show some of it by themselves.
    Redis's own persistence work in the run: #{Enum.join(redis_work, "; ")}.
    Every acknowledged increment was in the counter at the end (checked on every server).

    | mode | server | request | callers | calls/s | p50 µs | p99 µs | server CPU µs/call | caller CPU µs/call | C/Redis calls/s | C/Redis p99 | calls/s / terminate's | note |
    |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
    #{Enum.join(rows, "\n")}

    ### Targets (issue 10)

    | figure | measured | target | result |
    |---|---:|---:|---|
    #{Enum.map_join(targets_rows, "\n", fn r -> "| #{r.figure} | #{fmt(r.measured)} | #{r.goal} | #{r.result} |" end)}
    """

    IO.puts("\n" <> md)
    File.write!(Path.join(cfg.out, "durability.md"), md)

    cols = [:mode, :server, :op, :callers, :seconds, :calls, :ops_per_s, :p50_us, :p99_us, :p999_us, :max_us, :limited, :server_cpu_us_per_op, :caller_cpu_us_per_op, :foreign_cpu_share]
    csv = [Enum.join(cols, ",") | Enum.map(cells, fn r -> Enum.map_join(cols, ",", &to_string(Map.get(r, &1) || "")) end)]
    File.write!(Path.join(cfg.out, "durability.csv"), Enum.join(csv, "\n") <> "\n")

    json = %{
      quick: cfg.quick,
      config: Map.take(cfg, [:cell_s, :warm_s, :callers, :ids, :max_requests, :window_ms, :cnode_flags, :data_fs]),
      matching: Map.new([:terminate, :crash, :power], &{&1, "appendfsync " <> Durability.fsync_of(&1)}),
      redis_version: redis && redis.version,
      cells: cells,
      final: checks,
      targets: targets_rows
    }

    File.write!(Path.join(cfg.out, "durability.json"), Bench.Json.encode(json) <> "\n")
  end

  # The figures issue 10's "done when" names. A figure whose rows were not asked for
  # (BENCH_DUR_MODES, BENCH_DUR_CALLERS) is "n/a" with the reason, never a pass.
  defp target_rows(cells, lo, hi) do
    vs_term =
      for {mode, goal} <- [crash: 0.9, power: 0.5], op <- [:increment, :check_rate] do
        v = ratio(ops(find(cells, :cnode, mode, op, hi)), ops(find(cells, :cnode, :terminate, op, hi)))
        row("C node #{mode}/terminate calls/s, #{op}, #{hi} callers", v, :ge, goal)
      end

    vs_redis =
      for mode <- [:terminate, :crash, :power], op <- [:increment, :check_rate], n <- Enum.uniq([lo, hi]) do
        c = find(cells, :cnode, mode, op, n)
        r = find(cells, :redis, mode, op, n)
        row("C node #{mode} / Redis #{Durability.fsync_of(mode)} calls/s, #{op}, #{n} caller(s)", ratio(ops(c), ops(r)), :gt, 1.0)
      end

    vs_term ++ vs_redis
  end

  defp row(figure, v, cmp, goal) do
    result =
      cond do
        v == nil -> "n/a (not measured: BENCH_DUR_MODES, BENCH_DUR_CALLERS)"
        cmp == :ge and v >= goal -> "pass"
        cmp == :gt and v > goal -> "pass"
        true -> "FAIL"
      end

    %{figure: figure, measured: v, goal: "#{if cmp == :ge, do: "≥", else: ">"} #{goal}", result: result}
  end
end

max_s = Bench.Env.int("BENCH_MAX_S")

spawn(fn ->
  Process.sleep(max_s * 1000)
  IO.puts(:stderr, "bench durability: the run took longer than #{max_s} s; halting")
  System.halt(3)
end)

Durability.main()
