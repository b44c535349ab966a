defmodule CNode.Counter do
  @moduledoc """
  The client API of the C node's `counter` server, the same as the Elixir `Counter`'s.

  Swap an Elixir counter for the C one by changing an alias:

      # alias MyApp.Counter
      alias CNode.Counter

      Counter.increment(MyApp.Counter)   # MyApp.Counter: the CNode child's :register name

  The `server` argument is anything `CNode.server_ref/2` takes: the node's name
  (`:"counter@127.0.0.1"`), the `:register` name of the `CNode` child, `{name, node}` for a
  counter registered under another name, or a pid. Calls have `GenServer.call/2`'s default
  timeout of 5 s and exit as it does (`:noproc`, `:nodedown`, `:timeout`).
  """

  @typedoc "Where the counter is: see `CNode.server_ref/2`."
  @type server :: CNode.server()

  @doc "Adds 1 and returns the new value; `{:error, :overflow}` past 128 bits (nothing changes)."
  @spec increment(server()) :: integer() | {:error, :overflow}
  def increment(server), do: GenServer.call(ref(server), :increment)

  @doc "Subtracts 1 and returns the new value."
  @spec decrement(server()) :: integer() | {:error, :overflow}
  def decrement(server), do: GenServer.call(ref(server), :decrement)

  @doc "The current value."
  @spec get_value(server()) :: integer()
  def get_value(server), do: GenServer.call(ref(server), :get_value)

  @doc "Adds 1 without waiting (a cast): always `:ok`, as `GenServer.cast/2`."
  @spec increment_async(server()) :: :ok
  def increment_async(server), do: GenServer.cast(ref(server), :increment)

  defp ref(server), do: CNode.server_ref(server, :counter)
end
