defmodule MetricsTest do
  @moduledoc """
  --metrics-listen: the Prometheus text endpoint counts what BEAM callers did, by the
  right amounts, and GenServer.call({:cnode_metrics, node}, :get) shows the same figures.
  """
  use CNodeTest.Case, async: false

  # A port free now: the kernel's pick for a listener we close at once.
  defp free_port do
    {:ok, l} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(l)
    :gen_tcp.close(l)
    port
  end

  defp start_with_metrics(more \\ []) do
    port = free_port()
    cnode = start_cnode!(args: ["--metrics-listen", "127.0.0.1:#{port}" | more])
    {cnode, port}
  end

  # A raw HTTP/1.1 GET; the node closes after the reply (Connection: close).
  defp http_get(port, path) do
    {:ok, s} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 5_000)
    :ok = :gen_tcp.send(s, "GET #{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    reply = read_all(s, [])
    [head, body] = :binary.split(reply, "\r\n\r\n")
    {head, body}
  end

  defp read_all(s, acc) do
    case :gen_tcp.recv(s, 0, 10_000) do
      {:ok, data} -> read_all(s, [acc, data])
      {:error, :closed} -> IO.iodata_to_binary(acc)
    end
  end

  # The sample lines as %{"name{labels}" => value}.
  defp scrape(port) do
    {head, body} = http_get(port, "/metrics")
    assert head =~ "HTTP/1.1 200"
    assert head =~ "text/plain; version=0.0.4"

    for line <- String.split(body, "\n", trim: true), not String.starts_with?(line, "#"), into: %{} do
      [series, value] = String.split(line, " ")
      {series, parse_number(value)}
    end
  end

  defp parse_number(v) do
    case Integer.parse(v) do
      {n, ""} -> n
      _ -> String.to_float(v)
    end
  end

  defp delta(after_, before, key), do: Map.fetch!(after_, key) - Map.fetch!(before, key)

  @tag cnode: false
  test "calls, casts and unknown requests move the counts by what was done" do
    {cnode, port} = start_with_metrics()
    counter = {:counter, cnode.node}
    GenServer.call(counter, :get_value)
    before = scrape(port)

    for _ <- 1..3, do: GenServer.call(counter, :increment)
    assert GenServer.call(counter, :bogus) == {:error, {:unknown_call, :bogus}}
    GenServer.cast(counter, :increment)
    GenServer.cast(counter, :increment)
    GenServer.cast(counter, :bogus)
    send(counter, :stray)
    # The casts and the message are handled before this call: one connection keeps order.
    assert GenServer.call(counter, :get_value) == 5
    after_ = scrape(port)

    ok = ~s(cnode_calls_total{server="counter",result="ok"})
    unknown = ~s(cnode_calls_total{server="counter",result="unknown"})
    error = ~s(cnode_calls_total{server="counter",result="error"})
    assert delta(after_, before, ok) == 4
    assert delta(after_, before, unknown) == 1
    assert delta(after_, before, error) == 0
    assert delta(after_, before, ~s(cnode_casts_total{server="counter",result="ok"})) == 2
    assert delta(after_, before, ~s(cnode_casts_total{server="counter",result="unknown"})) == 1
    assert delta(after_, before, ~s(cnode_unknown_requests_total{server="counter",kind="call"})) == 1
    assert delta(after_, before, ~s(cnode_unknown_requests_total{server="counter",kind="cast"})) == 1
    assert delta(after_, before, ~s(cnode_unknown_requests_total{server="counter",kind="info"})) == 1
    # Every call above was answered at once, so each has a latency.
    assert delta(after_, before, ~s(cnode_call_duration_seconds_count{server="counter"})) == 5
    assert after_[~s(cnode_call_duration_seconds_bucket{server="counter",le="+Inf"})] ==
             after_[~s(cnode_call_duration_seconds_count{server="counter"})]
    assert delta(after_, before, "cnode_received_bytes_total") > 0
    assert delta(after_, before, "cnode_sent_bytes_total") > 0
    assert after_["cnode_connections_accepted_total"] >= 1
    assert after_[~s(cnode_connections{state="up"})] >= 1
    assert after_[~s(cnode_mailbox_depth{server="counter"})] == 0
  end

  @tag cnode: false
  test "the :cnode_metrics map holds the same figures as the text" do
    {cnode, port} = start_with_metrics()
    counter = {:counter, cnode.node}
    limiter = {:rate_limiter, cnode.node}
    for _ <- 1..2, do: GenServer.call(counter, :increment)
    GenServer.call(counter, :nope)
    assert {:ok, _} = GenServer.call(limiter, {:check_rate, "client-a"})
    assert {:ok, _} = GenServer.call(limiter, {:check_rate, "client-b"})

    map = GenServer.call({:cnode_metrics, cnode.node}, :get)
    text = scrape(port)

    assert is_map(map)
    calls = map.calls_total
    assert calls[%{server: "counter", result: "ok"}] == 2
    assert calls[%{server: "counter", result: "unknown"}] == 1
    assert calls[%{server: "counter", result: "ok"}] == text[~s(cnode_calls_total{server="counter",result="ok"})]
    assert calls[%{server: "rate_limiter", result: "ok"}] == 2
    assert map.rate_limiter_clients[%{server: "rate_limiter"}] == 2.0
    assert text[~s(cnode_rate_limiter_clients{server="rate_limiter"})] == 2
    assert map.unknown_requests_total[%{server: "counter", kind: "call"}] == 1
    assert map.received_bytes_total > 0
    assert map.handshake_refusals_total[%{cause: "bad_cookie"}] == 0
    hist = map.call_duration_seconds[%{server: "counter"}]
    assert hist.count == 3
    assert List.last(hist.buckets) == {:infinity, 3}
    # Crash mode (the default) never syncs while it runs.
    assert %{count: 0, sum: 0.0} = map.journal_sync_seconds
  end

  @tag cnode: false
  test "power mode: each acknowledged increment waited for a journal sync, and the histogram counts them" do
    {cnode, port} = start_with_metrics(["--durability", "power"])
    counter = {:counter, cnode.node}
    for n <- 1..3, do: assert(GenServer.call(counter, :increment) == n)
    map = GenServer.call({:cnode_metrics, cnode.node}, :get)
    # One call at a time: every reply left after a sync of its own turn's record.
    assert map.journal_sync_seconds.count >= 3
    assert map.journal_sync_seconds.sum > 0.0
    assert scrape(port)["cnode_journal_sync_seconds_count"] == map.journal_sync_seconds.count
  end

  @tag cnode: false
  test "a restart is counted per child, and a bad cookie per cause" do
    {cnode, port} = start_with_metrics()
    old = server_pid({:counter, cnode.node})
    Process.exit(old, :kill)
    await_new_pid({:counter, cnode.node}, old)
    text = scrape(port)
    assert text[~s(cnode_restarts_total{supervisor="cnode_sup",child="counter"})] == 1

    # A peer with another cookie is refused in the handshake.
    peer = start_peer!(cookie: "not_the_cookie")
    refute peer_call(peer, :net_kernel, :connect_node, [cnode.node])
    wait_until(fn -> scrape(port)[~s(cnode_handshake_refusals_total{cause="bad_cookie"})] == 1 end,
               10_000, "the bad cookie counted")
  end

  @tag cnode: false
  test "other paths are 404 and the node serves on" do
    {cnode, port} = start_with_metrics()
    {head, _} = http_get(port, "/nothing")
    assert head =~ "HTTP/1.1 404"
    assert GenServer.call({:counter, cnode.node}, :increment) == 1
  end

  @tag cnode: false
  test "a bad --metrics-listen stops the start" do
    assert {:exited, status, _} = launch_cnode(args: ["--metrics-listen", "nowhere"])
    assert status != 0
  end
end
