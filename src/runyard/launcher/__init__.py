"""The launcher: registers a worker, takes runs, executes each in isolation."""
