"""Benchmarks: run as `python -m bench.<name> --help`. Results go to docs/benchmarks.md."""
