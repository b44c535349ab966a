defmodule RateLimiterTest do
  @moduledoc """
  The C node's `rate_limiter` against the RateLimiter contract of DESIGN.md.

  Differential: `CNodeTest.ReferenceRateLimiter`, an Elixir GenServer written from the
  contract, runs on a BEAM peer with the same limits; every request of a sequence goes to
  both servers, one after the other, and the two reply lists must be identical. Each test
  also asserts some replies absolutely, so both servers being wrong the same way fails too.

  Every test has its own C node (and its own peer), so stopping a server affects no other.
  Nothing asserts on elapsed time: the window test measures its own phases and, when the
  machine was too slow for a phase to be unambiguous, repeats the scenario with fresh
  clients, a bounded number of times.
  """
  use CNodeTest.Case, async: false

  alias CNodeTest.ReferenceRateLimiter

  @call_timeout 10_000

  ## The basic contract

  test "100 calls for \"a\" give {:ok, 99}..{:ok, 0}, the 101st is limited, \"b\" is unaffected",
       %{node: node} do
    rl = {:rate_limiter, node}
    ref = start_reference!(100, 60_000)

    requests =
      List.duplicate(check("a"), 101) ++ [check("b"), check("a"), check("b")]

    replies = differential!(rl, ref, requests, "100 + 1 for \"a\", then \"b\"")

    assert Enum.take(replies, 100) == Enum.map(99..0//-1, &{:ok, &1})
    assert Enum.drop(replies, 100) == [{:error, :rate_limited}, {:ok, 99}, {:error, :rate_limited}, {:ok, 98}]
  end

  @tag cnode_args: ["--max-requests", "5"]
  test "several clients interleaved in a random order get the reference's replies",
       %{node: node} do
    rl = {:rate_limiter, node}
    ref = start_reference!(5, 60_000)
    clients = ["a", "b", :c, {:d, 1}, 42, 4.2, [1, 2], %{id: 7}]

    # A fixed sequence per ExUnit seed, so a failure replays with EXUNIT_SEED.
    :rand.seed(:exsss, {ExUnit.configuration()[:seed], 17, 4711})
    ids = for _ <- 1..240, do: Enum.random(clients)

    replies = differential!(rl, ref, Enum.map(ids, &check/1), "240 interleaved requests of 8 clients")

    # No request expires within the minute: the k-th request of a client gets 5 - k, or is
    # limited past the fifth.
    {expected, _} =
      Enum.map_reduce(ids, %{}, fn id, seen ->
        k = Map.get(seen, id, 0) + 1
        {if(k <= 5, do: {:ok, 5 - k}, else: {:error, :rate_limited}), Map.put(seen, id, k)}
      end)

    assert replies == expected
    assert clients(rl) == length(clients)
    assert reference_clients(ref) == length(clients)
  end

  ## Client ids

  @tag cnode_args: ["--max-requests", "4"]
  test "any term is a client id: many term types, each its own client, as in the reference",
       %{node: node} do
    rl = {:rate_limiter, node}
    ref = start_reference!(4, 60_000)
    ids = distinct_ids()

    # The list itself holds no two === terms (else the absolute expectation below is wrong).
    assert length(Enum.uniq(ids)) == length(ids)

    # Five passes over every id: the fifth is past the limit of 4 for each of them.
    requests = for _pass <- 1..5, id <- ids, do: check(id)
    replies = differential!(rl, ref, requests, "5 passes over #{length(ids)} distinct ids")

    expected = for pass <- 1..5, _id <- ids, do: if(pass <= 4, do: {:ok, 4 - pass}, else: {:error, :rate_limited})
    assert_same_replies!(requests, replies, expected, "the absolute expectation")
    assert clients(rl) == length(ids)
    assert reference_clients(ref) == length(ids)
  end

  @tag cnode_args: ["--max-requests", "4"]
  test "the same term built differently is one client; terms that only look alike are two",
       %{node: node} do
    rl = {:rate_limiter, node}
    ref = start_reference!(4, 60_000)

    # Guard the test's own premises: these really are === and these really are not.
    for {what, a, b} <- same_terms(), do: assert(a === b, "not === (#{what}): #{inspect(a)} vs #{inspect(b)}")
    for {what, a, b} <- different_terms(), do: refute(a === b, "=== (#{what}): #{inspect(a)} vs #{inspect(b)}")
    # Every case has clients of its own.
    clients = for({_, a, _} <- same_terms(), do: a) ++ for({_, a, b} <- different_terms(), x <- [a, b], do: x)
    assert length(Enum.uniq(clients)) == length(clients)

    # Five requests alternating the two forms: one client reaches its limit of 4.
    for {what, a, b} <- same_terms() do
      requests = Enum.map([a, b, a, b, a], &check/1)
      replies = differential!(rl, ref, requests, "one client in two forms: #{what}")

      assert_same_replies!(requests, replies, [ok: 3, ok: 2, ok: 1, ok: 0, error: :rate_limited], what)
    end

    # Two requests for each of two different terms: two clients.
    for {what, a, b} <- different_terms() do
      requests = Enum.map([a, b, a, b], &check/1)
      replies = differential!(rl, ref, requests, "two clients: #{what}")
      assert_same_replies!(requests, replies, [ok: 3, ok: 3, ok: 2, ok: 2], what)
    end

    assert clients(rl) == reference_clients(ref)
  end

  @tag cnode_args: ["--max-requests", "4"]
  test "deeply nested terms (300 and 5 000 levels of tuples, lists, maps) are client ids too",
       %{node: node} do
    rl = {:rate_limiter, node}
    ref = start_reference!(4, 60_000)
    nest = fn wrap, n -> Enum.reduce(1..n, :leaf, fn _, inner -> wrap.(inner) end) end

    ids =
      for n <- [300, 5_000], wrap <- [&{&1}, &[&1], &%{k: &1}, &[1 | &1]] do
        nest.(wrap, n)
      end

    requests = for _pass <- 1..2, id <- ids, do: check(id)
    replies = differential!(rl, ref, requests, "two passes over 8 deeply nested ids")
    assert replies == List.duplicate({:ok, 3}, length(ids)) ++ List.duplicate({:ok, 2}, length(ids))
  end

  # Not differential: the limit is the C node's own (RL_MAX_ID_BYTES), the reference has none.
  test "a client id above 64 KiB is refused with {:error, :bad_client_id} and not counted",
       %{node: node} do
    rl = {:rate_limiter, node}
    big = :binary.copy("x", 64 * 1024)
    assert byte_size(:erlang.term_to_binary(big)) > 64 * 1024
    assert GenServer.call(rl, check(big), @call_timeout) == {:error, :bad_client_id}
    assert GenServer.call(rl, check({:wrapped, big}), @call_timeout) == {:error, :bad_client_id}
    assert GenServer.call(rl, check(List.duplicate(?x, 70_000)), @call_timeout) == {:error, :bad_client_id}
    assert clients(rl) == 0

    just_under = :binary.copy("x", 64 * 1024 - 5)
    assert GenServer.call(rl, check(just_under), @call_timeout) == {:ok, 99}
    assert GenServer.call(rl, check(:"日本")) == {:ok, 99}
    assert GenServer.call(rl, check(:"日本")) == {:ok, 98}
    assert GenServer.call(rl, check(:"日")) == {:ok, 99}
    assert clients(rl) == 3
  end

  @tag cnode_args: ["--max-requests", "3"]
  test "10 000 clients: every one is kept as the table grows, as in the reference", %{node: node} do
    rl = {:rate_limiter, node}
    ref = start_reference!(3, 60_000)
    ids = Enum.flat_map(1..2_500, fn i -> [i, "c#{i}", {:c, i}, [i * 1.5]] end)

    for pass <- 1..2 do
      replies = differential!(rl, ref, Enum.map(ids, &check/1), "pass #{pass} over #{length(ids)} clients")
      assert replies == List.duplicate({:ok, 3 - pass}, length(ids))
    end

    assert clients(rl) == length(ids)
    assert reference_clients(ref) == length(ids)
  end

  test "concurrent callers on one client: exactly max_requests accepted, each remaining once",
       %{node: node} do
    rl = {:rate_limiter, node}
    ref = start_reference!(100, 60_000)
    peers = [start_peer!(), start_peer!()]

    # 2 nodes x 10 processes x 15 calls = 300 requests for one client, all at once.
    for server <- [rl, ref] do
      replies =
        peers
        |> Enum.map(fn peer ->
          Task.async(fn -> peer_call(peer, CNodeTest.Remote, :call_concurrently, [server, check({:hot, 1}), 10, 15], 120_000) end)
        end)
        |> Enum.flat_map(&Task.await(&1, :infinity))

      assert Enum.frequencies(replies) ==
               Map.put(Map.new(0..99, &{{:ok, &1}, 1}), {:error, :rate_limited}, 200),
             "#{inspect(server)}"
    end

    assert differential!(rl, ref, [check({:hot, 1}), check({:hot, 2})], "after the rush") ==
             [{:error, :rate_limited}, {:ok, 99}]
  end

  ## Time

  # A sliding window crossed by sleeping. With max 5 and window W, per client:
  #   phase A (t = 0):           3 accepted                          -> ok 4, 3, 2
  #   phase B (t ~ 0.4 W):       2 accepted, 1 refused               -> ok 1, 0, limited
  #   phase C (A's end + W + m): A expired, B's 2 live; 3 accepted   -> ok 2, 1, 0, limited
  #   phase D (B's end + W + m): B expired, C's 3 live; 2 accepted   -> ok 1, 0, limited
  #   phase E (D's end + W + m): everything expired: a fresh window  -> ok 4, 3
  @window 600
  @tag cnode_args: ["--max-requests", "5", "--window-ms", "#{@window}"]
  test "a short sliding window crossed by sleeping: old requests expire, recent ones still count",
       %{node: node} do
    rl = {:rate_limiter, node}
    ref = start_reference!(5, @window)

    replies = window_scenario!(rl, ref, 1)

    expected = [
      a: [ok: 4, ok: 3, ok: 2],
      b: [ok: 1, ok: 0, error: :rate_limited],
      c: [ok: 2, ok: 1, ok: 0, error: :rate_limited],
      d: [ok: 1, ok: 0, error: :rate_limited],
      e: [ok: 4, ok: 3]
    ]

    # Every client of the scenario went through the same phases.
    for {client, phases} <- replies do
      assert phases == expected, "client #{inspect(client)}: #{inspect(phases)}"
    end
  end

  @tag cnode_args: ["--max-requests", "5", "--window-ms", "500"]
  test "the periodic cleanup forgets idle clients, as the reference does", %{node: node} do
    rl = {:rate_limiter, node}
    ref = start_reference!(5, 500)
    named = ["idle-1", :idle_2, {:idle, 3}, 4]
    # Enough clients that sweeps run in slices, interleaved with the calls that add them.
    bulk = for i <- 1..6_000, do: {:bulk, i}

    replies = differential!(rl, ref, for(id <- named, _ <- 1..2, do: check(id)), "two requests for each of 4 clients")
    assert replies == List.flatten(List.duplicate([{:ok, 4}, {:ok, 3}], 4))
    assert clients(rl) in 1..length(named)

    # One request each: {:ok, 4} whenever the cleanup runs.
    replies = differential!(rl, ref, Enum.map(bulk, &check/1), "one request for each of #{length(bulk)} clients")
    assert replies == List.duplicate({:ok, 4}, length(bulk))

    # Two windows after its last request a client is gone (cleanup runs every window).
    wait_until(fn -> clients(rl) == 0 end, 10_000, "the C node to forget its idle clients")
    wait_until(fn -> reference_clients(ref) == 0 end, 10_000, "the reference to forget its idle clients")

    # Forgotten clients start afresh, on both; the table, shrunk by the sweep, still works.
    ids = named ++ Enum.take_every(bulk, 7)
    replies = differential!(rl, ref, Enum.map(ids, &check/1), "the clients again")
    assert replies == List.duplicate({:ok, 4}, length(ids))
  end

  ## Unknown requests

  test "unknown calls get {:error, {:unknown_call, request}}, change nothing, and the node serves on",
       %{node: node} do
    rl = {:rate_limiter, node}
    ref = start_reference!(100, 60_000)

    assert GenServer.call(rl, check("a")) == {:ok, 99}
    assert GenServer.call(ref, check("a")) == {:ok, 99}

    unknown = [
      :foo,
      {:check_rate},
      {:check_rate, "a", "b"},
      {:check_rates, "a"},
      {"check_rate", "a"},
      [:check_rate, "a"],
      :check_rate,
      {:check_rate, "a"} |> Tuple.insert_at(2, :extra),
      %{check_rate: "a"},
      {make_ref(), 2 ** 70, -0.5}
    ]

    replies = differential!(rl, ref, unknown, "unknown calls")
    assert replies == Enum.map(unknown, &{:error, {:unknown_call, &1}})

    # Casts and plain messages are not calls: ignored by both, nothing counted.
    for server <- [rl, ref] do
      GenServer.cast(server, check("a"))
      GenServer.cast(server, :foo)
      send(server, check("a"))
      send(server, :stray)
    end

    replies = differential!(rl, ref, [check("a"), check("b"), :foo, check("a")], "after the strays")
    assert replies == [{:ok, 98}, {:ok, 99}, {:error, {:unknown_call, :foo}}, {:ok, 97}]
  end

  ## Restarts

  @tag cnode_args: ["--max-requests", "3"]
  test "a client at its limit is still limited after GenServer.stop restarts the server",
       %{node: node} do
    rl = {:rate_limiter, node}
    exhaust_x_and_use_z(rl)

    {:status, old_pid, _, _} = :sys.get_status(rl)
    assert GenServer.stop(rl) == :ok
    new_pid = await_restart(rl, old_pid)
    assert node(new_pid) == node

    assert_after_restart(rl)
  end

  @tag cnode: false
  test "a client at its limit is still limited after the whole node restarts from its data dir" do
    args = ["--max-requests", "3"]
    first = start_cnode(args: args)
    on_exit(fn -> if Process.alive?(first.owner), do: stop_cnode(first) end)
    exhaust_x_and_use_z({:rate_limiter, first.node})

    # SIGTERM: the servers terminate (and save), the node exits 0.
    assert stop_cnode(first) == 0, log_tail(first)
    wait_until(fn -> first.node not in Node.list() end, 10_000, "the connection to #{first.node} to go")

    # The same name, so the same data dir (start_cnode/1 derives it from the name).
    second = start_cnode!(name: first.name, args: args)
    assert_after_restart({:rate_limiter, second.node})
  end

  ## Start-up

  @tag cnode: false
  test "zero or negative limits are refused at start-up with one clear line and no READY" do
    for {flag, value} <- [
          {"--max-requests", "0"},
          {"--max-requests", "-5"},
          {"--window-ms", "0"},
          {"--window-ms", "-5"}
        ] do
      {status, lines} = run_until_exit([flag, value])
      what = "#{flag} #{value}: status #{status}, output #{inspect(lines)}"

      assert status != 0, what
      refute Enum.any?(lines, &String.starts_with?(&1, "READY")), what
      assert [line] = Enum.reject(lines, &(String.trim(&1) == "")), what
      assert line =~ flag, what
      assert line =~ value, what
    end
  end

  ## Helpers: the two servers

  defp check(id), do: {:check_rate, id}

  # A BEAM peer running the reference with these limits; its `{name, node}`.
  defp start_reference!(max, window) do
    {_, peer_node} = peer = start_peer!()

    {:ok, _pid} =
      peer_call(peer, ReferenceRateLimiter, :start, [[max_requests: max, window_ms: window]])

    {:ref_rate_limiter, peer_node}
  end

  # Sends every request to the C node and then to the reference; fails on the first
  # sequence where they differ, naming each differing step; returns the replies.
  defp differential!(rl, ref, requests, what) do
    c = Enum.map(requests, &GenServer.call(rl, &1, @call_timeout))
    r = Enum.map(requests, &GenServer.call(ref, &1, @call_timeout))
    assert_same_replies!(requests, c, r, "the reference (#{what})")
    c
  end

  # Compares the C node's replies with `expected`, step by step, on ===.
  defp assert_same_replies!(requests, c, expected, against) do
    label = if String.starts_with?(against, "the reference"), do: "reference:", else: "expected: "

    steps = Enum.zip([requests, c, expected]) |> Enum.with_index(1)
    diffs = for {{req, got, want}, i} <- steps, got !== want, do: {i, req, got, want}

    if diffs != [] or length(c) != length(expected) do
      shown =
        diffs
        |> Enum.take(20)
        |> Enum.map_join("\n", fn {i, req, got, want} ->
          "  step #{i}: #{inspect(req, limit: 20)}\n    C node:   #{inspect(got)}\n    #{label} #{inspect(want)}"
        end)

      flunk("""
      the C node differs from #{against} at #{length(diffs)} of #{length(requests)} steps:
      #{shown}
      the whole sequence: #{inspect(requests, limit: 12, printable_limit: 80)}
      """)
    end
  end

  defp clients(rl), do: :sys.get_state(rl).clients
  defp reference_clients(ref), do: map_size(:sys.get_state(ref).clients)

  ## Helpers: the window scenario

  @phase_gap div(@window * 2, 5)
  @margin 80
  # How far both servers' clocks may lag or lead this node's for a request to be classified
  # unambiguously (the C node reads its loop time; everything here is one machine's clock).
  @slack 30
  @attempts 5

  defp window_scenario!(rl, ref, attempt) do
    clients = ["w#{attempt}", {:w, attempt, 2.5}]
    run = fn n -> phase(rl, ref, clients, n) end

    a = run.(3)
    Process.sleep(@phase_gap)
    b = run.(3)
    sleep_until(a.done + @window + @margin)
    c = run.(4)
    sleep_until(b.done + @window + @margin)
    d = run.(3)
    sleep_until(d.done + @window + @margin)
    e = run.(2)

    # Each phase's requests were served between its `start` and `done` on this node's
    # clock. The expected replies hold when A was expired and B live during C, B expired and
    # C live during D, and C and D expired during E.
    unambiguous =
      c.start - a.done >= @window + @slack and c.done - b.start < @window - @slack and
        d.start - b.done >= @window + @slack and d.done - c.start < @window - @slack and
        e.start - d.done >= @window + @slack

    phases = [a: a, b: b, c: c, d: d, e: e]

    cond do
      unambiguous ->
        # Only now are both servers bound to the same replies: compare them phase by phase.
        for {name, p} <- phases do
          assert_same_replies!(p.requests, p.c, p.r, "the reference (phase #{name}, attempt #{attempt})")
        end

        for {client, i} <- Enum.with_index(clients) do
          {client, for({name, p} <- phases, do: {name, p.c |> Enum.chunk_every(p.n) |> Enum.at(i)})}
        end

      attempt < @attempts ->
        window_scenario!(rl, ref, attempt + 1)

      true ->
        flunk("the machine was too slow for an unambiguous window scenario in #{@attempts} attempts")
    end
  end

  # `n` requests per client, client by client, each to the C node and then to the
  # reference; both reply lists and the phase's start and end on this node's monotonic
  # clock. Compared by the caller, once the timing is known to be unambiguous.
  defp phase(rl, ref, clients, n) do
    start = now()
    requests = for id <- clients, _ <- 1..n, do: check(id)

    {c, r} =
      requests
      |> Enum.map(&{GenServer.call(rl, &1, @call_timeout), GenServer.call(ref, &1, @call_timeout)})
      |> Enum.unzip()

    %{start: start, done: now(), n: n, requests: requests, c: c, r: r}
  end

  defp now, do: System.monotonic_time(:millisecond)

  defp sleep_until(t), do: Process.sleep(max(t - now(), 0))

  ## Helpers: restarts

  @bulk for i <- 1..2_000, do: {:bulk, i}

  # Max 3: "x" is exhausted (and refused once), {:z, 1.0} has one request in its window,
  # and 2 000 more clients one each, so that there is a state of some size to save and load.
  defp exhaust_x_and_use_z(rl) do
    assert Enum.map(1..4, fn _ -> GenServer.call(rl, check("x")) end) ==
             [{:ok, 2}, {:ok, 1}, {:ok, 0}, {:error, :rate_limited}]

    assert GenServer.call(rl, check({:z, 1.0})) == {:ok, 2}
    assert Enum.map(@bulk, &GenServer.call(rl, check(&1))) == List.duplicate({:ok, 2}, length(@bulk))
  end

  defp assert_after_restart(rl) do
    # The first call waits until the saved state is loaded.
    assert GenServer.call(rl, check("x"), @call_timeout) == {:error, :rate_limited}
    assert clients(rl) == length(@bulk) + 2
    assert GenServer.call(rl, check("y"), @call_timeout) == {:ok, 2}
    assert GenServer.call(rl, check({:z, 1.0}), @call_timeout) == {:ok, 1}
    assert GenServer.call(rl, check({:z, 1}), @call_timeout) == {:ok, 2}
    assert GenServer.call(rl, check("x"), @call_timeout) == {:error, :rate_limited}
    assert Enum.map(@bulk, &GenServer.call(rl, check(&1))) == List.duplicate({:ok, 1}, length(@bulk))
  end

  defp await_restart(rl, old_pid) do
    wait_until(
      fn ->
        try do
          case :sys.get_status(rl, 1_000) do
            {:status, pid, _, _} when pid != old_pid -> pid
            _ -> nil
          end
        catch
          :exit, _ -> nil
        end
      end,
      10_000,
      "a new pid for #{inspect(rl)}"
    )
  end

  ## Helpers: a node that must not start

  # Runs the C node with these flags and waits (bounded) for it to exit; its status and
  # output lines (stdout and stderr). A node that prints READY is stopped, and fails the test.
  defp run_until_exit(args) do
    name = unique_name("bad")
    data_dir = Path.join([run_dir(), "data", name])
    File.mkdir_p!(data_dir)

    port =
      Port.open({:spawn_executable, cnode_bin()}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 4096},
        args: ["--name", "#{name}@127.0.0.1", "--cookie", cookie(), "--data-dir", data_dir] ++ args
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    File.write!(System.fetch_env!("CNODE_TEST_PIDFILE"), "#{os_pid}\n", [:append])
    collect_until_exit(port, os_pid, [])
  end

  defp collect_until_exit(port, os_pid, lines) do
    receive do
      {^port, {:data, {_, "READY" <> _ = line}}} ->
        System.cmd("kill", ["-KILL", "#{os_pid}"], stderr_to_stdout: true)
        receive do: ({^port, {:exit_status, _}} -> :ok)
        flunk("the node started (#{line}) although its flags were invalid")

      {^port, {:data, {_, line}}} ->
        collect_until_exit(port, os_pid, [line | lines])

      {^port, {:exit_status, status}} ->
        {status, Enum.reverse(lines)}
    after
      10_000 ->
        System.cmd("kill", ["-KILL", "#{os_pid}"], stderr_to_stdout: true)
        receive do: ({^port, {:exit_status, _}} -> :ok)
        flunk("the node neither exited nor printed READY within 10 s: #{inspect(Enum.reverse(lines))}")
    end
  end

  ## The client ids

  # Pairwise different (not ===) terms of every type.
  defp distinct_ids do
    {pid, mref} = spawn_monitor(fn -> :ok end)
    receive do: ({:DOWN, ^mref, _, _, _} -> :ok)

    [
      # binaries and bitstrings
      "a",
      "",
      "client-42",
      <<0, 255, 1>>,
      "héllo wörld",
      "日本語のクライアント",
      :binary.copy("x", 300),
      <<1::3>>,
      <<1::3, 0::5>>,
      <<0::1>>,
      <<0::2>>,
      <<0::7>>,
      <<0>>,
      # atoms
      :a,
      :"",
      nil,
      true,
      false,
      Elixir.Foo,
      :héllo,
      :日本,
      :"with spaces",
      String.to_atom(String.duplicate("é", 255)),
      # integers: small, 32-bit, 64-bit, bignums both signs
      0,
      1,
      -1,
      255,
      256,
      -256,
      2 ** 27,
      2 ** 31 - 1,
      2 ** 31,
      -(2 ** 31),
      -(2 ** 31) - 1,
      2 ** 32 - 1,
      2 ** 32,
      2 ** 63 - 1,
      2 ** 63,
      -(2 ** 63),
      2 ** 64,
      -(2 ** 64),
      2 ** 64 + 1,
      2 ** 200,
      -(2 ** 200),
      2 ** 2100,
      -(2 ** 2100) - 7,
      # floats
      1.0,
      -1.0,
      0.5,
      0.1 + 0.2,
      0.3,
      1.0e300,
      -2.5e-300,
      5.0e-324,
      1.7976931348623157e308,
      0.0,
      4.2e1,
      # tuples
      {},
      {:user, 42},
      {:user, 42.0},
      {:user, "42"},
      {"user", 42},
      {1, {2, {3}}},
      List.to_tuple(Enum.to_list(1..300)),
      # lists
      [],
      [1, 2, 3],
      [1.0, 2, 3],
      ~c"abc",
      [?a, ?b, ?c, 256],
      [1 | 2],
      [[]],
      ["a", :b, 1.5, {}],
      # The longest byte list that fits the C node's 64 KiB id limit (STRING_EXT); longer
      # ones, sent as LIST_EXT, are over it: see the :bad_client_id test.
      List.duplicate(?x, 65_000),
      # maps
      %{},
      %{a: 1},
      %{a: 1.0},
      %{1 => :x},
      %{1.0 => :x},
      %{"a" => 1, :b => 2, 3 => [4], {5} => %{}},
      %{a: %{b: %{c: 1}}},
      %{a: %{b: %{c: 2}}},
      Map.new(1..40, &{&1, "v#{&1}"}),
      Map.new(1..40, &{&1, "w#{&1}"}),
      # pids, refs, ports, funs
      self(),
      pid,
      make_ref(),
      make_ref(),
      hd(Port.list()),
      &Enum.map/2,
      &Enum.reduce/3,
      fn x -> {x, pid} end,
      # mixed
      {:session, self(), make_ref(), %{"n" => [1, 2.5, :x]}}
    ]
  end

  # {what, a, b}: a === b, built or encoded differently.
  defp same_terms do
    neg_zero = :erlang.binary_to_term(<<131, 70, 128, 0, 0, 0, 0, 0, 0, 0>>)
    # The premise of the -0.0 cases: it really is the negative zero, encoded with its sign.
    <<131, 70, 128, _::binary>> = :erlang.term_to_binary(neg_zero)

    compound = %{"k" => [1.5, -2.25e-10, :héllo, {2 ** 70, -(2 ** 40)}], :v => {0.1, "日本"}}
    compound2 = Map.put(compound, :c2, [compound])
    {other_pid, mref} = spawn_monitor(fn -> :ok end)
    receive do: ({:DOWN, ^mref, _, _, _} -> :ok)
    ref = make_ref()
    big = Map.new(1..33, &{&1, &1})

    [
      {"a map built in two key orders", %{a: 1, b: 2, c: 3}, Map.new([c: 3, b: 2, a: 1])},
      {"a map built by puts", %{"x" => 1, :y => 2, 3 => 4},
       %{3 => 4} |> Map.put(:y, 2) |> Map.put("x", 1)},
      {"a nested map in two key orders", %{outer: %{b: [1], a: %{d: 4, c: 3}}, z: 0},
       %{z: 0, outer: %{a: %{c: 3, d: 4}, b: [1]}}},
      {"a 40-key map built forwards and backwards", Map.new(1..40, &{&1, &1}),
       Map.new(Enum.reverse(1..40), &{&1, &1})},
      {"a 32-key map made from a 33-key one", Map.delete(big, 33), Map.new(1..32, &{&1, &1})},
      {"a term through term_to_binary(minor_version: 0)", compound,
       :erlang.binary_to_term(:erlang.term_to_binary(compound, minor_version: 0))},
      {"a term through compressed term_to_binary", compound2,
       :erlang.binary_to_term(:erlang.term_to_binary(compound2, compressed: 9))},
      {"a float through term_to_binary(minor_version: 0)", 0.1 + 0.2,
       :erlang.binary_to_term(:erlang.term_to_binary(0.1 + 0.2, minor_version: 0))},
      {"a charlist and the same code points", ~c"abc", [?a, ?b, ?c]},
      {"a UTF-8 binary and its bytes", "héllo", <<104, 195, 169, 108, 108, 111>>},
      {"a sub-binary", "hello", binary_part("xxhelloxx", 2, 5)},
      {"an atom from a literal and from a string", :héllo, String.to_atom("héllo")},
      {"a latin-1 atom built from latin-1 bytes", :façade, :erlang.binary_to_atom(<<"fa", 231, "ade">>, :latin1)},
      {"a bignum computed two ways", 2 ** 64, 18_446_744_073_709_551_615 + 1},
      {"a negative bignum computed two ways", -(2 ** 100), -Integer.pow(2, 100)},
      {"a tuple built three ways", {:user, 42}, List.to_tuple([:user, 42])},
      {"a tuple built with put_elem", {:member, 43}, put_elem({:member, 0}, 1, 43)},
      {"a pid and its round trip through pid_to_list", self(), :erlang.list_to_pid(:erlang.pid_to_list(self()))},
      {"a pid through term_to_binary", other_pid, :erlang.binary_to_term(:erlang.term_to_binary(other_pid))},
      {"a ref through term_to_binary", ref, :erlang.binary_to_term(:erlang.term_to_binary(ref))}
    ] ++ negative_zero_terms(neg_zero)
  end

  # 0.0 and -0.0 are one term (===) and one map key up to OTP 26, two from OTP 27 on. The C
  # node keeps OTP 25's rule (genserver/term_key.h), so these are one client only where this
  # node agrees; on OTP 27 and later they are left out.
  defp negative_zero_terms(neg_zero) do
    if 0.0 === neg_zero do
      [
        {"0.0 and -0.0 (=== on OTP 25)", 0.0, neg_zero},
        {"{0.0} and {-0.0}", {0.0}, {neg_zero}},
        {"a map value 0.0 and -0.0", %{k: 0.0}, %{k: neg_zero}},
        {"a map key 0.0 and -0.0", %{0.0 => 1}, %{neg_zero => 1}}
      ]
    else
      []
    end
  end

  # {what, a, b}: not ===, though alike in value, bytes or printing.
  defp different_terms do
    [
      {"1 and 1.0", 1, 1.0},
      {"{1} and {1.0}", {1}, {1.0}},
      {"%{1 => 1} and %{1.0 => 1}", %{1 => 1}, %{1.0 => 1}},
      {"%{a: 1} and %{a: 1.0}", %{a: 1}, %{a: 1.0}},
      {"[] and \"\"", [], ""},
      {"{} and %{}", {}, %{}},
      {"a charlist and a binary", ~c"xyz", "xyz"},
      {"an atom and a binary", :a, "a"},
      {"{:guest, 1} and [:guest, 1]", {:guest, 1}, [:guest, 1]},
      {"-1 and 2 ** 32 - 1", -1, 2 ** 32 - 1},
      {"-2 and 2 ** 64 - 2", -2, 2 ** 64 - 2},
      {"7 and 2 ** 64 + 7", 7, 2 ** 64 + 7},
      {"2 ** 65 and its float", 2 ** 65, 2.0 ** 65},
      {"<<0::1>> and <<0::2>>", <<0::1>>, <<0::2>>},
      {"<<1::3>> and <<32>>", <<1::3>>, <<32>>},
      {"256 and <<1, 0>>", 256, <<1, 0>>},
      {"an improper and a proper list", [1 | 2], [1, 2]},
      {"two refs", make_ref(), make_ref()},
      {"maps differing in one nested value", %{a: %{b: 1}}, %{a: %{b: 2}}},
      {"atoms differing in case", :Abc, :abc}
    ]
  end
end
