"""Scenario 8: drain from submit: 2,000 `noop` jobs submitted by 4 clients and run by 2
workers, first submit → last finish, against the floor's POST rate.

Each repetition, on a fresh database and a fresh server (GENERATION_WORKERS=2,
GENERATION_QUEUE_SIZE=10,000): 4 client threads, each on one keep-alive `http.client`
connection (client.HttpClient), submit 500 `noop` jobs (ms=0) each as fast as they are
answered, while the workers run them; then the database is polled until all 2,000 have
finished. Rate = 2,000 / (last `finished_at` − first `created_at`), both read from the
rows (the server's clock): the whole life of the batch, submit path, queue, claim, run
and finish together, as a user of the service sees it (scenario 3 times the workers
alone on a prefilled queue, scenario 1 the submit path alone).

The floor is the no-op POST rate of bench/floor_app.py measured by wrk (16 connections,
2 s) just before, in the same repetition, so the ratio says how many no-op requests one
job's whole life costs. The clients are Python threads on the same 2 cores as the server
(they must submit an exact number of jobs, which wrk does not do well: load.py), so they
take CPU the server could use: the figure is a lower bound of what the service alone
could do. How much they can submit at most is measured too: the same 4 clients POST
2,000 times to the floor (`floor_rate_python_clients` in the JSON). Targets (the
issue's): ≥ 0.4x the floor on SQLite, ≥ 0.3x on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from app.generation.job import JobStatus
from app.generation.store.engine import create_database_engine
from app.generation.store.tables import JobRow

from .backends import POSTGRES, SQLITE, database
from .cli import scenario_main
from .client import HttpClient
from .load import post_load
from .report import row
from .servers import Server, runs_beside_floor, service_server

JOBS = 2_000
CLIENTS = 4
WORKERS = 2
QUEUE_SIZE = 10_000
FLOOR_SECONDS = 2
TARGET_RATIO = {SQLITE: 0.4, POSTGRES: 0.3}
JOB = {"generator": "noop", "params": {"ms": 0}}
TERMINAL = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)
_columns = JobRow.__table__.c


def run(*, workdir: Path, backends: Sequence[str] = (SQLITE,), repeat: int = 3) -> dict[str, Any]:
    details = runs_beside_floor(workdir, backends, repeat, _measure)
    rows = [_row(backend, runs) for backend, runs in details.items()]
    return {
        "scenario": "drain_e2e",
        "title": "8. drain from submit",
        "rows": rows,
        "settings": {
            "jobs": JOBS,
            "clients": CLIENTS,
            "workers": WORKERS,
            "queue_size": QUEUE_SIZE,
            "job": JOB,
        },
        "runs": details,
    }


def _measure(floor: Server, backend: str, scratch: Path) -> dict[str, Any]:
    floor_rate = post_load(floor.url + "/api/v1/jobs", JOB, seconds=FLOOR_SECONDS).rate
    # The same clients against the floor: the most they can submit on this machine.
    clients_ceiling = JOBS / submit_all(floor.port)
    return {
        "floor_rate": round(floor_rate, 1),
        "floor_rate_python_clients": round(clients_ceiling, 1),
    } | submit_and_drain(backend, scratch)


def submit_and_drain(backend: str, workdir: Path) -> dict[str, Any]:
    """Submit JOBS jobs from CLIENTS threads to a fresh server; time them from the rows."""
    with (
        database(backend, workdir) as url,
        service_server(
            url, workdir, GENERATION_WORKERS=WORKERS, GENERATION_QUEUE_SIZE=QUEUE_SIZE
        ) as server,
    ):
        submit_seconds = submit_all(server.port)
        return wait_finished(url, JOBS) | {"client_submit_seconds": round(submit_seconds, 3)}


def submit_all(port: int) -> float:
    """POST JOBS jobs from CLIENTS keep-alive connections, started together; the seconds
    the clients took. Raises if any submission was not accepted."""
    shares = [JOBS // CLIENTS + (1 if n < JOBS % CLIENTS else 0) for n in range(CLIENTS)]
    start = threading.Barrier(CLIENTS + 1)
    refused: list[str] = []

    def submit(count: int) -> None:
        with HttpClient(port) as client:
            start.wait()
            for _ in range(count):
                reply = client.post("/api/v1/jobs", JOB)
                if reply.status != 202:
                    refused.append(f"{reply.status} {reply.body}")

    threads = [threading.Thread(target=submit, args=(count,)) for count in shares]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if refused:
        raise RuntimeError(f"{len(refused)} submissions refused, e.g. {refused[0]}")
    return seconds


def wait_finished(url: str, count: int, *, timeout: float = 300.0) -> dict[str, Any]:
    """Poll until `count` jobs have ended; their times from their rows."""
    engine = create_database_engine(url)
    ended = _columns.status.in_(TERMINAL)
    try:
        deadline = time.monotonic() + timeout
        with engine.connect() as connection:
            while connection.scalar(select(func.count()).where(ended)) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{count} jobs did not finish in {timeout}s")
                connection.rollback()  # a fresh snapshot for the next look
                time.sleep(0.05)
            first, last_created, last, failed = connection.execute(
                select(
                    func.min(_columns.created_at),
                    func.max(_columns.created_at),
                    func.max(_columns.finished_at),
                    func.count().filter(_columns.status != JobStatus.SUCCEEDED.value),
                )
            ).one()
    finally:
        engine.dispose()
    if failed:
        raise RuntimeError(f"{failed} of {count} jobs did not succeed")
    seconds = (last - first).total_seconds()
    return {
        "jobs": count,
        "seconds": round(seconds, 3),
        "rate": round(count / seconds, 1),
        # First to last submit, and what the workers still had to do after the last one.
        "submit_seconds": round((last_created - first).total_seconds(), 3),
        "tail_seconds": round((last - last_created).total_seconds(), 3),
    }


def _row(backend: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    target = TARGET_RATIO[backend]
    item = row(
        backend,
        f"{JOBS:,} noop jobs submitted by {CLIENTS} clients, first submit → last finish "
        f"({WORKERS} workers)",
        [run["rate"] for run in runs],
        [run["floor_rate"] for run in runs],
        unit="jobs/s",
        target=f"≥ {target}x floor",
        digits=0,
    )
    item["met"] = item["ratio"]["median"] >= target
    return item


if __name__ == "__main__":
    scenario_main(run, __doc__)
