defmodule Counter do
  @moduledoc """
  The Counter of DESIGN.md as the seed has it in Elixir: the BEAM side of `make bench`.
  State: the integer value. Registered as `:counter`.
  """
  use GenServer

  def start_link(opts \\ []) do
    GenServer.start_link(__MODULE__, Keyword.get(opts, :initial, 0), name: Keyword.get(opts, :name, :counter))
  end

  @impl true
  def init(initial) when is_integer(initial), do: {:ok, initial}

  @impl true
  def handle_call(:increment, _from, value), do: {:reply, value + 1, value + 1}
  def handle_call(:decrement, _from, value), do: {:reply, value - 1, value - 1}
  def handle_call(:get_value, _from, value), do: {:reply, value, value}
  def handle_call(request, _from, value), do: {:reply, {:error, {:unknown_call, request}}, value}

  @impl true
  def handle_cast(:increment, value), do: {:noreply, value + 1}
  def handle_cast(_request, value), do: {:noreply, value}
end

defmodule RateLimiter do
  @moduledoc """
  The RateLimiter of DESIGN.md as the seed has it in Elixir: the BEAM side of `make bench`.

  At most `max_requests` accepted requests per client within a sliding window of
  `window_ms`. State: the config and a map `client_id => accepted timestamps` (monotonic
  ms, newest first); every `window_ms` a cleanup drops expired timestamps and forgets idle
  clients. Registered as `:rate_limiter`.
  """
  use GenServer

  def start_link(opts \\ []) do
    GenServer.start_link(__MODULE__, opts, name: Keyword.get(opts, :name, :rate_limiter))
  end

  @impl true
  def init(opts) do
    max = Keyword.get(opts, :max_requests, 100)
    window = Keyword.get(opts, :window_ms, 60_000)
    schedule_cleanup(window)
    {:ok, %{max_requests: max, window_ms: window, clients: %{}}}
  end

  @impl true
  def handle_call({:check_rate, client_id}, _from, state) do
    %{max_requests: max, window_ms: window, clients: clients} = state
    now = System.monotonic_time(:millisecond)
    recent = clients |> Map.get(client_id, []) |> Enum.filter(fn t -> now - t < window end)
    count = length(recent)

    if count >= max do
      {:reply, {:error, :rate_limited}, %{state | clients: Map.put(clients, client_id, recent)}}
    else
      {:reply, {:ok, max - count - 1}, %{state | clients: Map.put(clients, client_id, [now | recent])}}
    end
  end

  def handle_call(request, _from, state), do: {:reply, {:error, {:unknown_call, request}}, state}

  @impl true
  def handle_cast(_request, state), do: {:noreply, state}

  @impl true
  def handle_info(:cleanup, %{window_ms: window, clients: clients} = state) do
    now = System.monotonic_time(:millisecond)

    clients =
      for {id, stamps} <- clients,
          recent = Enum.filter(stamps, fn t -> now - t < window end),
          recent != [],
          into: %{},
          do: {id, recent}

    schedule_cleanup(window)
    {:noreply, %{state | clients: clients}}
  end

  def handle_info(_message, state), do: {:noreply, state}

  defp schedule_cleanup(window), do: Process.send_after(self(), :cleanup, window)
end
