# The tests start real C nodes, so this BEAM must be distributed: scripts/elixir-test.sh
# (make elixir-test) runs `elixir --name ... -S mix test` with a private epmd.
unless Node.alive?() do
  IO.puts(:stderr, "run the package's tests through scripts/elixir-test.sh (make elixir-test)")
  System.halt(2)
end

File.mkdir_p!(CNode.PkgTest.run_dir())
ExUnit.start(timeout: 120_000, capture_log: true)
