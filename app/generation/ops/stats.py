"""The numbers `/status` reports about the generation service."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..job import JobStatus, Priority
from ..store.job_reads import Timing
from ..store.jobs import JobStore
from .history import nearest_rank


def service_stats(
    store: JobStore,
    *,
    running: bool,
    process: str,
    shared: bool,
    workers: int,
    workers_range: tuple[int, int],
    active_workers: int,
    queue_capacity: int,
    queued_by_priority: dict[Priority, int],
    result_ttl: timedelta | None,
    aging_seconds: float,
    eta_accuracy: dict[str, Any],
) -> dict[str, Any]:
    """Counts and the queue come from the database: the whole cluster's on PostgreSQL
    (one process alone on SQLite), and they survive restarts. Workers are this
    process's. `local` and `cluster` say which is which."""
    counts = store.count_by_status()
    timings = store.recent_timings()
    stored_jobs, stored_bytes = store.stored_results()
    queue_size = counts[JobStatus.QUEUED]
    by_priority = {p.label: n for p, n in queued_by_priority.items()}
    return {
        "running": running,
        "workers": workers,
        "workers_min": workers_range[0],
        "workers_max": workers_range[1],
        "active_workers": active_workers,
        "queue_size": queue_size,
        "queue_capacity": queue_capacity,
        "queued_by_priority": by_priority,
        "priority_aging_seconds": aging_seconds,
        "local": {
            "process": process,
            "workers": workers,
            "active_workers": active_workers,
        },
        "cluster": {
            "shared_queue": shared,
            "queue_size": queue_size,
            "queue_capacity": queue_capacity,
            "queued_by_priority": by_priority,
            "running_jobs": counts[JobStatus.RUNNING],
        },
        "total_requests": sum(counts.values()),
        "completed_requests": counts[JobStatus.SUCCEEDED],
        "failed_requests": counts[JobStatus.FAILED],
        "cancelled_requests": counts[JobStatus.CANCELLED],
        "jobs_by_status": {status.value: n for status, n in counts.items()},
        "wait_seconds": _percentiles([_wait(t) for t in timings if t.started_at]),
        "run_seconds": _percentiles([_run(t) for t in timings if t.started_at]),
        "results": {
            "stored": stored_jobs,
            "bytes": stored_bytes,
            "ttl_hours": result_ttl / timedelta(hours=1) if result_ttl else None,
        },
        # |predicted - actual| / actual of the ETA given at submit, for recent successes.
        "eta_error": eta_accuracy,
    }


def _wait(timing: Timing) -> float:
    return (timing.started_at - timing.created_at).total_seconds()  # type: ignore[operator]


def _run(timing: Timing) -> float:
    return (timing.finished_at - timing.started_at).total_seconds()  # type: ignore[operator]


def _percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p95 of recent finished jobs; None before any."""
    return {
        "p50": nearest_rank(values, 0.50),
        "p95": nearest_rank(values, 0.95),
        "samples": len(values),
    }
