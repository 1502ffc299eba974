"""What the operators' console shows (the page at /console, app/web/console.py): one
snapshot of the whole queue, as JSON-ready data.

Cluster-wide on PostgreSQL, one process on SQLite: the queue, the running jobs and the
failures are the database's; the workers are every service's registry row
(ops/registry.py); the charts are the shared history (ops/history.py).

A snapshot is computed at most once per FRESH_SECONDS, whatever the number of open
consoles (they share it), and its costlier parts (per-owner counts, webhook and result
totals, the hour of history) once per SLOW_SECONDS: an open console must not cost the
service its throughput (bench scenario `console`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from ..job import Job, Priority
from ..queue.pause import QueuePause
from ..scheduling.policy import offset
from ..store.deliveries import DeliveryStore
from ..store.jobs import JobStore
from ..store.overview import JobOverview
from ..store.processes import ProcessStore
from ..store.queue_state import Paused, QueueStateStore
from .history import QueueHistory

FRESH_SECONDS = 1.0
SLOW_SECONDS = 10.0
RUNNING_SHOWN = 50
NEXT_SHOWN = 10
FAILURES_SHOWN = 10
OWNERS_SHOWN = 10


@dataclass(frozen=True)
class ConsoleSources:
    """Where a console snapshot's figures come from."""

    store: JobStore
    overview: JobOverview
    processes: ProcessStore
    states: QueueStateStore
    deliveries: DeliveryStore
    history: QueueHistory
    pause: QueuePause
    depth: Callable[[], dict[Priority, int]]


@dataclass(frozen=True)
class ConsoleFacts:
    """What a snapshot says about the service itself."""

    process: str
    machine: str
    shared: bool
    capacity: int
    aging_seconds: float
    result_ttl: timedelta | None
    # A service not heard from for this long is shown as silent (a lease: three beats).
    silent_after: float


class Console:
    def __init__(
        self, sources: ConsoleSources, facts: ConsoleFacts, clock: Callable[[], datetime]
    ) -> None:
        self._sources = sources
        self._facts = facts
        self._clock = clock
        self._lock = threading.Lock()
        self._fresh: tuple[float, dict[str, Any]] | None = None
        self._slow: tuple[float, dict[str, Any]] | None = None

    def snapshot(self) -> dict[str, Any]:
        """The console's picture now (shared by every caller within FRESH_SECONDS)."""
        with self._lock:
            now = time.monotonic()
            if self._fresh is None or now - self._fresh[0] >= FRESH_SECONDS:
                if self._slow is None or now - self._slow[0] >= SLOW_SECONDS:
                    self._slow = (now, self._slow_parts())
                self._fresh = (now, self._fresh_parts() | self._slow[1])
            return self._fresh[1]

    def _fresh_parts(self) -> dict[str, Any]:
        sources, now = self._sources, self._clock()
        running = sources.overview.running(RUNNING_SHOWN)
        return {
            "generated_at": now.timestamp(),
            "process": self._facts.process,
            "machine": self._facts.machine,
            "shared": self._facts.shared,
            "queue": self._queue(now),
            "processes": self._processes(now, running),
            "running": [job_summary(job, now) for job in running],
            "next": [job_summary(job, now) for job in sources.overview.next_queued(NEXT_SHOWN)],
            "failures": [
                job_summary(job, now) for job in sources.overview.recent_failures(FAILURES_SHOWN)
            ],
        }

    def _slow_parts(self) -> dict[str, Any]:
        sources = self._sources
        stored, size = sources.store.stored_results()
        ttl = self._facts.result_ttl
        return {
            "owners": [
                {"owner": owner, "queued": queued}
                for owner, queued in sources.overview.queued_per_owner(OWNERS_SHOWN)
            ],
            "webhooks": sources.deliveries.count_by_status(),
            "results": {
                "stored": stored,
                "bytes": size,
                "ttl_hours": ttl / timedelta(hours=1) if ttl else None,
            },
            "sample_seconds": sources.history.interval,
            "history": [asdict(sample) for sample in sources.history.recent()],
        }

    def _queue(self, now: datetime) -> dict[str, Any]:
        depth = self._sources.depth()
        paused = self._sources.pause.state()
        aging = self._facts.aging_seconds
        return {
            **_paused_json(paused),
            "capacity": self._facts.capacity,
            "queued": sum(depth.values()),
            "depth": {priority.label: depth.get(priority, 0) for priority in Priority},
            "aging_seconds": aging,
            "oldest": [
                {
                    "job_id": job.id,
                    "owner": job.owner,
                    "priority": job.priority.label,
                    "age_seconds": _age(job.created_at, now),
                    # From then on, no job admitted later overtakes it (scheduling/policy.py).
                    "aging_bound_seconds": offset(job.priority, aging),
                }
                for job in self._sources.overview.oldest_queued()
            ],
        }

    def _processes(self, now: datetime, running: list[Job]) -> list[dict[str, Any]]:
        drains = self._sources.states.drains()
        jobs_of: dict[str, list[str]] = {}
        for job in running:
            process = (job.worker or "").rpartition("/")[0]
            jobs_of.setdefault(process, []).append(job.id)
        shown = []
        for record in self._sources.processes.all():
            heartbeat_age = _age(record.seen_at, now)
            drained = drains.get(record.machine)
            shown.append(
                {
                    "name": record.name,
                    "machine": record.machine,
                    "this": record.name == self._facts.process,
                    "workers": record.workers,
                    "busy": len(jobs_of.get(record.name, [])),
                    "heartbeat_age_seconds": heartbeat_age,
                    "silent": heartbeat_age > self._facts.silent_after,
                    "up_seconds": _age(record.started_at, now),
                    "draining": drained is not None,
                    "draining_by": drained.by if drained else None,
                    "jobs": jobs_of.get(record.name, []),
                }
            )
        return shown


def job_summary(job: Job, now: datetime) -> dict[str, Any]:
    """A job as the console lists it: who, what and how far, never its params (a prompt
    is its owner's business) nor its result."""
    return {
        "id": job.id,
        "owner": job.owner,
        "generator": job.generator,
        "priority": job.priority.label,
        "status": job.status.value,
        "percent": job.progress.percent,
        "stage": job.progress.stage,
        "worker": job.worker,
        "attempts": job.attempts,
        "error": job.error,
        "age_seconds": _age(job.created_at, now),
        "running_seconds": _age(job.started_at, now) if job.started_at else None,
        "finished_seconds_ago": _age(job.finished_at, now) if job.finished_at else None,
    }


def _paused_json(paused: Paused | None) -> dict[str, Any]:
    return {
        "paused": paused is not None,
        "paused_at": paused.at.timestamp() if paused else None,
        "paused_by": paused.by if paused else None,
    }


def _age(moment: datetime, now: datetime) -> float:
    return round(max(0.0, (now - moment).total_seconds()), 1)
