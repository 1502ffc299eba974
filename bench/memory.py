"""Scenario 7: memory of the whole service: idle, under load, and per queued job.

Memory is summed over the gunicorn master and every process below it (/proc), so a
process pool, if the service starts one, is counted. RSS double-counts pages that
processes share; PSS (from smaps_rollup) splits them, and is reported beside it.

- idle, fresh: after a warm-up (a few `noop` jobs, every route touched) and a second of
  rest, before any CPU-bound job: generation processes start with the first one, so in
  process isolation there are none yet;
- idle: the same after one small `images` job per worker (their processes are up);
- under load: the peak while both workers render large `images` jobs and 16 clients
  submit `noop` jobs;
- per queued job: in process (no HTTP), both workers held by long jobs, 300 jobs
  submitted and left queued; the Python heap they add (tracemalloc) / 300. It covers the
  job record, the queue index, the scheduler's bookkeeping and the job's event history.

Idle and peak are measured in both GENERATION_CPU_ISOLATION modes: `process` (the
default) keeps one generation child process per worker for CPU-bound generators, and
each child costs memory; `thread` runs them in the web process. The per-job figure does
not depend on the mode and is taken in the default one, which alone is repeated.

The floor is the trivial Flask app's idle RSS on the same gunicorn settings.
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.config import Config
from app.generation import JobStatus
from app.wiring import build_service

from .backends import SQLITE, database
from .cli import scenario_main
from .load import post_load
from .report import row
from .servers import Server, floor_server, service_server, warm_up_workers
from .submit_throughput import HOLD_MS

TARGET_IDLE_MB = 110
QUEUED_JOBS = 300
QUEUE_SIZE = 100_000
NOOP = {"generator": "noop", "params": {"ms": 0}}
IMAGES = {"generator": "images", "params": {"prompt": "memory", "count": 4, "width": 1024}}
LOAD_SECONDS = 3
MODES = ("process", "thread")


def run(*, workdir: Path, backends: Sequence[str] = (SQLITE,), repeat: int = 3) -> dict[str, Any]:
    rows = []
    details: dict[str, Any] = {}
    with floor_server(workdir) as floor:
        warm_up(floor, with_jobs=False)
        floor_idle = tree_memory(floor)
        for backend in backends:
            for mode in MODES:
                scratch = workdir / f"{backend}-{mode}"
                # The default mode is repeated; the other, for comparison, runs once.
                times = repeat if mode == MODES[0] else 1
                runs = [measure(backend, mode, scratch / str(n)) for n in range(times)]
                details[f"{backend}, {mode}"] = runs
                rows.extend(_rows(backend, mode, runs, floor_idle))
    return {
        "scenario": "memory",
        "title": "7. memory",
        "rows": rows,
        "floor_idle": floor_idle,
        "runs": details,
    }


def measure(backend: str, mode: str, workdir: Path) -> dict[str, Any]:
    settings = {"GENERATION_QUEUE_SIZE": QUEUE_SIZE, "GENERATION_CPU_ISOLATION": mode}
    with database(backend, workdir) as url, service_server(url, workdir, **settings) as server:
        warm_up(server, with_jobs=True)
        fresh = tree_memory(server)
        warm_up_workers(server)  # generation processes, if any, are up and loaded
        wait_queue_empty(server)
        time.sleep(1.0)
        idle = tree_memory(server)
        peak = peak_under_load(server)
    measured = {"idle_fresh": fresh, "idle": idle, "peak_rss_mb": peak}
    if mode != MODES[0]:
        return measured
    return measured | {"per_queued_job_kb": queued_job_kb(workdir)}


def warm_up(server: Server, *, with_jobs: bool) -> None:
    """Touch every route a client uses, then let the process settle."""
    with server.client() as client:
        for _ in range(5):
            reply = client.post("/api/v1/jobs", NOOP)
            if with_jobs:
                client.get(f"/api/v1/jobs/{reply.body['id']}")
        client.get("/health")
        if with_jobs:
            client.get("/status")
            client.get("/api/v1/jobs")
    if with_jobs:
        wait_queue_empty(server)
    time.sleep(1.0)


def peak_under_load(server: Server) -> float:
    """Peak RSS (MB) while both workers render images and clients submit."""
    with server.client() as client:
        for _ in range(4):
            client.post("/api/v1/jobs", IMAGES)
    loader = threading.Thread(
        target=post_load, args=(server.url + "/api/v1/jobs", NOOP), kwargs={"seconds": LOAD_SECONDS}
    )
    loader.start()
    peak = 0.0
    while loader.is_alive():
        peak = max(peak, tree_memory(server)["rss_mb"])
        time.sleep(0.1)
    return round(peak, 1)


def queued_job_kb(workdir: Path) -> float:
    """KB of Python heap (tracemalloc) that one job waiting in the queue holds: in process,
    both workers held, QUEUED_JOBS submitted. Exact where an RSS difference of a few
    hundred KB would drown in the allocator's noise."""
    config = Config(
        database_url=f"sqlite:///{workdir.resolve() / 'heap.db'}",
        results_dir=workdir / "heap-results",
        generation_cpu_isolation="thread",
        generation_queue_size=QUEUED_JOBS + 10,
    )
    service = build_service(config)
    service.start()
    try:
        holders = [service.submit("noop", {"ms": HOLD_MS}) for _ in range(service.worker_count)]
        while any(service.get(job.id).status is not JobStatus.RUNNING for job in holders):
            time.sleep(0.02)
        gc.collect()
        tracemalloc.start()
        for _ in range(QUEUED_JOBS):
            service.submit("noop", {"ms": 0})
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        for job in holders:
            service.cancel(job.id)
    finally:
        service.shutdown(wait=True, timeout=5)
    return round(held / 1024 / QUEUED_JOBS, 2)


