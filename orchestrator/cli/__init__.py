"""The `orchestrator` command line: thin commands over the stores and processes."""
