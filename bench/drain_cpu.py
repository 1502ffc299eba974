"""In-process CPU time per drained `noop` job, the figure that decides designs.

Writes `--jobs` queued `noop` rows (as scenario 3 does), starts the real service on
them (thread isolation, JOB_TIMEOUT_SECONDS at its default) and reports the process's
CPU time (all threads) per job until the queue is drained, and the wall-clock rate for
reference (it moves with the machine). `--backend sqlite` (default) uses a scratch
folder under instance/; `--backend postgres` a fresh database (bench/backends.py; on
PostgreSQL the database server's own CPU is not counted, only this process's).

    .venv/bin/python -m bench.drain_cpu --jobs 2000
    .venv/bin/python -m bench.drain_cpu --jobs 1000 --backend postgres
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from app.config import Config
from app.wiring import build_service

from .backends import POSTGRES, SQLITE, database
from .prefill import write_queued


def measure(jobs: int, workdir: Path, url: str) -> tuple[float, float]:
    """(µs of process CPU per job, jobs per second)."""
    config = Config.from_env(
        {
            "DATABASE_URL": url,
            "RESULTS_DIR": str(workdir / "results"),
            "GENERATION_QUEUE_SIZE": str(jobs + 10),
            "GENERATION_CPU_ISOLATION": "thread",
        },
        dotenv=False,
    )
    write_queued(url, jobs)
    service = build_service(config)
    cpu, wall = time.process_time(), time.perf_counter()
    service.start()
    try:
        # On SQLite these are in-memory figures; on PostgreSQL the depth is a query, so
        # it is asked less often (about 10 µs per job at a few hundred jobs/s).
        pause = 0.01 if url.startswith("sqlite") else 0.1
        while sum(service.queued_by_priority().values()) or service.active_workers:
            time.sleep(pause)
        return (time.process_time() - cpu) / jobs * 1e6, jobs / (time.perf_counter() - wall)
    finally:
        service.shutdown(wait=True, timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=(SQLITE, POSTGRES), default=SQLITE)
    args = parser.parse_args()
    Path("instance").mkdir(exist_ok=True)
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(dir="instance", prefix="drain-cpu-") as scratch:
            with database(args.backend, Path(scratch)) as url:
                us, rate = measure(args.jobs, Path(scratch), url)
        print(f"{us:6.0f} µs CPU per job, {rate:5.0f} jobs/s wall ({args.backend})")


if __name__ == "__main__":
    main()
