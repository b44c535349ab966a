defmodule CNodeTest do
  @moduledoc """
  Shared setup of the interop tests: C nodes, BEAM peers, bounded waits and logs.

  scripts/exunit.sh provides the run through the environment: `CNODE_BIN` (the binary),
  `CNODE_SAN_BIN` (the sanitized build, `make SANITIZER=address,undefined`, for the tests
  that must show no sanitizer report),
  `CNODE_TEST_RUN_ID` (in every node name, so names are unique per run),
  `CNODE_TEST_RUN_DIR` (logs and data dirs), `CNODE_TEST_PIDFILE` (every OS pid started
  here is appended, so the script can kill what a crashed run left) and `ERL_EPMD_PORT`
  (the run's private epmd, inherited by every node). The cookie is this node's own.

  A C node is spawned through `sh -c 'exec ... 2>>log'`, so the port's OS pid is the
  node's own and its stderr goes to `<run dir>/<name>.log`.
  """

  import ExUnit.Assertions

  @host "127.0.0.1"
  @ready_timeout 20_000
  @stop_timeout 10_000

  defmodule CNode do
    @moduledoc "A running C node: its node name, distribution port, OS pid and log file."
    defstruct [:name, :node, :port, :os_pid, :log, :owner, :data_dir, :bin]
  end

  ## The run

  def run_id, do: System.fetch_env!("CNODE_TEST_RUN_ID")
  def run_dir, do: System.fetch_env!("CNODE_TEST_RUN_DIR")
  def cookie, do: Atom.to_string(Node.get_cookie())

  def cnode_bin do
    bin = System.get_env("CNODE_BIN", "build/cnode")
    Path.expand(bin, Path.expand("../../..", __DIR__))
  end

  @doc "The sanitized C node (ASan and UBSan), which `make ct`/`make exunit` build first."
  def san_bin do
    bin = System.get_env("CNODE_SAN_BIN", "build/san/cnode")
    Path.expand(bin, Path.expand("../../..", __DIR__))
  end

  @doc "The sanitizer reports in a C node's log: AddressSanitizer, LeakSanitizer or UBSan lines."
  def sanitizer_reports(%CNode{log: log}) do
    case File.read(log) do
      {:ok, data} ->
        data |> String.split("\n") |> Enum.filter(&(&1 =~ ~r/ERROR: \w+Sanitizer|runtime error:/))

      {:error, _} ->
        []
    end
  end

  @doc "A node name part unique in this run, e.g. `c3_114501_4242`."
  def unique_name(prefix), do: "#{prefix}#{System.unique_integer([:positive])}_#{run_id()}"

  defp record_os_pid(os_pid) do
    File.write!(System.fetch_env!("CNODE_TEST_PIDFILE"), "#{os_pid}\n", [:append])
  end

  ## C nodes

  @doc """
  Starts a C node and waits for its READY line; stops it when the test ends and fails the
  test if it then does not exit 0 on SIGTERM (a crash during the test shows up there).

  Options: as for `launch_cnode/1`.
  """
  def start_cnode!(opts \\ []) do
    cnode = start_cnode(opts)

    ExUnit.Callbacks.on_exit(fn ->
      case stop_cnode(cnode) do
        0 -> :ok
        status -> flunk("#{cnode.node} exited with status #{status} on SIGTERM\n" <> log_tail(cnode))
      end
    end)

    cnode
  end

  @doc "Starts a C node without an on_exit hook; see `start_cnode!/1`."
  def start_cnode(opts \\ []) do
    case launch_cnode(opts) do
      {:ready, cnode} ->
        cnode

      {:exited, status, cnode} ->
        flunk("#{cnode.node} exited with status #{status} before READY\n" <> log_tail(cnode))
    end
  end

  @doc """
  Starts a C node and waits (bounded) for its READY line or its exit, whichever comes
  first: `{:ready, cnode}` or `{:exited, status, cnode}`. No on_exit hook.

  Options: `:args` (more flags), `:cookie` (default the run's), `:name`, `:data_dir`
  (default `<run dir>/data/<name>`, created; a given one is passed on as it is), `:bin`
  (default `cnode_bin/0`, e.g. `san_bin/0`), `:host` (the part after `@`, default
  127.0.0.1; `"::1"` with `--proto-dist inet6_tcp`). The same `:name` again gives a new
  node process on the same data dir and log.
  """
  def launch_cnode(opts \\ []) do
    name = Keyword.get_lazy(opts, :name, fn -> unique_name("c") end)
    node = :"#{name}@#{Keyword.get(opts, :host, @host)}"
    log = Path.join(run_dir(), "#{name}.log")

    data_dir =
      Keyword.get_lazy(opts, :data_dir, fn ->
        dir = data_dir_for(name)
        File.mkdir_p!(dir)
        dir
      end)

    args =
      ["--name", Atom.to_string(node), "--cookie", Keyword.get(opts, :cookie, cookie())] ++
        ["--data-dir", data_dir] ++ Keyword.get(opts, :args, [])

    bin = Keyword.get_lazy(opts, :bin, &cnode_bin/0)
    parent = self()
    ref = make_ref()
    owner = spawn(fn -> own_port(parent, ref, log, bin, args) end)
    cnode = %CNode{name: name, node: node, log: log, owner: owner, data_dir: data_dir, bin: bin}

    receive do
      {^ref, :ready, os_pid, ready_node, port} ->
        assert ready_node == Atom.to_string(node), "READY named #{ready_node}, not #{node}"
        {:ready, %CNode{cnode | os_pid: os_pid, port: port}}

      {^ref, :exited, status} ->
        {:exited, status, cnode}
    after
      @ready_timeout ->
        status = stop_cnode(cnode)
        flunk("#{node} printed no READY line within #{@ready_timeout} ms (stopped, status #{status})\n" <> log_tail(cnode))
    end
  end

  @doc "The data dir a C node named `name` gets by default."
  def data_dir_for(name), do: Path.join([run_dir(), "data", name])

  @doc """
  Starts a new process of the same C node (same name, data dir, log, binary) after `old`
  has exited, with `opts` as for `start_cnode!/1` (stopped and checked when the test ends).
  """
  def restart_cnode!(%CNode{} = old, opts \\ []) do
    # This node notices the old connection's end before the name comes back.
    wait_until(fn -> old.node not in Node.list(:connected) end, 10_000, "#{old.node} to leave Node.list")
    start_cnode!(Keyword.merge(opts, name: old.name, data_dir: old.data_dir, bin: old.bin))
  end

  # The port's owner outlives the test process, so on_exit can still stop the node and
  # learn its exit status. It reads stdout (the READY line) until the node exits.
  defp own_port(parent, ref, log, bin, args) do
    script = ~S(log="$1"; shift; exec "$@" 2>>"$log")

    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        :use_stdio,
        {:line, 4096},
        args: ["-c", script, "sh", log, bin | args]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    record_os_pid(os_pid)
    port_loop(port, os_pid, parent, ref, [])
  end

  # `waiters` are the `{from, tag}` of await_cnode_exit/2 calls, told the status at the exit.
  defp port_loop(port, os_pid, parent, ref, waiters) do
    receive do
      {^port, {:data, {:eol, "READY " <> rest}}} ->
        case String.split(rest) do
          [node, tcp_port] -> send(parent, {ref, :ready, os_pid, node, String.to_integer(tcp_port)})
          _ -> :ignore
        end

        port_loop(port, os_pid, parent, ref, waiters)

      {^port, {:data, _other_output}} ->
        port_loop(port, os_pid, parent, ref, waiters)

      {^port, {:exit_status, status}} ->
        send(parent, {ref, :exited, status})
        Enum.each(waiters, fn {from, tag} -> send(from, {tag, status}) end)
        exited(status)

      {:await_exit, from, tag} ->
        port_loop(port, os_pid, parent, ref, [{from, tag} | waiters])

      {:stop, from, tag} ->
        System.cmd("kill", ["-TERM", "#{os_pid}"], stderr_to_stdout: true)

        status =
          receive do
            {^port, {:exit_status, status}} -> status
          after
            @stop_timeout ->
              System.cmd("kill", ["-KILL", "#{os_pid}"], stderr_to_stdout: true)
              receive do: ({^port, {:exit_status, status}} -> status)
          end

        Enum.each([{from, tag} | waiters], fn {waiter, wtag} -> send(waiter, {wtag, status}) end)
        exited(status)
    end
  end

  # After the exit: every later stop_cnode or await_cnode_exit gets the same status.
  defp exited(status) do
    receive do
      {request, from, tag} when request in [:stop, :await_exit] ->
        send(from, {tag, status})
        exited(status)
    end
  end

  @doc "SIGTERM (SIGKILL after #{@stop_timeout} ms); waits for the node to go; its exit status."
  def stop_cnode(%CNode{owner: owner, node: node}) do
    case ask_owner(owner, :stop, :infinity) do
      {:ok, status} -> status
      {:down, reason} -> flunk("the port owner of #{node} died: #{inspect(reason)}")
    end
  end

  @doc """
  Waits (bounded) for a C node to exit by itself, without signalling it; its exit status.
  Fails the test when it is still running after `timeout` (the on_exit hook, or the run's
  cleanup, then stops it).
  """
  def await_cnode_exit(%CNode{owner: owner, node: node} = cnode, timeout \\ @stop_timeout) do
    case ask_owner(owner, :await_exit, timeout) do
      {:ok, status} -> status
      {:down, reason} -> flunk("the port owner of #{node} died: #{inspect(reason)}")
      :timeout -> flunk("#{node} was still running #{timeout} ms later\n" <> log_tail(cnode))
    end
  end

  # Sends {request, self(), tag} to a node's port owner and waits, up to timeout, for its
  # {tag, exit status}: {:ok, status}, {:down, reason} when the owner died, or :timeout.
  defp ask_owner(owner, request, timeout) do
    tag = make_ref()
    mref = Process.monitor(owner)
    send(owner, {request, self(), tag})

    receive do
      {^tag, status} ->
        Process.demonitor(mref, [:flush])
        {:ok, status}

      {:DOWN, ^mref, :process, _, reason} ->
        {:down, reason}
    after
      timeout ->
        Process.demonitor(mref, [:flush])
        :timeout
    end
  end

  @doc "The last lines of a C node's log, for failure messages."
  def log_tail(%CNode{log: log}, lines \\ 30) do
    text =
      case File.read(log) do
        {:ok, data} -> data |> String.split("\n") |> Enum.take(-lines) |> Enum.join("\n")
        {:error, reason} -> "(no log: #{inspect(reason)})"
      end

    "--- #{log} ---\n#{text}"
  end

  @doc "Waits (bounded) for a log line matching `pattern` and returns it."
  def await_log_line(%CNode{} = cnode, pattern, timeout \\ 10_000) do
    find = fn ->
      case File.read(cnode.log) do
        {:ok, data} -> data |> String.split("\n") |> Enum.find(&(&1 =~ pattern))
        _ -> nil
      end
    end

    wait_until(find, timeout, "a log line matching #{inspect(pattern)}\n" <> log_tail(cnode))
  end

  ## BEAM peers

  @doc """
  Starts a BEAM peer on 127.0.0.1 (or `:host`, e.g. `"::1"` with
  `args: ["-proto_dist", "inet6_tcp"]`) with the run's cookie (or `:cookie`), Elixir and the
  support modules on its code path, and more erl flags in `:args` (strings). It is controlled over
  stdio, not over distribution, so the peer has no connection to this node unless a test
  makes one (a peer with a wrong cookie, or a small net_ticktime, stays controllable).
  Stopped when the test ends. Use `peer_call/4` to run code on it.
  """
  def start_peer!(opts \\ []) do
    name = unique_name("peer")
    cookie = Keyword.get(opts, :cookie, cookie())

    paths =
      [Path.join(:code.lib_dir(:elixir), "ebin"), Path.join(:code.lib_dir(:logger), "ebin"), support_ebin()]
      |> Enum.flat_map(&[~c"-pa", to_charlist(&1)])

    extra = opts |> Keyword.get(:args, []) |> Enum.map(&to_charlist/1)
    args = [~c"-setcookie", to_charlist(cookie)] ++ paths ++ extra

    {:ok, pid, node} =
      :peer.start(%{
        name: to_charlist(name),
        host: to_charlist(Keyword.get(opts, :host, @host)),
        longnames: true,
        connection: :standard_io,
        args: args
      })

    record_os_pid(:peer.call(pid, :os, :getpid, []))
    ExUnit.Callbacks.on_exit(fn -> stop_peer(pid) end)
    {pid, node}
  end

  defp stop_peer(pid) do
    :peer.stop(pid)
  catch
    :exit, _already_gone -> :ok
  end

  @doc "Runs `m.f(a)` on the peer and returns its result (raises what it raises)."
  def peer_call({pid, _node}, m, f, a, timeout \\ 30_000), do: :peer.call(pid, m, f, a, timeout)

  defp support_ebin, do: Path.join(run_dir(), "ebin")

  ## Waiting and sockets

  @doc "Polls `fun` until it returns a truthy value, which it returns; fails after `timeout`."
  def wait_until(fun, timeout, what) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait_until(fun, deadline, timeout, what)
  end

  defp do_wait_until(fun, deadline, timeout, what) do
    cond do
      result = fun.() ->
        result

      System.monotonic_time(:millisecond) > deadline ->
        flunk("gave up after #{timeout} ms waiting for #{what}")

      true ->
        Process.sleep(50)
        do_wait_until(fun, deadline, timeout, what)
    end
  end

  ## Servers on a C node

  @doc "The pid of a gen_server (a name such as `{:counter, node}`), from `:sys.get_status`."
  def server_pid(server) do
    {:status, pid, {:module, :gen_server}, _} = :sys.get_status(server, 5_000)
    pid
  end

  @doc """
  Polls (bounded) until `server` is registered again under a pid other than `old`, as
  after a restart by its supervisor; the new pid.
  """
  def await_new_pid(server, old, timeout \\ 5_000) do
    wait_until(
      fn ->
        try do
          case server_pid(server) do
            ^old -> nil
            new -> new
          end
        catch
          # Not registered yet (noproc), or restarting.
          :exit, _ -> nil
        end
      end,
      timeout,
      "#{inspect(server)} to run under a pid other than #{inspect(old)}"
    )
  end

  @doc """
  A process linked to `pid` (a gen_server) that runs until told: `send(holder, {:exit, reason})` makes it
  exit with `reason`, `send(holder, :unlink)` unlinks (it then replies `{holder, :unlinked}`).
  Returns once the link is in place at `pid` (a `:sys` request to `pid` made after the link
  was answered). It exits :normal, leaving `pid` alone, when the test process ends.
  """
  def spawn_linked_holder(pid) do
    parent = self()

    holder =
      spawn(fn ->
        Process.monitor(parent)
        Process.link(pid)
        # Signals from one process arrive in order: the link is set up before this call.
        :sys.get_state(pid, 5_000)
        send(parent, {self(), :linked})
        holder_loop(parent, pid)
      end)

    receive do
      {^holder, :linked} -> holder
    after
      5_000 -> flunk("the holder of a link to #{inspect(pid)} did not report the link")
    end
  end

  defp holder_loop(parent, pid) do
    receive do
      {:exit, reason} ->
        exit(reason)

      :unlink ->
        Process.unlink(pid)
        :sys.get_state(pid, 5_000)
        send(parent, {self(), :unlinked})
        holder_loop(parent, pid)

      {:DOWN, _, :process, ^parent, _} ->
        Process.unlink(pid)
    end
  end

  @doc "Opens `count` raw TCP connections to a C node's distribution port."
  def open_raw(%CNode{port: port}, count) do
    for _ <- 1..count do
      {:ok, sock} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 5_000)
      sock
    end
  end

  @doc """
  Reads and discards what each raw socket receives until it closes, all within one
  `timeout`; the closing reason per socket (`:closed`, `:econnreset`, or `:timeout` for one
  the node left open).
  """
  def await_closed(socks, timeout \\ 20_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    Enum.map(socks, &read_until_closed(&1, deadline))
  end

  defp read_until_closed(sock, deadline) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    case :gen_tcp.recv(sock, 0, left) do
      {:ok, _data} -> read_until_closed(sock, deadline)
      {:error, reason} -> reason
    end
  end
end

defmodule CNodeTest.Case do
  @moduledoc """
  The test case template. Unless tagged `cnode: false`, every test gets its own C node,
  started with the flags of `@tag cnode_args: [...]`, in the context as `cnode` (a
  `CNodeTest.CNode`), `node` (its node name) and `counter` (`{:counter, node}`).
  """
  use ExUnit.CaseTemplate

  using do
    quote do
      import CNodeTest
    end
  end

  setup tags do
    if tags[:cnode] == false do
      :ok
    else
      cnode = CNodeTest.start_cnode!(args: Map.get(tags, :cnode_args, []))
      %{cnode: cnode, node: cnode.node, counter: {:counter, cnode.node}}
    end
  end
end

defmodule CNodeTest.Remote do
  @moduledoc "Code the tests run on BEAM peers through `CNodeTest.peer_call/4`."

  @doc """
  Starts `procs` processes that each call `request` on `server` `calls` times, all
  released at once; returns every reply.
  """
  def call_concurrently(server, request, procs, calls) do
    parent = self()

    workers =
      for _ <- 1..procs do
        spawn_monitor(fn ->
          receive do: (:go -> :ok)
          replies = for _ <- 1..calls, do: GenServer.call(server, request, 30_000)
          send(parent, {self(), replies})
        end)
      end

    Enum.each(workers, fn {pid, _} -> send(pid, :go) end)

    Enum.flat_map(workers, fn {pid, mref} ->
      receive do
        {^pid, replies} ->
          Process.demonitor(mref, [:flush])
          replies

        {:DOWN, ^mref, :process, ^pid, reason} ->
          exit({:caller_died, reason})
      end
    end)
  end

  @doc """
  Spawns a process on this (peer) node that links to `pid` (a gen_server) and then waits
  forever; returns once the link is in place at `pid` (a `:sys` request made after the link
  was answered).
  """
  def spawn_link_holder(pid) do
    parent = self()

    holder =
      spawn(fn ->
        Process.link(pid)
        :sys.get_state(pid, 5_000)
        send(parent, {self(), :linked})
        Process.sleep(:infinity)
      end)

    receive do
      {^holder, :linked} -> holder
    after
      5_000 -> exit(:link_not_confirmed)
    end
  end

  @doc "Watches `node` for `ms` milliseconds; returns the nodedown messages for it."
  def nodedowns_during(node, ms) do
    :ok = :net_kernel.monitor_nodes(true)
    Process.send_after(self(), :watch_over, ms)
    collect_nodedowns(node, [])
  end

  defp collect_nodedowns(node, acc) do
    receive do
      :watch_over -> Enum.reverse(acc)
      {:nodedown, ^node} = down -> collect_nodedowns(node, [down | acc])
      {:nodeup, _} -> collect_nodedowns(node, acc)
      {:nodedown, _other} -> collect_nodedowns(node, acc)
    end
  end

  @doc """
  Monitors `server` (a pid or `{name, node}`), stops it with `:sys.terminate/2` and returns
  the `:DOWN` it got as `{:down, who, reason}`, or `:no_down` after 10 s.
  """
  def monitor_terminate(server) do
    ref = Process.monitor(server)
    :ok = :sys.terminate(server, :shutdown)

    receive do
      {:DOWN, ^ref, :process, who, reason} -> {:down, who, reason}
    after
      10_000 -> :no_down
    end
  end
end

defmodule CNodeTest.Formatter do
  @moduledoc """
  ExUnit's CLI formatter, except that the summary ends with its "N tests, M failures"
  line: the seed, which the CLI formatter prints after it, run.exs prints at the start.
  """
  use GenServer

  @impl true
  def init(opts), do: ExUnit.CLIFormatter.init(opts)

  @impl true
  def handle_cast({:suite_finished, _} = event, config) do
    {:ok, io} = StringIO.open("")
    leader = Process.group_leader()
    Process.group_leader(self(), io)

    result =
      try do
        ExUnit.CLIFormatter.handle_cast(event, config)
      after
        Process.group_leader(self(), leader)
      end

    {_, output} = StringIO.contents(io)
    StringIO.close(io)
    IO.write(String.replace(output, ~r/\n*Randomized with seed \d+\n*\z/, "\n"))
    result
  end

  def handle_cast(event, config), do: ExUnit.CLIFormatter.handle_cast(event, config)
end
