"""In-process CPU time per HTTP request: ours against the floor, without a server.

`bench/submit_cpu.py` measures the service's submit alone; this measures the whole WSGI
application around it, the part a gunicorn worker runs between parsing a request and
writing the answer. Each request is one call of the app with a prepared WSGI environ (no
test client, whose own request building would dwarf the differences), the body read and
closed as a server would. Ours runs in open mode on SQLite in a scratch folder under
instance/, with both workers held by long `noop` jobs so that every submit is written and
none runs; the floor is `bench/floor_app.py`. Figures are the thread's CPU time per
request, the median of `--rounds` blocks of `--block` requests.

    .venv/bin/python -m bench.web_cpu --block 500 --rounds 5
    .venv/bin/python -m bench.web_cpu --profile submit   # cProfile of our submit route
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.test import EnvironBuilder

from app import create_app
from app.config import Config
from app.generation import JobStatus
from app.wiring import get_service

from .floor_app import app as floor_app

HOLD_MS = 600_000
JOB = json.dumps({"generator": "noop", "params": {"ms": 0}}).encode()

Request = Callable[[], None]


def caller(app: Flask, method: str, path: str, body: bytes | None = None) -> Request:
    """One request to `app`, as gunicorn makes it: an environ, then the body read and closed."""
    builder = EnvironBuilder(
        path=path,
        method=method,
        data=body,
        content_type="application/json" if body is not None else None,
        headers={"Host": "127.0.0.1:8000", "User-Agent": "wrk"},
    )
    template = builder.get_environ()
    builder.close()
    payload = body or b""

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        pass

    def call() -> None:
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(payload)
        response = app(environ, start_response)
        try:
            for _chunk in response:
                pass
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()

    return call


def cpu_us(request: Request, block: int, rounds: int) -> float:
    """Median microseconds of thread CPU per request over `rounds` blocks."""
    for _ in range(min(block, 200)):  # warm caches (URL map, statement cache, imports)
        request()
    figures = []
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(block):
            request()
        figures.append((time.thread_time() - started) / block * 1e6)
    return statistics.median(figures)


def our_app(workdir: Path, queue_size: int) -> Flask:
    config = Config.from_env(
        {
            "DATABASE_URL": f"sqlite:///{workdir / 'jobs.db'}",
            "RESULTS_DIR": str(workdir / "results"),
            "GENERATION_QUEUE_SIZE": str(queue_size),
            "GENERATION_CPU_ISOLATION": "thread",
        },
        dotenv=False,
    )
    return create_app(config)


def hold_workers(app: Flask) -> str:
    """Occupy every worker with a long job; the id of one of them (for the GET route)."""
    service = get_service(app)
    holders = [service.submit("noop", {"ms": HOLD_MS}) for _ in range(service.worker_count)]
    for holder in holders:
        while service.get(holder.id).status is not JobStatus.RUNNING:
            time.sleep(0.01)
    return holders[0].id


def routes(app: Flask, job_id: str) -> dict[str, Request]:
    return {
        "submit": caller(app, "POST", "/api/v1/jobs", JOB),
        "get": caller(app, "GET", f"/api/v1/jobs/{job_id}"),
        "health": caller(app, "GET", "/health"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", choices=("submit", "get", "health"))
    args = parser.parse_args()
    Path("instance").mkdir(exist_ok=True)
    total = args.block * (args.rounds + 1) + 10
    with tempfile.TemporaryDirectory(dir="instance", prefix="web-cpu-") as scratch:
        app = our_app(Path(scratch), queue_size=total + 1000)
        service = get_service(app)
        service.start()
        try:
            ours = routes(app, hold_workers(app))
            if args.profile:
                profile(ours[args.profile], args.block * args.rounds)
                return
            floor = {
                "submit": caller(floor_app, "POST", "/api/v1/jobs", JOB),
                "health": caller(floor_app, "GET", "/health"),
            }
            for name, request in ours.items():
                us = cpu_us(request, args.block, args.rounds)
                line = f"{name:<7} ours {us:7.0f} µs CPU per request"
                if name in floor:
                    floor_us = cpu_us(floor[name], args.block, args.rounds)
                    line += f"   floor {floor_us:5.0f} µs   ratio {floor_us / us:.2f}x"
                print(line)
        finally:
            service.shutdown(wait=False)


def profile(request: Request, count: int) -> None:
    for _ in range(200):
        request()
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    for _ in range(count):
        request()
    profiler.disable()
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
