defmodule CNodeTest.ReferenceRateLimiter do
  @moduledoc """
  The RateLimiter contract of DESIGN.md written as a plain Elixir GenServer: the reference
  the C node's `rate_limiter` is compared with, reply by reply.

  State: a map `client_id => accepted timestamps` (monotonic milliseconds, newest first),
  so two client ids are one client exactly when they are one key of an Elixir map (`===`).

    * `{:check_rate, id}`: timestamps with `now - t >= window_ms` no longer count; with
      `max_requests` or more left the request is refused (`{:error, :rate_limited}`, not
      recorded), else it is recorded and the reply is `{:ok, max_requests - count_after}`.
    * `:cleanup`, every `window_ms`: drops expired timestamps and forgets idle clients.
    * Any other call: `{:error, {:unknown_call, request}}`, state unchanged. Casts and other
      messages are ignored.

  Options: `:max_requests` (default 100), `:window_ms` (default 60 000). It is started on a
  BEAM peer with `start/1`, registered as `:ref_rate_limiter` unless `:name` says otherwise.
  """
  use GenServer

  @default_name :ref_rate_limiter

  @doc "Starts the reference unlinked (it outlives the process that starts it) and registered."
  def start(opts \\ []) do
    name = Keyword.get(opts, :name, @default_name)
    GenServer.start(__MODULE__, opts, name: name)
  end

  @impl true
  def init(opts) do
    max = Keyword.get(opts, :max_requests, 100)
    window = Keyword.get(opts, :window_ms, 60_000)

    unless is_integer(max) and max > 0 and is_integer(window) and window > 0 do
      raise ArgumentError, "max_requests and window_ms must be positive integers"
    end

    schedule_cleanup(window)
    {:ok, %{max_requests: max, window_ms: window, clients: %{}}}
  end

  @impl true
  def handle_call({:check_rate, client_id}, _from, state) do
    %{max_requests: max, window_ms: window, clients: clients} = state
    now = now()
    live = clients |> Map.get(client_id, []) |> live(now, window)
    count = length(live)

    if count >= max do
      {:reply, {:error, :rate_limited}, %{state | clients: Map.put(clients, client_id, live)}}
    else
      clients = Map.put(clients, client_id, [now | live])
      {:reply, {:ok, max - (count + 1)}, %{state | clients: clients}}
    end
  end

  def handle_call(request, _from, state) do
    {:reply, {:error, {:unknown_call, request}}, state}
  end

  @impl true
  def handle_cast(_request, state), do: {:noreply, state}

  @impl true
  def handle_info(:cleanup, %{window_ms: window, clients: clients} = state) do
    now = now()

    clients =
      for {id, stamps} <- clients, live = live(stamps, now, window), live != [], into: %{} do
        {id, live}
      end

    schedule_cleanup(window)
    {:noreply, %{state | clients: clients}}
  end

  def handle_info(_message, state), do: {:noreply, state}

  defp live(stamps, now, window), do: Enum.filter(stamps, fn t -> now - t < window end)

  defp now, do: System.monotonic_time(:millisecond)

  defp schedule_cleanup(window), do: Process.send_after(self(), :cleanup, window)
end
