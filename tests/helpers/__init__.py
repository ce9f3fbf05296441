"""What the tests share besides fixtures: running the CLI, making files, reading the store
straight from its files, watching child processes, and a served index."""
