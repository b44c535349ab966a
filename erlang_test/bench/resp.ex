defmodule Bench.Resp do
  @moduledoc """
  A plain RESP2 client over :gen_tcp for the durability section of `make bench` (hex is not
  reachable here, and the bench wants nothing between the caller and the socket anyway).

  One connection is owned by the process that opened it and used synchronously: send one
  command, read its one reply, as a caller that checks a connection out of a pool of one
  would. Passive mode, so a reply is read by the caller itself, with no process hop.

  Commands are lists of binaries or integers, sent as a RESP array of bulk strings.
  Replies decode to: integers, binaries (simple and bulk strings), nil (null bulk string or
  array), lists (arrays), and {:error, message} for error replies.
  """

  @recv_timeout 15_000

  @doc "Connects to 127.0.0.1:port (binary, passive, TCP_NODELAY as Redis clients set it)."
  def connect(port) do
    {:ok, sock} =
      :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false, nodelay: true, packet: :raw], 5_000)

    sock
  end

  def close(sock), do: :gen_tcp.close(sock)

  @doc "Sends one command and returns its reply; exits when the connection fails."
  def command(sock, args) do
    :ok = :gen_tcp.send(sock, encode(args))
    read_reply(sock, <<>>)
  end

  @doc "The RESP array of bulk strings for `args`, as iodata."
  def encode(args) do
    ["*", Integer.to_string(length(args)), "\r\n" | Enum.map(args, &bulk/1)]
  end

  defp bulk(v) when is_integer(v), do: bulk(Integer.to_string(v))
  defp bulk(v) when is_binary(v), do: ["$", Integer.to_string(byte_size(v)), "\r\n", v, "\r\n"]

  defp read_reply(sock, buf) do
    case decode(buf) do
      {:ok, value, <<>>} ->
        value

      {:ok, _value, rest} ->
        exit({:resp_trailing_bytes, rest})

      :more ->
        case :gen_tcp.recv(sock, 0, @recv_timeout) do
          {:ok, data} -> read_reply(sock, buf <> data)
          {:error, reason} -> exit({:resp_recv, reason})
        end
    end
  end

  @doc """
  Decodes one reply from the front of `buf`: {:ok, value, rest}, or :more when `buf` does
  not hold a whole reply yet. Exits on bytes that are not RESP.
  """
  def decode(<<>>), do: :more

  def decode(<<type, rest::binary>> = buf) do
    case line(rest) do
      :more -> :more
      {text, after_line} -> decode_type(type, text, after_line, buf)
    end
  end

  defp decode_type(?+, text, rest, _buf), do: {:ok, text, rest}
  defp decode_type(?-, text, rest, _buf), do: {:ok, {:error, text}, rest}
  defp decode_type(?:, text, rest, _buf), do: {:ok, String.to_integer(text), rest}
  defp decode_type(?$, "-1", rest, _buf), do: {:ok, nil, rest}

  defp decode_type(?$, text, rest, _buf) do
    n = String.to_integer(text)

    case rest do
      <<value::binary-size(n), "\r\n", tail::binary>> -> {:ok, value, tail}
      _ -> :more
    end
  end

  defp decode_type(?*, "-1", rest, _buf), do: {:ok, nil, rest}
  defp decode_type(?*, text, rest, _buf), do: elements(String.to_integer(text), rest, [])
  defp decode_type(_type, _text, _rest, buf), do: exit({:not_resp, binary_part(buf, 0, min(byte_size(buf), 64))})

  defp elements(0, rest, acc), do: {:ok, Enum.reverse(acc), rest}

  defp elements(n, rest, acc) do
    case decode(rest) do
      {:ok, value, tail} -> elements(n - 1, tail, [value | acc])
      :more -> :more
    end
  end

  # The text up to the first CRLF and what follows it, or :more.
  defp line(bin) do
    case :binary.match(bin, "\r\n") do
      {pos, 2} -> {binary_part(bin, 0, pos), binary_part(bin, pos + 2, byte_size(bin) - pos - 2)}
      :nomatch -> :more
    end
  end
end
