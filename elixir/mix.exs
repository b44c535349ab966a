defmodule CNode.MixProject do
  use Mix.Project

  # No dependencies: `mix test` runs offline, and an app adds this package by path.
  def project do
    [
      app: :cnode,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: []
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end

  defp elixirc_paths(:test), do: ["lib", "test_support"]
  defp elixirc_paths(_), do: ["lib"]
end
