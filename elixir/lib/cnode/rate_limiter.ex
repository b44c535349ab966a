defmodule CNode.RateLimiter do
  @moduledoc """
  The client API of the C node's `rate_limiter` server, the same as the Elixir
  `RateLimiter`'s: at most `--max-requests` accepted requests per client in any sliding
  window of `--window-ms` (pass them in the `CNode` child's `:args`; defaults 100 per
  60 000 ms).

      alias CNode.RateLimiter
      RateLimiter.check_rate(:"counter@127.0.0.1", "client-42")   # {:ok, 99}

  `server` is as for `CNode.Counter` (`CNode.server_ref/2`, here for `:rate_limiter`).
  """

  @typedoc "Where the rate limiter is: see `CNode.server_ref/2`."
  @type server :: CNode.server()

  @doc """
  Counts a request of `client_id` (any term; two ids are the same client when they would be
  the same Elixir map key): `{:ok, remaining}` when accepted, `{:error, :rate_limited}` when
  the client's window is full (not counted). `{:error, :bad_client_id}` for an id nested more
  than 10 000 levels deep.
  """
  @spec check_rate(server(), term()) ::
          {:ok, non_neg_integer()} | {:error, :rate_limited} | {:error, :bad_client_id}
  def check_rate(server, client_id),
    do: GenServer.call(CNode.server_ref(server, :rate_limiter), {:check_rate, client_id})
end
