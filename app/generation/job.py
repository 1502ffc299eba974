"""A job's vocabulary: its priority, its status, its progress, and `Job`, the immutable
snapshot of one job row that every layer passes around.

The bottom of the core: it imports nothing of it (tests/test_layout.py), so the policy
modules that speak of jobs need neither SQLAlchemy nor the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any
from urllib.parse import urlsplit


class Priority(IntEnum):
    """Lower value runs first (HIGH=1, as in the seed)."""

    HIGH = 1
    NORMAL = 2
    LOW = 3

    @classmethod
    def parse(cls, name: str) -> Priority:
        """Map "high" / "normal" / "low" (any case) to a member; ValueError otherwise."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError("priority must be one of: high, normal, low") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True)
class Progress:
    """How far a run is. One value travels the whole way: from the generator (through
    a child process's pipe), to the job's row and to the event its watchers receive.
    `step` and `total` are live only: the row keeps percent, stage and message."""

    percent: float = 0.0
    stage: str | None = None
    message: str | None = None
    step: int | None = None
    total: int | None = None

    def event_data(self) -> dict[str, Any]:
        """The fields of a `progress` event (the WebSocket contract)."""
        return {
            "percent": self.percent,
            "stage": self.stage,
            "message": self.message,
            "step": self.step,
            "total": self.total,
        }


# What a webhook can report, in the order they happen (a job's `webhook_events`).
WEBHOOK_EVENTS = ("started", "output", "completed")
DEFAULT_WEBHOOK_EVENTS = ("completed",)


@dataclass(frozen=True)
class Webhook:
    """Where a job's events are POSTed, which ones, and whose secret signs them (a key's
    id; None: open mode's secret)."""

    url: str
    events: tuple[str, ...] = DEFAULT_WEBHOOK_EVENTS
    key_id: str | None = None

    def wants(self, event: str) -> bool:
        return event in self.events

    @property
    def host(self) -> str:
        """The target's host name, lower case (the key of its sending slots)."""
        return (urlsplit(self.url).hostname or "").lower()

    @property
    def events_column(self) -> str:
        """`events` as the jobs table keeps them (and its trigger reads them)."""
        return ",".join(self.events)

    @classmethod
    def from_columns(
        cls, url: str | None, events: str | None, key_id: str | None
    ) -> Webhook | None:
        if url is None:
            return None
        return cls(url, tuple(filter(None, (events or "").split(","))), key_id)


@dataclass(frozen=True)
class Job:
    """An immutable snapshot of one job row."""

    pk: int
    id: str
    owner: str
    generator: str
    params: dict[str, Any]
    priority: Priority
    status: JobStatus
    created_at: datetime
    sort_key: float = 0.0
    progress: Progress = field(default_factory=Progress)
    error: str | None = None
    attempts: int = 0
    lease_epoch: int = 0
    lease_expires_at: datetime | None = None
    worker: str | None = None
    cancel_requested: bool = False
    result_bytes: int | None = None
    result_files: list[dict[str, Any]] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expired_at: datetime | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook: Webhook | None = None
    # Filled in by the service when it describes a job; not stored.
    position: int | None = None
    eta_seconds: float | None = None
    replayed: bool = False  # returned for a repeated Idempotency-Key, not newly created

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """Build from a `JobRow` or a Core result row with the same column names."""
        return cls(
            pk=row.pk,
            id=row.id,
            owner=row.owner,
            generator=row.generator,
            params=row.params,
            priority=Priority(row.priority),
            status=JobStatus(row.status),
            created_at=row.created_at,
            sort_key=row.sort_key,
            progress=Progress(row.progress_percent, row.progress_stage, row.progress_message),
            error=row.error,
            attempts=row.attempts,
            lease_epoch=row.lease_epoch,
            lease_expires_at=row.lease_expires_at,
            worker=row.worker,
            cancel_requested=row.cancel_requested,
            result_bytes=row.result_bytes,
            result_files=row.result_files,
            started_at=row.started_at,
            finished_at=row.finished_at,
            expired_at=row.expired_at,
            idempotency_key=row.idempotency_key,
            request_hash=row.request_hash,
            webhook=Webhook.from_columns(row.webhook_url, row.webhook_events, row.webhook_key_id),
        )
