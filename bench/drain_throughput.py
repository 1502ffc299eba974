"""Scenario 3: drain throughput: 2,000 `noop` jobs (ms=0), 2 workers, jobs per second.

Two figures per repetition, each on a fresh database and server:

- drain: the 2,000 queued rows are written before the server starts (the same rows a
  submit writes), the service indexes them at start-up and two workers drain them.
  Rate = jobs / (last `finished_at` − first `started_at`): the workers alone, as a
  broker benchmark fills the queue first and then starts its workers.
- submit and drain (SQLite; on PostgreSQL the drain alone already takes long, see
  docs/performance.md): 16 keep-alive connections (Python threads in this process) POST
  the 2,000 jobs while the workers drain them. Rate = jobs / (last `finished_at` −
  first `created_at`): the whole path.

Each job is claimed (one UPDATE), run, zipped and finished (one UPDATE). The floor is
the no-op POST rate measured just before, so the ratio says how many no-op requests
one drained job costs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from app.generation.db import create_database_engine, create_schema
from app.generation.generators.noop import NoopGenerator
from app.generation.models import JobRow, JobStatus, Priority

from .backends import SQLITE, database
from .cli import scenario_main
from .load import post_load, post_many
from .report import row
from .servers import Server, floor_server, service_server

JOBS = 2000
WORKERS = 2
TARGET_JOBS_PER_SECOND = {SQLITE: 1000.0}
FLOOR_SECONDS = 2
JOB = {"generator": "noop", "params": {"ms": 0}}
_table = JobRow.__table__
_columns = _table.c


def run(*, workdir: Path, backends: Sequence[str] = (SQLITE,), repeat: int = 3) -> dict[str, Any]:
    rows = []
    details: dict[str, Any] = {}
    with floor_server(workdir) as floor:
        for backend in backends:
            runs = []
            for attempt in range(repeat):
                floor_rate = post_load(floor.url + "/api/v1/jobs", JOB, seconds=FLOOR_SECONDS).rate
                scratch = workdir / f"{backend}-{attempt}"
                result = {
                    "floor_rate": round(floor_rate, 1),
                    "drain": drain_prefilled(backend, scratch / "drain"),
                }
                if backend == SQLITE:
                    result["submit_and_drain"] = submit_and_drain(backend, scratch / "submit")
                runs.append(result)
            details[backend] = runs
            rows.extend(_rows(backend, runs))
    return {
        "scenario": "drain_throughput",
        "title": "3. drain throughput",
        "rows": rows,
        "settings": {"jobs": JOBS, "workers": WORKERS, "job": JOB},
        "runs": details,
    }


def drain_prefilled(backend: str, workdir: Path) -> dict[str, Any]:
    with database(backend, workdir) as url:
        prefill(url, JOBS)
        with _server(url, workdir):
            return wait_drained(url, JOBS, since="started_at")


def submit_and_drain(backend: str, workdir: Path) -> dict[str, Any]:
    with database(backend, workdir) as url, _server(url, workdir) as server:
        accepted = post_many(server.port, "/api/v1/jobs", JOB, JOBS)
        if accepted != JOBS:
            raise RuntimeError(f"only {accepted} of {JOBS} jobs were accepted")
        return wait_drained(url, JOBS, since="created_at")


def prefill(url: str, count: int) -> None:
    """Write `count` queued noop rows, as `submit()` would, before the server starts."""
    params, errors = NoopGenerator().validate(JOB["params"])
    assert not errors, errors
    now = datetime.now(UTC)
    rows = [
        {
            "id": uuid.uuid4().hex,
            "owner": "anonymous",
            "generator": "noop",
            "params": params,
            "priority": int(Priority.NORMAL),
            "status": JobStatus.QUEUED.value,
            "created_at": now,
        }
        for _ in range(count)
    ]
    engine = create_database_engine(url)
    try:
        create_schema(engine)
        with engine.begin() as connection:
            connection.execute(insert(_table), rows)
    finally:
        engine.dispose()


def wait_drained(url: str, count: int, *, since: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll the database until `count` jobs are finished; their rate from the rows."""
    engine = create_database_engine(url)
    finished = _columns.finished_at.is_not(None)
    try:
        deadline = time.monotonic() + timeout
        with engine.connect() as connection:
            while connection.scalar(select(func.count()).where(finished)) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{count} jobs did not finish in {timeout}s")
                connection.rollback()  # a fresh snapshot for the next look
                time.sleep(0.05)
            first, last, succeeded = connection.execute(
                select(
                    func.min(_columns[since]),
                    func.max(_columns.finished_at),
                    func.count().filter(_columns.status == JobStatus.SUCCEEDED.value),
                )
            ).one()
    finally:
        engine.dispose()
    seconds = (last - first).total_seconds()
    return {
        "jobs": count,
        "succeeded": succeeded,
        "seconds": round(seconds, 3),
        "rate": round(count / seconds, 1),
    }


def _server(url: str, workdir: Path) -> AbstractContextManager[Server]:
    return service_server(url, workdir, GENERATION_WORKERS=WORKERS, GENERATION_QUEUE_SIZE=JOBS * 2)


def _rows(backend: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    floor = [run["floor_rate"] for run in runs]
    drain = row(
        backend,
        f"{JOBS:,} queued noop jobs drained by {WORKERS} workers",
        [run["drain"]["rate"] for run in runs],
        floor,
        unit="jobs/s",
        digits=0,
    )
    target = TARGET_JOBS_PER_SECOND.get(backend)
    if target:
        drain["target"] = f"≥ {target:,.0f} jobs/s"
        drain["met"] = drain["ours"]["median"] >= target
    if "submit_and_drain" not in runs[0]:
        return [drain]
    both = row(
        backend,
        f"{JOBS:,} jobs submitted over HTTP while draining",
        [run["submit_and_drain"]["rate"] for run in runs],
        floor,
        unit="jobs/s",
        digits=0,
    )
    return [drain, both]


if __name__ == "__main__":
    scenario_main(run, __doc__)
