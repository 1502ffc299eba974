"""Drain throughput and dispatch latency of real gunicorn servers on PostgreSQL (and, for
reference, on the embedded SQLite default).

    .venv/bin/python bench/pg_drain.py [--jobs 1000] [--samples 200] [--json out.json]

- drain: `jobs` tiny `images` jobs (one 64x64 PNG each, a few ms of work) are written to
  the table first, then the servers start and run them all; throughput is jobs divided by
  the time from the first claim to the last finish, both read from the rows (the database
  clock), so server start-up is not counted. PostgreSQL with 1 and with 2 gunicorn
  processes (GENERATION_WORKERS each) against the same database; SQLite with 1 process.
- dispatch: one idle server; one job at a time is POSTed and waited for; latency is the
  row's started_at minus created_at (enqueue to start, one clock).

Every run uses a fresh PostgreSQL database (dropped afterwards) and temporary folders. The
machine is shared and noisy: compare figures from the same run, not across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.generation.store import schema  # noqa: E402
from app.generation.store.engine import create_database_engine  # noqa: E402
from app.generation.store.tables import JobRow  # noqa: E402
from bench.prefill import write_queued  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/postgres")
JOB_PARAMS = {"prompt": "bench", "count": 1, "width": 64, "height": 64, "seed": 1}
jobs = JobRow.__table__


def run(
    jobs_count: int = 1000,
    samples: int = 200,
    workers: int = 2,
    processes: tuple[int, ...] = (1, 2),
) -> dict[str, Any]:
    """Run every scenario; returns the figures as a dict."""
    results: dict[str, Any] = {"jobs": jobs_count, "generation_workers": workers, "drain": {}}
    with tempfile.TemporaryDirectory() as folder:
        sqlite_url = f"sqlite:///{Path(folder) / 'bench.db'}"
        results["drain"]["sqlite_1_process"] = drain(sqlite_url, 1, workers, jobs_count, folder)
        results["dispatch_sqlite"] = dispatch(sqlite_url, workers, samples, folder)
    for count in processes:
        with postgres_database() as url, tempfile.TemporaryDirectory() as folder:
            results["drain"][f"postgres_{count}_process"] = drain(
                url, count, workers, jobs_count, folder
            )
    with postgres_database() as url, tempfile.TemporaryDirectory() as folder:
        results["dispatch_postgres"] = dispatch(url, workers, samples, folder)
    one, two = (results["drain"].get(f"postgres_{n}_process") for n in (1, 2))
    if one and two:
        results["postgres_2_vs_1_process"] = round(
            two["jobs_per_second"] / one["jobs_per_second"], 2
        )
    return results


def drain(
    url: str,
    processes: int,
    workers: int,
    count: int,
    folder: str,
    generator: str = "images",
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `count` queued jobs (tiny `images` ones by default), start the servers, time
    the drain from the first claim to the last finish."""
    params = JOB_PARAMS if params is None else params
    write_queued(url, count, owner="bench", generator=generator, params=params)
    engine = create_database_engine(url)
    with gunicorn(url, processes, workers, folder, queue_size=count):
        wait_until_done(engine, count, timeout=600)
    with engine.connect() as connection:
        first, last, failed = connection.execute(
            select(
                func.min(jobs.c.started_at),
                func.max(jobs.c.finished_at),
                func.count().filter(jobs.c.status != "succeeded"),
            )
        ).one()
    engine.dispose()
    seconds = (last - first).total_seconds()
    return {
        "processes": processes,
        "seconds": round(seconds, 2),
        "jobs_per_second": round(count / seconds, 1),
        "not_succeeded": failed,
    }


def dispatch(url: str, workers: int, samples: int, folder: str) -> dict[str, Any]:
    engine = migrated(url)
    latencies = []
    with gunicorn(url, 1, workers, folder, queue_size=100) as base:
        for _ in range(samples):
            body = {"generator": "images", "params": JOB_PARAMS}
            job_id = requests.post(f"{base}/api/v1/jobs", json=body, timeout=10).json()["id"]
            latencies.append(wait_started(engine, job_id))
    engine.dispose()
    ordered = sorted(latencies)

    def percentile(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "samples": samples,
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def migrated(url: str):
    engine = create_database_engine(url)
    schema.upgrade(engine)
    return engine


def wait_until_done(engine, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    finished = select(func.count()).where(jobs.c.finished_at.is_not(None))
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(finished).scalar_one() >= count:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{count} jobs not finished after {timeout}s")


def wait_started(engine, job_id: str) -> float:
    query = select(jobs.c.created_at, jobs.c.started_at, jobs.c.finished_at).where(
        jobs.c.id == job_id
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            created, started, finished = connection.execute(query).one()
        if finished is not None:
            return (started - created).total_seconds()
        time.sleep(0.005)
    raise TimeoutError(f"job {job_id} did not finish")


@contextmanager
def gunicorn(url: str, processes: int, workers: int, folder: str, queue_size: int) -> Iterator[str]:
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": url,
        "RESULTS_DIR": str(Path(folder) / "results"),
        "PORT": str(port),
        "WEB_CONCURRENCY": str(processes),
        "GENERATION_WORKERS": str(workers),
        "GENERATION_QUEUE_SIZE": str(queue_size),
        "LOG_LEVEL": "WARNING",
        "RESULT_TTL_HOURS": "0",
    }
    command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"]
    with open(Path(folder) / f"gunicorn-{port}.log", "w") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, server)
            yield base
        finally:
            server.terminate()
            server.wait(60)


def wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("gunicorn exited during start")
        # Refused, or accepted but not answered within the second (a worker still
        # starting its service): not ready yet either way.
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            if requests.get(f"{base}/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError("gunicorn did not become ready")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"gs_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = run(args.jobs, args.samples, args.workers)
    text_out = json.dumps(figures, indent=2)
    print(text_out)
    if args.json:
        args.json.write_text(text_out + "\n")


if __name__ == "__main__":
    main()
