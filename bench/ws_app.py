"""The real app plus a `ticker` generator, for bench/ws_fanout.py.

`ticker` sleeps between progress reports instead of computing, so a benchmark measures
the cost of fanning events out to sockets, not of generating. Each report carries the
wall-clock time it was published at, from which a client computes delivery latency.
Served as `gunicorn --config gunicorn.conf.py bench.ws_app:app`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from app import create_app
from app.config import Config
from app.generation.generators import FieldErrors, Generator, GeneratorContext, OutputFile
from app.logs import configure_logging
from app.wiring import build_service


class TickerGenerator(Generator):
    """`ticks` progress reports `interval` seconds apart, after `warmup` seconds."""

    name = "ticker"
    description = "Benchmark only: timed progress reports, no work."

    def validate(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
        clean = {"ticks": 100, "interval": 0.1, "warmup": 0.0} | dict(params)
        return clean, {}

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        time.sleep(params["warmup"])
        ticks = params["ticks"]
        for tick in range(1, ticks + 1):
            time.sleep(params["interval"])
            context.check_cancelled()
            context.progress(
                "tick", 100 * tick / ticks, f"{time.time():.6f}", step=tick, total=ticks
            )
        yield OutputFile("ticks.txt", str(ticks).encode())


configure_logging()
_config = Config.from_env()
_service = build_service(_config)
_service.generators.register(TickerGenerator())
app = create_app(_config, service=_service)
