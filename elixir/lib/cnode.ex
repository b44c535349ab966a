defmodule CNode do
  @moduledoc """
  Runs a C node (`build/cnode`, or `cnode` from `make install`) under your supervision tree.

      children = [
        {CNode, name: :"counter@127.0.0.1", data_dir: "/var/lib/myapp/cnode", register: MyApp.CNode},
        MyApp.Worker   # may call CNode.Counter.increment(MyApp.CNode) in its init
      ]

  The child starts the node binary as a port, waits for its `READY <name> <port>` line,
  connects to it (`Node.connect/1`) and only then returns from `init/1`, so the next child
  can call the node's servers at once. The node's log lines (its stderr, merged into the
  port's output) go to `Logger` at their own levels, with the metadata `cnode: node`.

  When the node dies (a crash, `kill -9`, a top supervisor exceeding its restart
  intensity), the child exits with `{:cnode_exited, node, exit_status}` (a status above 128
  is 128 plus the signal: 137 is SIGKILL), and its supervisor restarts it, which starts a new
  node process on the same data dir. On shutdown (the supervisor, `Application.stop/1`, a
  release stopping) the child sends the node SIGTERM and waits for it to exit: every C
  server's `terminate` saves its state first. After `:stop_timeout` it sends SIGKILL.

  No orphan: the node is started with `--stop-on-stdin-eof`, so when this BEAM dies, even by
  `kill -9`, the kernel closes the port's pipe and the node stops the way SIGTERM stops it.

  The BEAM must be distributed (`--name`/`--sname`, or `Node.start/2`) to talk to the node.

  ## Options

    * `:name` (required): the node's name, a long name such as `:"counter@127.0.0.1"`.
    * `:data_dir` (required): where the servers keep their state files; created if missing.
    * `:cookie`: the node's cookie (an atom); default this BEAM's `Node.get_cookie/0`. A
      different one is also set for that node with `Node.set_cookie/2`. Note that it is
      passed on the node's command line, as `erl -setcookie` does.
    * `:durability`: passed as `--durability MODE` (`:terminate`, `:crash`, `:power`; see the
      README); not passed when absent.
    * `:args`: more flags for the binary, e.g. `["--max-requests", "10"]`.
    * `:bin`: the binary. Default: the application environment `config :cnode, bin: path`,
      else `build/cnode` of the repository this package lives in, else `cnode` on `PATH`.
    * `:register`: a local name for this child; `CNode.Counter` and `CNode.RateLimiter`
      then accept it in place of the node name (see `server_ref/2`).
    * `:log_level`: the node's `--log-level`; default from `Logger.level/0`.
    * `:ready_timeout`: ms to wait for READY (default 15 000).
    * `:stop_timeout`: ms between SIGTERM and SIGKILL on shutdown (default 15 000). The child
      spec's `:shutdown` is this plus 6 s, so the supervisor never cuts the wait short.
    * `:id`: the child spec id; default `{CNode, name}`.
  """
  use GenServer
  require Logger

  @ready_timeout 15_000
  @stop_timeout 15_000
  # After SIGKILL: the kernel ends the process at once; this bounds the wait for its status.
  @kill_wait 5_000
  @repo_bin Path.expand("../../build/cnode", __DIR__)

  @typedoc "A C server: a node name (its server of that module), a `:register` name, `{name, node}` or a pid."
  @type server :: node() | atom() | {atom(), node()} | pid()

  @doc false
  def child_spec(opts) do
    node = Keyword.fetch!(opts, :name)
    stop = Keyword.get(opts, :stop_timeout, @stop_timeout)

    %{
      id: Keyword.get(opts, :id, {__MODULE__, node}),
      start: {__MODULE__, :start_link, [opts]},
      type: :worker,
      restart: :permanent,
      shutdown: stop + @kill_wait + 1_000
    }
  end

  @doc "Starts the node and links it to the caller; see the module doc for the options."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    case Keyword.get(opts, :register) do
      nil -> GenServer.start_link(__MODULE__, opts)
      name -> GenServer.start_link(__MODULE__, opts, name: name)
    end
  end

  @doc "The running node: `%{node: node, os_pid: integer, port: distribution port, bin: path}`."
  @spec info(GenServer.server()) :: %{node: node(), os_pid: pos_integer(), port: pos_integer(), bin: Path.t()}
  def info(server), do: GenServer.call(server, :info)

  @doc """
  The process to call for the C server registered as `name` (`:counter`, `:rate_limiter`):

    * a node name (an atom with `@`): `{name, node}`;
    * the `:register` name of a running `CNode` child: `{name, its node}`;
    * `{other_name, node}` or a pid: as given.

  So an app that called `Counter.increment(MyApp.Counter)` on its own Elixir `Counter`
  registered as `MyApp.Counter` keeps that line when it starts
  `{CNode, name: ..., register: MyApp.Counter}` and aliases `CNode.Counter` as `Counter`.
  """
  @spec server_ref(server(), atom()) :: GenServer.server()
  def server_ref(server, name) when is_atom(server) do
    case :persistent_term.get({__MODULE__, server}, nil) do
      nil ->
        if String.contains?(Atom.to_string(server), "@") do
          {name, server}
        else
          raise ArgumentError, "#{inspect(server)} is neither a node name nor the :register name of a CNode"
        end

      node ->
        {name, node}
    end
  end

  def server_ref({other, node} = ref, _name) when is_atom(other) and is_atom(node), do: ref
  def server_ref(pid, _name) when is_pid(pid), do: pid

  ## The GenServer

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)

    with {:ok, cfg} <- config(opts),
         :ok <- check_distributed(),
         {:ok, state} <- spawn_node(cfg),
         {:ok, state} <- await_ready(state, deadline(cfg.ready_timeout)),
         {:ok, state} <- connect(state) do
      register(cfg)
      {:ok, state}
    else
      {:error, reason, state} ->
        log_stop(state, stop_node(state, state.cfg.stop_timeout))
        {:stop, reason}

      {:error, reason} ->
        {:stop, reason}
    end
  end

  @impl true
  def handle_call(:info, _from, state) do
    {:reply, %{node: state.cfg.node, os_pid: state.os_pid, port: state.dist_port, bin: state.cfg.bin}, state}
  end

  @impl true
  def handle_info({port, {:data, data}}, %{port: port} = state) do
    {:noreply, take_output(state, data)}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    node = state.cfg.node
    Logger.error("cnode #{node} (OS pid #{state.os_pid}) exited with #{describe(status)}", cnode: node)
    # A dead node's connection is stale; the restarted node gets a fresh one.
    Node.disconnect(node)
    {:stop, {:cnode_exited, node, status}, %{state | port: nil}}
  end

  # The port's link: :normal after its exit status. Otherwise the port itself failed (a
  # write error): the node's stdin closes with it and the node stops, so this child does too.
  def handle_info({:EXIT, port, reason}, %{port: port} = state) when reason != :normal do
    node = state.cfg.node
    Logger.error("cnode #{node}: its port closed (#{inspect(reason)})", cnode: node)
    # No exit status will come through a closed port: nothing left to wait for here.
    {:stop, {:cnode_port_closed, node, reason}, %{state | port: nil}}
  end

  def handle_info({:EXIT, _port_or_linked, _reason}, state), do: {:noreply, state}
  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, %{port: nil}), do: :ok

  def terminate(_reason, state) do
    log_stop(state, stop_node(state, state.cfg.stop_timeout))
    # The connection is gone with the node; forget it now, so a restart connects afresh.
    Node.disconnect(state.cfg.node)
    :ok
  end

  defp log_stop(state, result) do
    node = state.cfg.node

    case result do
      {:exited, 0} ->
        Logger.info("cnode #{node} stopped: exit status 0", cnode: node)

      {:exited, status} ->
        Logger.warning("cnode #{node} stopped with #{describe(status)}", cnode: node)

      {:killed, status} ->
        Logger.error(
          "cnode #{node} did not stop within #{state.cfg.stop_timeout} ms of SIGTERM: SIGKILL (#{describe(status)})",
          cnode: node
        )
    end
  end

  ## Starting

  defp config(opts) do
    with {:ok, node} <- fetch_node(opts),
         {:ok, dir} <- fetch_data_dir(opts),
         {:ok, bin} <- find_bin(opts) do
      {:ok,
       %{
         node: node,
         data_dir: dir,
         bin: bin,
         cookie: Keyword.get(opts, :cookie),
         durability: Keyword.get(opts, :durability),
         args: Enum.map(Keyword.get(opts, :args, []), &to_string/1),
         register: Keyword.get(opts, :register),
         log_level: Keyword.get_lazy(opts, :log_level, &node_log_level/0),
         ready_timeout: Keyword.get(opts, :ready_timeout, @ready_timeout),
         stop_timeout: Keyword.get(opts, :stop_timeout, @stop_timeout)
       }}
    end
  end

  defp fetch_node(opts) do
    case Keyword.fetch(opts, :name) do
      {:ok, node} when is_atom(node) ->
        if String.contains?(Atom.to_string(node), "@"),
          do: {:ok, node},
          else: {:error, {:bad_option, :name, node, "a NAME@HOST atom"}}

      {:ok, other} ->
        {:error, {:bad_option, :name, other, "a NAME@HOST atom"}}

      :error ->
        {:error, {:missing_option, :name}}
    end
  end

  defp fetch_data_dir(opts) do
    case Keyword.fetch(opts, :data_dir) do
      {:ok, dir} ->
        dir = Path.expand(to_string(dir))

        case File.mkdir_p(dir) do
          :ok -> {:ok, dir}
          {:error, reason} -> {:error, {:data_dir, dir, reason}}
        end

      :error ->
        {:error, {:missing_option, :data_dir}}
    end
  end

  defp find_bin(opts) do
    candidates =
      [Keyword.get(opts, :bin), Application.get_env(:cnode, :bin), @repo_bin, System.find_executable("cnode")]
      |> Enum.reject(&is_nil/1)

    # An explicit choice is used or refused as it is; the defaults are tried in turn.
    candidates =
      if opts[:bin] || Application.get_env(:cnode, :bin), do: Enum.take(candidates, 1), else: candidates

    case Enum.find(candidates, &executable?/1) do
      nil -> {:error, {:cnode_binary_not_found, candidates}}
      bin -> {:ok, Path.expand(bin)}
    end
  end

  defp executable?(path) do
    case File.stat(path) do
      {:ok, %File.Stat{type: :regular, mode: mode}} -> Bitwise.band(mode, 0o111) != 0
      _ -> false
    end
  end

  defp node_log_level do
    case Logger.level() do
      :debug -> "debug"
      level when level in [:info, :notice] -> "info"
      level when level in [:warning, :warn] -> "warning"
      _ -> "error"
    end
  end

  defp check_distributed do
    if Node.alive?(),
      do: :ok,
      else: {:error, {:not_distributed, "start this BEAM with --name or --sname to talk to a C node"}}
  end

  defp spawn_node(cfg) do
    cookie = cfg.cookie || Node.get_cookie()

    args =
      ["--name", Atom.to_string(cfg.node), "--cookie", Atom.to_string(cookie), "--data-dir", cfg.data_dir] ++
        ["--log-level", to_string(cfg.log_level), "--stop-on-stdin-eof"] ++
        if(cfg.durability, do: ["--durability", to_string(cfg.durability)], else: []) ++ cfg.args

    if cookie != Node.get_cookie(), do: Node.set_cookie(cfg.node, cookie)

    port =
      Port.open({:spawn_executable, cfg.bin}, [
        :binary,
        :exit_status,
        :use_stdio,
        :stderr_to_stdout,
        {:line, 16_384},
        {:args, args}
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    {:ok, %{cfg: cfg, port: port, os_pid: os_pid, dist_port: nil, partial: "", ready: false}}
  end

  defp deadline(timeout), do: System.monotonic_time(:millisecond) + timeout

  # The port's output until READY (logged as it comes), its exit, or the deadline.
  defp await_ready(%{port: port} = state, deadline) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, data}} ->
        state = take_output(state, data)
        if state.ready, do: {:ok, state}, else: await_ready(state, deadline)

      {^port, {:exit_status, status}} ->
        {:error, {:cnode_exited_before_ready, state.cfg.node, status}}
    after
      left -> {:error, {:cnode_ready_timeout, state.cfg.node, state.cfg.ready_timeout}, state}
    end
  end

  defp connect(state) do
    node = state.cfg.node

    if Node.connect(node) == true,
      do: {:ok, state},
      else: {:error, {:cnode_connect_failed, node, "is the cookie the same on both sides?"}, state}
  end

  # The name -> node mapping of server_ref/2. Written only when it changes (a restart keeps
  # the node's name), since each persistent_term write costs a global scan.
  defp register(%{register: nil}), do: :ok

  defp register(%{register: name, node: node}) do
    if :persistent_term.get({__MODULE__, name}, nil) != node,
      do: :persistent_term.put({__MODULE__, name}, node)

    :ok
  end

  ## Output

  defp take_output(state, {:noeol, chunk}), do: %{state | partial: state.partial <> chunk}

  defp take_output(state, {:eol, chunk}) do
    line = state.partial <> chunk
    state = %{state | partial: ""}
    node = state.cfg.node

    own_name = Atom.to_string(node)

    case CNode.LogLine.parse(line) do
      {:ready, ^own_name, port} ->
        if state.ready, do: Logger.info("cnode #{node} is READY again (restarted by --heart)", cnode: node)
        %{state | ready: true, dist_port: port}

      {:ready, _name, _port} ->
        Logger.warning("cnode #{node}: #{line}", cnode: node)
        state

      {level, component, message} ->
        Logger.log(level, fn -> "cnode #{node} [#{component}] #{message}" end, cnode: node)
        state
    end
  end

  ## Stopping

  # SIGTERM, the exit status within timeout, else SIGKILL: {:exited, status} or {:killed, status}.
  defp stop_node(%{port: port, os_pid: os_pid} = state, timeout) do
    # An exit already waiting in the mailbox: the pid may be reused, so send nothing to it.
    receive do
      {^port, {:exit_status, status}} -> {:exited, status}
    after
      0 ->
        signal(os_pid, "TERM")

        case await_exit(state, deadline(timeout)) do
          {:ok, status} ->
            {:exited, status}

          :timeout ->
            signal(os_pid, "KILL")

            case await_exit(state, deadline(@kill_wait)) do
              {:ok, status} -> {:killed, status}
              :timeout -> {:killed, :unknown}
            end
        end
    end
  end

  # The node's last log lines (its servers' terminate) still go to Logger.
  defp await_exit(%{port: port} = state, deadline) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, data}} -> await_exit(take_output(state, data), deadline)
      {^port, {:exit_status, status}} -> {:ok, status}
    after
      left -> :timeout
    end
  end

  # Through sh's builtin kill: no other program is needed, and the pid is a number we hold.
  defp signal(os_pid, sig) when is_integer(os_pid), do: :os.cmd(~c"kill -#{sig} #{os_pid} 2>/dev/null")

  defp describe(:unknown), do: "an unknown status"
  defp describe(status) when status > 128, do: "status #{status} (killed by signal #{status - 128})"
  defp describe(status), do: "exit status #{status}"
end
