defmodule CNode.LogLineTest do
  use ExUnit.Case, async: true
  doctest CNode.LogLine

  alias CNode.LogLine

  test "every level of the node's log, with the component and the message as written" do
    for level <- ~w(debug info warning error) do
      line = "23:59:59.001 #{String.pad_trailing(level, 7)} [gen_server] counter: unknown cast {:x, \"]\"}"
      assert LogLine.parse(line) == {String.to_atom(level), "gen_server", "counter: unknown cast {:x, \"]\"}"}
    end
  end

  test "what is not a log line is an error entry, kept whole" do
    assert LogLine.parse("==4711==ERROR: AddressSanitizer: heap-use-after-free") ==
             {:error, "output", "==4711==ERROR: AddressSanitizer: heap-use-after-free"}

    assert LogLine.parse("READY not-a-port") == {:error, "output", "READY not-a-port"}
    assert LogLine.parse("[heart] no timestamp") == {:error, "output", "[heart] no timestamp"}
  end
end
