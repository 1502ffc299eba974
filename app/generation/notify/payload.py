"""A webhook's body: Standard Webhooks' envelope (`type`, `timestamp`, `data`) around the
job, as it is when the delivery is sent, so a receiver needs no second call. An `output`
delivery also names its file."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..job import Job
from ..store.deliveries import Delivery

EVENT_TYPES = {"started": "job.started", "output": "job.output", "completed": "job.completed"}


def envelope(delivery: Delivery, job_data: dict[str, Any], now: datetime) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": EVENT_TYPES.get(delivery.event, "job." + delivery.event),
        "timestamp": _iso(now),
        "data": job_data,
    }
    if delivery.detail is not None:
        body["file"] = delivery.detail
    return body


def basic_job_data(job: Job) -> dict[str, Any]:
    """The job without the web tier's links: what the core alone can say (the service
    renders the full document, as GET answers it, when it runs behind the API)."""
    return {
        "id": job.id,
        "status": job.status.value,
        "generator": job.generator,
        "params": job.params,
        "priority": job.priority.label,
        "error": job.error,
        "attempts": job.attempts,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "result_files": [entry["name"] for entry in job.result_files or []],
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
