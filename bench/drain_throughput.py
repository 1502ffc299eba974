"""Scenario 3: drain throughput: 2,000 `noop` jobs (ms=0), 2 workers, jobs per second.

Each repetition, on a fresh database: the queued rows are written first (the same rows a
submit writes), then the server starts, indexes them, and its two workers drain them.
Rate = jobs / (last `finished_at` − first `started_at`): the workers alone, as a broker
benchmark fills the queue first and then starts its workers. (Submitting the jobs over
the API behind held workers would measure the submit path at a growing queue depth
instead: each submit forecasts the whole queue, docs/performance.md. The submit rate
while workers drain is scenario 1's second figure.) In process isolation the generation
processes import the app during the first second or two of the drain, on the same CPUs.

Each job is claimed (one UPDATE), run, zipped and finished (one UPDATE). On PostgreSQL,
where every commit waits for a WAL flush, 1,000 jobs keep the run short. The floor is the
no-op POST rate measured just before, so the ratio says how many no-op requests one job
costs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from app.generation.job import JobStatus
from app.generation.store.engine import create_database_engine
from app.generation.store.tables import JobRow

from .backends import POSTGRES, SQLITE, database
from .cli import scenario_main
from .load import post_load
from .prefill import write_queued
from .report import row
from .servers import Server, runs_beside_floor, service_server

JOBS = {SQLITE: 2000, POSTGRES: 1000}
WORKERS = 2
TARGET_JOBS_PER_SECOND = {SQLITE: 1000.0}
FLOOR_SECONDS = 2
JOB = {"generator": "noop", "params": {"ms": 0}}
_columns = JobRow.__table__.c


def run(*, workdir: Path, backends: Sequence[str] = (SQLITE,), repeat: int = 3) -> dict[str, Any]:
    details = runs_beside_floor(workdir, backends, repeat, _measure)
    rows = [line for backend, runs in details.items() for line in _rows(backend, runs)]
    return {
        "scenario": "drain_throughput",
        "title": "3. drain throughput",
        "rows": rows,
        "settings": {"jobs": JOBS, "workers": WORKERS, "job": JOB},
        "runs": details,
    }


def _measure(floor: Server, backend: str, scratch: Path) -> dict[str, Any]:
    floor_rate = post_load(floor.url + "/api/v1/jobs", JOB, seconds=FLOOR_SECONDS).rate
    return {"floor_rate": round(floor_rate, 1), "drain": drain_queued(backend, scratch)}


def drain_queued(backend: str, workdir: Path) -> dict[str, Any]:
    """Write JOBS[backend] queued rows, start the server, time the drain."""
    with database(backend, workdir) as url:
        write_queued(url, JOBS[backend])
        with _server(url, workdir):
            return wait_drained(url, JOBS[backend])


def wait_drained(url: str, count: int, *, timeout: float = 180.0) -> dict[str, Any]:
    """Poll the database until `count` noop jobs have succeeded; their rate from their rows."""
    engine = create_database_engine(url)
    drained = (_columns.generator == "noop", _columns.status == JobStatus.SUCCEEDED.value)
    try:
        deadline = time.monotonic() + timeout
        with engine.connect() as connection:
            while connection.scalar(select(func.count()).where(*drained)) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{count} jobs did not finish in {timeout}s")
                connection.rollback()  # a fresh snapshot for the next look
                time.sleep(0.05)
            first, last = connection.execute(
                select(func.min(_columns.started_at), func.max(_columns.finished_at)).where(
                    *drained
                )
            ).one()
    finally:
        engine.dispose()
    seconds = (last - first).total_seconds()
    return {"jobs": count, "seconds": round(seconds, 3), "rate": round(count / seconds, 1)}


def _server(url: str, workdir: Path) -> AbstractContextManager[Server]:
    return service_server(url, workdir, GENERATION_WORKERS=WORKERS, GENERATION_QUEUE_SIZE=10_000)


def _rows(backend: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    floor = [run["floor_rate"] for run in runs]
    drain = row(
        backend,
        f"{JOBS[backend]:,} queued noop jobs drained by {WORKERS} workers",
        [run["drain"]["rate"] for run in runs],
        floor,
        unit="jobs/s",
        digits=0,
    )
    target = TARGET_JOBS_PER_SECOND.get(backend)
    if target:
        drain["target"] = f"≥ {target:,.0f} jobs/s"
        drain["met"] = drain["ours"]["median"] >= target
    return [drain]


if __name__ == "__main__":
    scenario_main(run, __doc__)
