# The metrics cells of `make bench` (scripts/bench.sh, BENCH_METRICS=1): what the Prometheus
# endpoint costs. Two fresh C nodes, the same binary and flags except that one serves
# --metrics-listen and is scraped once a second (by this caller, a raw HTTP GET, the body kept
# in BENCH_OUT/metrics-scrape.txt) while the other is not. Rounds alternate which node goes
# first, so a machine that slows down over the run weighs on both (the medians are compared);
# each cell is BENCH_M_CONCURRENCY processes in tight GenServer.call(:increment) loops for
# BENCH_CELL_S after BENCH_WARM_S. Then, as a figure the machine's noise does not drown:
# the scraped node's CPU time (/proc, Bench.Proc) over BENCH_M_SCRAPES back-to-back
# scrapes, per scrape, and what one a second is of one core. Writes BENCH_OUT/metrics.md and prints its table.

defmodule MetricsBench do
  @moduledoc false

  def env(name), do: System.fetch_env!(name)
  def num(name), do: name |> env() |> Float.parse() |> elem(0)

  def main do
    plain = String.to_atom(env("BENCH_M_PLAIN"))
    scraped = String.to_atom(env("BENCH_M_SCRAPED"))
    port = String.to_integer(env("BENCH_M_PORT"))
    rounds = String.to_integer(env("BENCH_M_ROUNDS"))
    conc = String.to_integer(env("BENCH_M_CONCURRENCY"))
    out = env("BENCH_OUT")
    cell_s = num("BENCH_CELL_S")
    warm_s = num("BENCH_WARM_S")
    for n <- [plain, scraped], do: true = Node.connect(n)

    scraper = spawn_link(fn -> scrape_loop(port, out, 0) end)

    cells =
      for r <- 1..rounds, target <- order(r, plain, scraped) do
        {target, cell(target, conc, warm_s, cell_s)}
      end

    send(scraper, {:stop, self()})
    scrapes = receive do: ({:scrapes, n} -> n)
    rate = fn t -> cells |> Enum.filter(&(elem(&1, 0) == t)) |> Enum.map(&elem(&1, 1)) end
    p = rate.(plain)
    s = rate.(scraped)
    pm = median(p)
    sm = median(s)
    cost = (pm - sm) / pm * 100
    {per_scrape_us, bytes} = scrape_cpu(port, String.to_integer(env("BENCH_M_OSPID")),
                                        String.to_integer(env("BENCH_CLK_TCK")),
                                        String.to_integer(env("BENCH_M_SCRAPES")))

    table = """
    | C node | calls/s per round | median calls/s |
    |---|---|---|
    | not scraped | #{Enum.map_join(p, ", ", &round/1)} | #{round(pm)} |
    | scraped every 1 s | #{Enum.map_join(s, ", ", &round/1)} | #{round(sm)} |

    Endpoint cost: #{:erlang.float_to_binary(cost, decimals: 2)} % of calls/s (#{rounds} rounds of #{cell_s} s, #{conc} callers, #{scrapes} scrapes).
    One scrape (#{bytes} bytes) costs the node #{round(per_scrape_us)} µs of CPU: once a second, #{:erlang.float_to_binary(per_scrape_us / 1.0e4, decimals: 3)} % of one core.
    """

    File.write!(Path.join(out, "metrics.md"), table)
    IO.puts("\n## Metrics endpoint: calls/s scraped and not, side by side\n\n" <> table)
  end

  # The node's CPU µs per scrape over n scrapes in a row, and the size of the last body.
  def scrape_cpu(port, os_pid, clk_tck, n) do
    {u0, s0} = Bench.Proc.cpu_us(os_pid, clk_tck)
    body = Enum.reduce(1..n, "", fn _, _ -> get(port) end)
    {u1, s1} = Bench.Proc.cpu_us(os_pid, clk_tck)
    {(u1 - u0 + s1 - s0) / n, byte_size(body)}
  end

  # The median, so one round that another process on the machine slowed does not decide.
  def median(xs) do
    sorted = Enum.sort(xs)
    n = length(sorted)
    if rem(n, 2) == 1, do: Enum.at(sorted, div(n, 2)), else: (Enum.at(sorted, div(n, 2) - 1) + Enum.at(sorted, div(n, 2))) / 2
  end

  defp order(r, a, b) when rem(r, 2) == 1, do: [a, b]
  defp order(_, a, b), do: [b, a]

  # Calls per second of conc processes calling the counter on node for cell_s.
  def cell(node, conc, warm_s, cell_s) do
    srv = {:counter, node}
    parent = self()
    start = :erlang.monotonic_time(:millisecond) + round(warm_s * 1000)
    stop = start + round(cell_s * 1000)

    for _ <- 1..conc do
      spawn_link(fn -> send(parent, {:done, loop(srv, start, stop, 0)}) end)
    end

    total = Enum.reduce(1..conc, 0, fn _, acc -> receive do: ({:done, n} -> acc + n) end)
    total / cell_s
  end

  defp loop(srv, start, stop, n) do
    GenServer.call(srv, :increment, 15_000)
    now = :erlang.monotonic_time(:millisecond)

    cond do
      now >= stop -> n
      now >= start -> loop(srv, start, stop, n + 1)
      true -> loop(srv, start, stop, n)
    end
  end

  defp scrape_loop(port, out, n) do
    receive do
      {:stop, from} -> send(from, {:scrapes, n})
    after
      1000 ->
        body = get(port)
        File.write!(Path.join(out, "metrics-scrape.txt"), body)
        scrape_loop(port, out, n + 1)
    end
  end

  defp get(port) do
    {:ok, s} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 5_000)
    :ok = :gen_tcp.send(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    reply = read_all(s, [])
    [_head, body] = :binary.split(reply, "\r\n\r\n")
    body
  end

  defp read_all(s, acc) do
    case :gen_tcp.recv(s, 0, 10_000) do
      {:ok, data} -> read_all(s, [acc, data])
      {:error, :closed} -> IO.iodata_to_binary(acc)
    end
  end
end

MetricsBench.main()
