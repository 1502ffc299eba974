"""Benchmarks: standalone modules with a `run(...) -> dict` and a `__main__`."""
