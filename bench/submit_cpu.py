"""In-process CPU time per submit while a queue fills, the figure that decides designs.

Wall-clock rates move with whatever else runs on a shared machine; a thread's CPU time
barely does. This starts the real service (SQLite in a scratch folder under instance/,
thread isolation so no child processes start), holds both workers with long `noop`
jobs, then submits `noop` jobs one after another and reports the submit thread's CPU
time per submit for each block of jobs: flat means constant-time, rising means the cost
grows with the queue.

    .venv/bin/python -m bench.submit_cpu --jobs 2000 --block 500
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from app.config import Config
from app.generation import JobStatus
from app.wiring import build_service

HOLD_MS = 600_000


def measure(jobs: int, block: int, workdir: Path) -> list[float]:
    """Microseconds of thread CPU per submit, one figure per `block` submits."""
    config = Config.from_env(
        {
            "DATABASE_URL": f"sqlite:///{workdir / 'jobs.db'}",
            "RESULTS_DIR": str(workdir / "results"),
            "GENERATION_QUEUE_SIZE": str(jobs + 10),
            "GENERATION_CPU_ISOLATION": "thread",
        },
        dotenv=False,
    )
    service = build_service(config)
    service.start()
    try:
        holders = [service.submit("noop", {"ms": HOLD_MS}) for _ in range(service.worker_count)]
        for holder in holders:
            while service.get(holder.id).status is not JobStatus.RUNNING:
                time.sleep(0.01)
        figures = []
        for _ in range(jobs // block):
            started = time.thread_time()
            for _ in range(block):
                service.submit("noop", {"ms": 0})
            figures.append((time.thread_time() - started) / block * 1e6)
        for holder in holders:
            service.cancel(holder.id)
        return figures
    finally:
        service.shutdown(wait=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--block", type=int, default=500)
    args = parser.parse_args()
    Path("instance").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir="instance", prefix="submit-cpu-") as scratch:
        figures = measure(args.jobs, args.block, Path(scratch))
    for n, us in enumerate(figures):
        print(f"jobs {n * args.block:>6}-{(n + 1) * args.block:<6} {us:8.0f} µs CPU per submit")


if __name__ == "__main__":
    main()
