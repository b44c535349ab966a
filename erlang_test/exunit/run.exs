# Runs the ExUnit interop suite without mix; scripts/exunit.sh starts this on a named node
# with the run's cookie and epmd. Arguments: test files to run (default every *_test.exs
# beside this file). Exits 0 when every test passed, 1 otherwise.

here = __DIR__
run_dir = System.fetch_env!("CNODE_TEST_RUN_DIR")

# The support modules are compiled to a directory, so BEAM peers can load them too.
ebin = Path.join(run_dir, "ebin")
File.mkdir_p!(ebin)

case Kernel.ParallelCompiler.compile_to_path(Path.wildcard(Path.join(here, "support/*.ex")), ebin) do
  {:ok, _modules, _warnings} -> :ok
  {:error, _errors, _warnings} -> System.halt(2)
end

true = Code.prepend_path(ebin)

files =
  case System.argv() do
    [] ->
      here |> Path.join("*_test.exs") |> Path.wildcard() |> Enum.sort()

    names ->
      Enum.map(names, fn name ->
        if File.exists?(name), do: name, else: Path.join(here, Path.basename(name))
      end)
  end

seed =
  case System.get_env("EXUNIT_SEED") do
    nil -> :rand.uniform(999_999)
    value -> String.to_integer(value)
  end

ExUnit.start(
  autorun: false,
  formatters: [CNodeTest.Formatter],
  seed: seed,
  timeout: 120_000,
  max_cases: 1
)

IO.puts("""
ExUnit interop suite: #{System.fetch_env!("CNODE_BIN")} (OTP #{System.otp_release()}, Elixir #{System.version()})
  node #{node()}, epmd port #{System.fetch_env!("ERL_EPMD_PORT")}, seed #{seed} (EXUNIT_SEED=#{seed} replays the order)
  logs in #{Path.relative_to_cwd(run_dir)}
""")

Enum.each(files, &Code.require_file/1)
result = ExUnit.run()

cond do
  result.total == 0 -> System.halt(1)
  result.failures > 0 -> System.halt(1)
  true -> System.halt(0)
end
