"""SQL analysis and sandboxed execution: hardness, executor, metrics."""
