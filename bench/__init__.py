"""Benchmarks. `make bench` runs the suite (`python -m bench.run`, docs/performance.md);
each scenario is also a standalone module with a `run(...) -> dict` and a `__main__`."""
