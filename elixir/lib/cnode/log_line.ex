defmodule CNode.LogLine do
  @moduledoc """
  Reads one line of a node's output (stdout and stderr merged).

  The node writes `READY <name> <port>` on stdout once it can be called, and its log lines
  on stderr as `HH:MM:SS.mmm LEVEL [component] message` (cnode/log.c; untrusted text is
  escaped there, so one line is one entry and none can pass for READY). Errors before the
  log starts (bad flags, an unusable data dir) are `cnode: ...` lines, and anything else
  (a sanitizer's report, a C library's complaint) is taken as an error too.
  """

  @log ~r/^\d\d:\d\d:\d\d\.\d{3} (debug|info|warning|error) +\[([^\]]*)\] (.*)$/s

  @type t :: {:ready, String.t(), pos_integer()} | {Logger.level(), String.t(), String.t()}

  @doc """
  `{:ready, node_name, port}` (the name as a string: no atom is made from output), or
  `{level, component, message}`.

      iex> CNode.LogLine.parse("READY c@127.0.0.1 4242")
      {:ready, "c@127.0.0.1", 4242}
      iex> CNode.LogLine.parse("21:10:11.964 info    [node] shutting down")
      {:info, "node", "shutting down"}
      iex> CNode.LogLine.parse("cnode: --window-ms needs an integer")
      {:error, "cnode", "--window-ms needs an integer"}
  """
  @spec parse(String.t()) :: t()
  def parse("READY " <> rest = line) do
    with [name, port] <- String.split(rest, " "),
         {port, ""} <- Integer.parse(port) do
      {:ready, name, port}
    else
      _ -> {:error, "output", line}
    end
  end

  def parse("cnode: " <> message), do: {:error, "cnode", message}

  def parse(line) do
    case Regex.run(@log, line, capture: :all_but_first) do
      [level, component, message] -> {String.to_existing_atom(level), component, message}
      nil -> {:error, "output", line}
    end
  end
end
