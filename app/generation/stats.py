"""The numbers `/status` reports about the generation service."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .jobs import JobStore, Timing
from .models import JobStatus, Priority


def service_stats(
    store: JobStore,
    *,
    running: bool,
    process: str,
    workers: int,
    running_here: int,
    queue_size: int,
    queue_capacity: int,
    queued_by_priority: dict[Priority, int],
    result_ttl: timedelta | None,
) -> dict[str, Any]:
    """Counts and the queue are the whole cluster's (one process alone on SQLite);
    workers are this process's. `local` and `cluster` say which is which."""
    counts = store.count_by_status()
    timings = store.recent_timings()
    stored_jobs, stored_bytes = store.stored_results()
    return {
        "running": running,
        "workers": workers,
        "active_workers": running_here,
        "local": {"process": process, "workers": workers, "active_workers": running_here},
        "cluster": {
            "queue_size": queue_size,
            "queue_capacity": queue_capacity,
            "queued_by_priority": {p.label: n for p, n in queued_by_priority.items()},
            "running_jobs": counts[JobStatus.RUNNING],
        },
        "queue_size": queue_size,
        "queue_capacity": queue_capacity,
        "queued_by_priority": {p.label: n for p, n in queued_by_priority.items()},
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
    }


def _wait(timing: Timing) -> float:
    return (timing.started_at - timing.created_at).total_seconds()  # type: ignore[operator]


def _run(timing: Timing) -> float:
    return (timing.finished_at - timing.started_at).total_seconds()  # type: ignore[operator]


def _percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p95 of recent finished jobs; None before any."""
    if not values:
        return {"p50": None, "p95": None, "samples": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": rank(0.50), "p95": rank(0.95), "samples": len(ordered)}