def wait_queue_empty(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while client.get("/status").body["generation_service"]["queue_size"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the queue did not drain in {timeout}s")
            time.sleep(0.2)


def tree_memory(server: Server) -> dict[str, Any]:
    """RSS and PSS (MB) summed over the server's processes, and RSS of each."""
    each = {
        pid: (
            _kb(Path(f"/proc/{pid}/status"), "VmRSS:"),
            _kb(Path(f"/proc/{pid}/smaps_rollup"), "Pss:"),
        )
        for pid in server.pids()
    }
    return {
        "processes": len(each),
        "rss_mb": round(sum(rss for rss, _ in each.values()) / 1024, 1),
        "pss_mb": round(sum(pss for _, pss in each.values()) / 1024, 1),
        # master first, then the web worker, then any generation processes
        "rss_mb_each": [round(rss / 1024, 1) for rss, _ in each.values()],
    }


def _kb(path: Path, field: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass  # the process ended between listing and reading
    return 0


def _rows(
    backend: str, mode: str, runs: list[dict[str, Any]], floor_idle: dict[str, Any]
) -> list[dict[str, Any]]:
    floor = [floor_idle["rss_mb"]] * len(runs)
    idle = row(
        backend,
        f"RSS idle, whole process tree ({mode} isolation)",
        [run["idle"]["rss_mb"] for run in runs],
        floor,
        unit="MB",
        target=f"≤ {TARGET_IDLE_MB} MB",
        digits=1,
    )
    idle["met"] = idle["ours"]["median"] <= TARGET_IDLE_MB
    fresh = row(
        backend,
        f"RSS idle before any CPU-bound job, whole process tree ({mode} isolation)",
        [run["idle_fresh"]["rss_mb"] for run in runs],
        floor,
        unit="MB",
        target=f"≤ {TARGET_IDLE_MB} MB",
        digits=1,
    )
    fresh["met"] = fresh["ours"]["median"] <= TARGET_IDLE_MB
    rows = [
        fresh,
        idle,
        row(
            backend,
            f"PSS idle, shared pages counted once ({mode} isolation)",
            [run["idle"]["pss_mb"] for run in runs],
            [floor_idle["pss_mb"]] * len(runs),
            unit="MB",
            digits=1,
        ),
        row(
            backend,
            f"RSS peak: workers rendering + 16 clients submitting ({mode} isolation)",
            [run["peak_rss_mb"] for run in runs],
            floor,
            unit="MB",
            digits=1,
        ),
    ]
    if "per_queued_job_kb" in runs[0]:
        rows.append(
            row(
                backend,
                f"Python heap per queued job ({QUEUED_JOBS} queued, tracemalloc)",
                [run["per_queued_job_kb"] for run in runs],
                unit="KB",
                digits=2,
            )
        )
    return rows


if __name__ == "__main__":
    scenario_main(run, __doc__)
