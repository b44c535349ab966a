# Helpers shared by the caller nodes of `make bench` (bench.exs, the C node against the BEAM
# peer; durability.exs, the C node against Redis): scripts/bench.sh compiles this file with
# elixirc onto the callers' code path.

defmodule Bench.Env do
  @moduledoc false
  def str(name), do: System.fetch_env!(name)
  def int(name), do: name |> str() |> String.to_integer()
  def num(name), do: name |> str() |> Float.parse() |> elem(0)
end

defmodule Bench.Hist do
  @moduledoc """
  A latency histogram in a :counters array, so every call is timed and recorded for the
  price of two clock reads and one counter add. 1 µs buckets below 10 ms, 100 µs buckets
  from 10 ms to 1 s, one bucket for everything above.
  """
  @lin 10_000
  @step 100
  @coarse 9_900
  @size @lin + @coarse + 1

  def new, do: :counters.new(@size, [:write_concurrency])

  def add(hist, us) when us < @lin, do: :counters.add(hist, us + 1, 1)
  def add(hist, us), do: :counters.add(hist, min(@lin + div(us - @lin, @step), @size - 1) + 1, 1)

  # The upper bound (µs) of bucket i (0-based).
  defp bound(i) when i < @lin, do: i + 1
  defp bound(i), do: @lin + (i - @lin + 1) * @step

  @doc "Count and the given percentiles (µs, upper bucket bound) as a map."
  def summary(hist, pcts) do
    counts = for i <- 1..@size, do: :counters.get(hist, i)
    total = Enum.sum(counts)
    targets = Enum.map(pcts, fn p -> {p, max(1, ceil(total * p / 100))} end)

    {_, found} =
      counts
      |> Enum.with_index()
      |> Enum.reduce_while({0, %{}}, fn {c, i}, {seen, acc} ->
        seen = seen + c
        acc = Enum.reduce(targets, acc, fn {p, t}, a -> if seen >= t and not Map.has_key?(a, p), do: Map.put(a, p, bound(i)), else: a end)
        if map_size(acc) == length(targets), do: {:halt, {seen, acc}}, else: {:cont, {seen, acc}}
      end)

    max_i = counts |> Enum.with_index() |> Enum.reduce(0, fn {c, i}, m -> if c > 0, do: i, else: m end)
    Map.merge(found, %{count: total, max: if(total > 0, do: bound(max_i), else: 0)})
  end
end

defmodule Bench.Proc do
  @moduledoc "CPU time and resident memory of OS processes, from /proc."
  @doc "{user, system} CPU time of the process (all its threads) in µs."
  def cpu_us(os_pid, clk_tck) do
    stat = File.read!("/proc/#{os_pid}/stat")
    [_, rest] = String.split(stat, ") ", parts: 2)
    fields = String.split(rest, " ")
    # After the command: field 3 (state) is index 0, so utime (14) and stime (15) are 11, 12.
    us = fn i -> div(String.to_integer(Enum.at(fields, i)) * 1_000_000, clk_tck) end
    {us.(11), us.(12)}
  end

  @doc "{busy, 0}: CPU time all cores spent outside idle and iowait since boot, in µs (/proc/stat)."
  def machine_busy_us(clk_tck) do
    ["cpu" | fields] = "/proc/stat" |> File.read!() |> String.split("\n", parts: 2) |> hd() |> String.split()
    [user, nice, system, idle, iowait | rest] = Enum.map(fields, &String.to_integer/1)
    # irq, softirq, steal count as busy; guest time is already inside user.
    busy = user + nice + system + Enum.sum(Enum.take(rest, 3))
    _ = {idle, iowait}
    {div(busy * 1_000_000, clk_tck), 0}
  end

  def rss_bytes(os_pid) do
    "/proc/#{os_pid}/status"
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value(fn
      "VmRSS:" <> rest -> rest |> String.trim() |> String.split() |> hd() |> String.to_integer() |> Kernel.*(1024)
      _ -> nil
    end)
  end
end

defmodule Bench.Json do
  @moduledoc "Just enough JSON for the figures (no hex here)."
  def encode(nil), do: "null"
  def encode(true), do: "true"
  def encode(false), do: "false"
  def encode(v) when is_integer(v), do: Integer.to_string(v)
  def encode(v) when is_float(v), do: :erlang.float_to_binary(v, [:short])
  def encode(v) when is_atom(v), do: encode(Atom.to_string(v))

  def encode(v) when is_binary(v) do
    escaped =
      v
      |> String.replace("\\", "\\\\")
      |> String.replace("\"", "\\\"")
      |> String.replace("\n", "\\n")
      |> String.replace("\t", "\\t")

    "\"" <> escaped <> "\""
  end

  def encode(v) when is_list(v), do: "[" <> Enum.map_join(v, ",", &encode/1) <> "]"

  def encode(v) when is_map(v) do
    "{" <> Enum.map_join(Enum.sort_by(v, fn {k, _} -> to_string(k) end), ",", fn {k, x} -> encode(to_string(k)) <> ":" <> encode(x) end) <> "}"
  end
end

defmodule Bench.Rounds do
  @moduledoc "The side-by-side cells of make bench, measured in alternating rounds (BENCH_ROUNDS)."

  @doc """
  Calls `fun.(item, acc)` for every item in each of `rounds` rounds, the order of `items`
  reversed every other round, so a drift of the machine during the rounds falls on every
  item alike. `acc` is what `fun` returned for that item in the round before (nil in the
  first). Returns the last round's results, keyed by `key.(item)`.
  """
  def alternate(items, rounds, key, fun) do
    Enum.reduce(0..(rounds - 1), %{}, fn r, acc ->
      order = if rem(r, 2) == 0, do: items, else: Enum.reverse(items)
      Enum.reduce(order, acc, fn i, a -> Map.put(a, key.(i), fun.(i, a[key.(i)])) end)
    end)
  end

  @doc """
  A round's figures added to those of the rounds before it (`nil` before the first): numbers
  add up, and so do CPU maps (per process a number of µs or a `{user, system}` tuple);
  `per_round` lists are joined in order.
  """
  def add(nil, round), do: round
  def add(acc, round), do: Map.merge(acc, round, &sum/3)

  defp sum(:per_round, a, b), do: a ++ b
  defp sum(_, a, b) when is_map(a), do: Map.merge(a, b, fn _, x, y -> plus(x, y) end)
  defp sum(_, a, b), do: plus(a, b)

  defp plus({u, s}, {u2, s2}), do: {u + u2, s + s2}
  defp plus(a, b), do: a + b
end
