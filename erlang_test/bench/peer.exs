# The BEAM peer of `make bench`: runs the Elixir Counter and RateLimiter (servers.ex, compiled
# by scripts/bench.sh onto the code path) under a one_for_one supervisor, as the seed's
# application does, registered as :counter and :rate_limiter.
#
#   elixir --name peer_<run>@127.0.0.1 --cookie C -pa EBIN peer.exs MAX_REQUESTS WINDOW_MS LIFETIME_S
#
# Prints "READY <node> <os pid>" once both serve. Stays up until the caller sends :stop to
# {:bench_peer, node} or LIFETIME_S passes (so it stops by itself even if the script that
# started it was killed), then halts. scripts/bench.sh also stops it by pid at the end.

defmodule BenchPeer do
  @moduledoc "Probes the caller runs on the peer with :erpc (MFAs: the caller's code is not here)."

  @doc """
  The RateLimiter process's memory after a forced GC (:erlang.process_info(pid, :memory)),
  the flat size of its state in bytes (the map, keys, lists: the data itself), and the
  number of clients. Run it after reading the peer's RSS: it copies the state once.
  """
  def rate_limiter_memory do
    pid = Process.whereis(:rate_limiter)
    true = :erlang.garbage_collect(pid)
    {:memory, mem} = Process.info(pid, :memory)
    state = :sys.get_state(pid, 60_000)
    words = :erts_debug.flat_size(state)
    %{process: mem, state: words * :erlang.system_info(:wordsize), clients: map_size(state.clients)}
  end
end

[max_requests, window_ms, lifetime_s] = Enum.map(System.argv(), &String.to_integer/1)

children = [
  {Counter, []},
  {RateLimiter, [max_requests: max_requests, window_ms: window_ms]}
]

{:ok, _sup} = Supervisor.start_link(children, strategy: :one_for_one, name: BenchPeer.Supervisor)
Process.register(self(), :bench_peer)
IO.puts("READY #{node()} #{System.pid()}")

receive do
  :stop -> :ok
after
  lifetime_s * 1000 -> IO.puts(:stderr, "bench peer: lifetime of #{lifetime_s} s over, halting")
end

System.halt(0)
