"""The benchmark suite: `make bench` runs `python -m bench.run` (docs/performance.md)."""
