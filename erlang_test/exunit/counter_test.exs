defmodule CounterTest do
  @moduledoc "The Counter on the C node answers exactly as the Elixir GenServer would."
  use CNodeTest.Case, async: false

  test "increment, decrement and get_value reply the new or current value", %{counter: counter} do
    assert GenServer.call(counter, :get_value) == 0
    assert GenServer.call(counter, :increment) == 1
    assert GenServer.call(counter, :increment) == 2
    assert GenServer.call(counter, :get_value) == 2
    assert GenServer.call(counter, :decrement) == 1
    assert GenServer.call(counter, :decrement) == 0
    assert GenServer.call(counter, :decrement) == -1
    assert GenServer.call(counter, :get_value) == -1
  end

  test "a cast increments; a later call from the same process observes it", %{counter: counter} do
    assert GenServer.cast(counter, :increment) == :ok
    assert GenServer.cast(counter, :increment) == :ok
    assert GenServer.call(counter, :get_value) == 2
  end

  test "an unknown call gets {:error, {:unknown_call, request}} and changes nothing",
       %{counter: counter} do
    assert GenServer.call(counter, :increment) == 1

    requests = [
      :reset,
      {:add, 5},
      "a binary",
      [1, 2.5, :three],
      %{"map" => {:nested, [self()]}},
      {make_ref(), 2 ** 70, -(2 ** 40)}
    ]

    for request <- requests do
      assert GenServer.call(counter, request) == {:error, {:unknown_call, request}}
    end

    assert GenServer.call(counter, :get_value) == 1
  end

  test "unknown casts and stray messages are ignored and the node keeps serving",
       %{counter: counter} do
    assert GenServer.cast(counter, :decrement) == :ok
    assert GenServer.cast(counter, {:set, 100}) == :ok
    send(counter, :stray_message)
    send(counter, {:stray, self(), make_ref()})
    assert GenServer.call(counter, :get_value) == 0
    assert GenServer.call(counter, :increment) == 1
  end

  @tag cnode_args: ["--counter-initial", "9223372036854775807"]
  test "past 2^63 the value goes on as an Elixir integer would, a bignum", %{counter: counter} do
    max = 2 ** 63 - 1
    assert GenServer.call(counter, :get_value) == max
    assert GenServer.call(counter, :increment) == max + 1
    assert GenServer.call(counter, :increment) == max + 2
    assert :sys.get_state(counter) == max + 2
    assert GenServer.call(counter, :decrement) == max + 1
    assert GenServer.call(counter, :decrement) == max
  end

  @tag cnode_args: ["--counter-initial", "-9223372036854775808"]
  test "below -2^63 too", %{counter: counter} do
    assert GenServer.call(counter, :decrement) == -(2 ** 63) - 1
    assert GenServer.cast(counter, :increment) == :ok
    assert GenServer.call(counter, :get_value) == -(2 ** 63)
  end

  test "2 caller nodes x 50 processes incrementing at once lose no increment",
       %{counter: counter} do
    peers = [start_peer!(), start_peer!()]
    procs = 50
    calls = 20
    total = length(peers) * procs * calls

    replies =
      peers
      |> Enum.map(fn peer ->
        Task.async(fn ->
          peer_call(peer, CNodeTest.Remote, :call_concurrently, [counter, :increment, procs, calls], 120_000)
        end)
      end)
      |> Enum.flat_map(&Task.await(&1, :infinity))

    # Every increment replied a distinct new value: together exactly 1..total.
    assert length(replies) == total
    assert Enum.sort(replies) == Enum.to_list(1..total)
    assert GenServer.call(counter, :get_value) == total
  end
end
