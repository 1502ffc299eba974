"""Scenario 2: dispatch latency: enqueue → start, one job at a time, with idle workers.

One client submits a `noop` job (ms=0), waits for it to finish, then submits the next,
so a worker is always idle when a job arrives. The latency of each job is its own
`started_at − created_at`, both stamped by the server: `created_at` when `submit()`
begins (before the durable row is written), `started_at` when a worker claims the row.
So it spans the insert and its commit, the queue hand-off, the worker waking up, and
the claim. The floor is a no-op POST's round trip, from the same client in the same
rhythm; our submit's round trip is reported beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .backends import POSTGRES, SQLITE, database
from .cli import scenario_main
from .client import HttpClient
from .report import row
from .servers import Server, runs_beside_floor, service_server, warm_up_workers
from .stats import percentile

TARGET_P99_MS = {SQLITE: 3.0, POSTGRES: 5.0}
JOBS = 150
WARMUP_JOBS = 20
PAUSE_SECONDS = 0.005
JOB = {"generator": "noop", "params": {"ms": 0}}
TERMINAL = {"succeeded", "failed", "cancelled"}


def run(*, workdir: Path, backends: Sequence[str] = (SQLITE,), repeat: int = 3) -> dict[str, Any]:
    details = runs_beside_floor(workdir, backends, repeat, _measure)
    rows = [line for backend, runs in details.items() for line in _rows(backend, runs)]
    return {
        "scenario": "dispatch_latency",
        "title": "2. dispatch latency",
        "rows": rows,
        "settings": {"jobs": JOBS, "job": JOB, "pause_seconds": PAUSE_SECONDS},
        "runs": details,
    }


def _measure(floor: Server, backend: str, scratch: Path) -> dict[str, Any]:
    with floor.client() as client:
        floor_trips = [post_round_trip(client) for _ in range(WARMUP_JOBS + JOBS)]
    ours = measure_ours(backend, scratch)
    return {"floor_post_ms": _percentiles(floor_trips[WARMUP_JOBS:])} | {
        name: _percentiles(values) for name, values in ours.items()
    }


def measure_ours(
    backend: str, workdir: Path, *, on_start: Callable[[Server], None] | None = None
) -> dict[str, list[float]]:
    """Dispatch latencies and submit round trips (ms) of JOBS sequential jobs;
    `on_start` is called with the server first (a profiler attaches there)."""
    dispatch, trips = [], []
    with (
        database(backend, workdir) as url,
        service_server(url, workdir) as server,
        server.client() as client,
    ):
        warm_up_workers(server)
        if on_start is not None:
            on_start(server)
        for index in range(WARMUP_JOBS + JOBS):
            started = time.perf_counter()
            reply = client.post("/api/v1/jobs", JOB)
            trip = time.perf_counter() - started
            job = wait_finished(client, reply.body["id"])
            if index >= WARMUP_JOBS:
                trips.append(trip * 1000)
                dispatch.append(_ms_between(job["created_at"], job["started_at"]))
    return {"dispatch_ms": dispatch, "submit_ms": trips}


def post_round_trip(client: HttpClient) -> float:
    """One POST to the floor, in the rhythm our jobs are sent (ms)."""
    started = time.perf_counter()
    client.post("/api/v1/jobs", JOB)
    trip = time.perf_counter() - started
    time.sleep(PAUSE_SECONDS)
    return trip * 1000


def wait_finished(client: HttpClient, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(PAUSE_SECONDS)
        job = client.get(f"/api/v1/jobs/{job_id}").body
        if job["status"] in TERMINAL:
            return job
    raise RuntimeError(f"job {job_id} did not finish in {timeout}s")


def _rows(backend: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def series(name: str, q: str) -> list[float]:
        return [run[name][q] for run in runs]

    target = TARGET_P99_MS[backend]
    p99 = row(
        backend,
        "enqueue → start p99",
        series("dispatch_ms", "p99"),
        series("floor_post_ms", "p99"),
        unit="ms",
        target=f"≤ {target:g} ms",
    )
    p99["met"] = p99["ours"]["median"] <= target
    return [
        row(
            backend,
            "enqueue → start p50",
            series("dispatch_ms", "p50"),
            series("floor_post_ms", "p50"),
            unit="ms",
        ),
        p99,
        row(
            backend,
            "submit round trip p50",
            series("submit_ms", "p50"),
            series("floor_post_ms", "p50"),
            unit="ms",
        ),
    ]


def _percentiles(values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q), 3) for q in (50, 95, 99)}


def _ms_between(start: str, end: str) -> float:
    return (_parse(end) - _parse(start)).total_seconds() * 1000


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


if __name__ == "__main__":
    scenario_main(run, __doc__)
