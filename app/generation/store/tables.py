"""The tables: jobs, API keys, queue counts, result chunks, result files, the webhook
outbox, the queue's switches (pause, drains), the registry of running services and the
queue's history.

The job table (`JobRow`) is the source of truth; the in-memory queue is only an index
over queued rows. Code outside the store works with `job.Job`, an immutable snapshot of
one row, so no SQLAlchemy session ever leaks across threads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    DateTime,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    event,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from .outbox_triggers import SQLITE_TRIGGER


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite has no time zones; we store UTC there)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


QUEUED_PREDICATE = text("status = 'queued'")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[dict[str, Any]]: JSON(),
    }


class JobRow(Base):
    __tablename__ = "jobs"

    # `pk` orders jobs (FIFO within a priority, list pagination); `id` is what clients see.
    pk: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(32), unique=True)
    owner: Mapped[str] = mapped_column(String(64), default="anonymous")
    generator: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]]
    priority: Mapped[int]
    # The scheduling key fixed at admission (scheduling/policy.py): the queued job with the
    # smallest (sort_key, pk) starts next. Epoch seconds of the database's clock.
    sort_key: Mapped[float] = mapped_column(Double())
    status: Mapped[str] = mapped_column(String(16))
    progress_percent: Mapped[float] = mapped_column(default=0.0)
    progress_stage: Mapped[str | None] = mapped_column(String(64))
    progress_message: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    # Each claim bumps `lease_epoch`; every later write of that run names the epoch it
    # holds, so a run that lost its claim cannot overwrite its successor's outcome.
    # `lease_expires_at` is pushed forward by the owner's heartbeat; once it passes, any
    # live process may take the job back (execution/leases.py).
    attempts: Mapped[int] = mapped_column(default=0)
    lease_epoch: Mapped[int] = mapped_column(default=0)
    lease_expires_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(128))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    result_bytes: Mapped[int | None]
    result_files: Mapped[list[dict[str, Any]] | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Set when the retention sweep deleted the result; the row itself is kept.
    expired_at: Mapped[datetime | None]
    # A client's `Idempotency-Key` and the fingerprint of the request it came with: a
    # repeat with the same key finds this row instead of creating a second job.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # Where to POST what happens to the job (notify/), its host (each host gets a few
    # sending slots), which events ("started,completed"), and the key whose signing secret
    # signs them (None: open mode's secret). A trigger writes the deliveries in the
    # transaction that moves `status` (store/outbox_triggers.py).
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_host: Mapped[str | None] = mapped_column(String(255))
    webhook_events: Mapped[str | None] = mapped_column(String(40))
    webhook_key_id: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        # The claim's order over queued rows only: a claim reads the first entry. The
        # predicate is a literal: a planner can use a partial index only for a query
        # whose WHERE implies it (so statements spell `status = 'queued'` out too).
        # PostgreSQL's schema comes from the migrations alone (store/schema.py), where 0003
        # makes these partial there too; `postgresql_where` here would load SQLAlchemy's
        # PostgreSQL dialect into every SQLite process (tests/test_start_up_imports.py).
        Index(
            "ix_jobs_queued_sort_key",
            "sort_key",
            "pk",
            sqlite_where=QUEUED_PREDICATE,
        ),
        # An owner's queued jobs by priority: the tail an admission keys after, and the
        # owner's quota count (bounded by the quota, not by the queue).
        Index(
            "ix_jobs_queued_owner_priority_sort_key",
            "owner",
            "priority",
            "sort_key",
            sqlite_where=QUEUED_PREDICATE,
        ),
        Index("ix_jobs_status_priority_pk", "status", "priority", "pk"),
        Index("ix_jobs_owner_pk", "owner", "pk"),
        # The retention sweep: succeeded, not yet expired, finished before a cutoff; and
        # the console's reads of what finished lately, by outcome (store/overview.py).
        Index("ix_jobs_status_expired_at_finished_at", "status", "expired_at", "finished_at"),
        # NULL keys never collide (SQLite and Postgres alike), so jobs without one are free.
        Index("uq_jobs_owner_idempotency_key", "owner", "idempotency_key", unique=True),
    )


class ApiKeyRow(Base):
    """An API key, stored as the SHA-256 of the key: the key itself is shown once."""

    __tablename__ = "api_keys"

    pk: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    # The public part of the key (`gsk_<key_id>_...`), for listing and revoking.
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The owner of every job submitted with this key; several keys may share one name.
    name: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    # Webhooks of this key's jobs: a default target, and the secret that signs them (a
    # `whsec_` secret, kept in the clear because signing needs it). After a rotation the
    # previous secret signs too until `webhook_previous_until`, so receivers can switch.
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_secret: Mapped[str | None] = mapped_column(String(64))
    webhook_previous_secret: Mapped[str | None] = mapped_column(String(64))
    webhook_previous_until: Mapped[datetime | None]
    # An operator's key: may see and steer every owner's jobs and the queue (/api/v1/admin).
    admin: Mapped[bool] = mapped_column(default=False, server_default=text("false"))


class QueueCountRow(Base):
    """How many jobs ever entered (`in`) and left (`out`) the queued state, kept by
    triggers on PostgreSQL (migration 0003), so an admission knows the cluster's queue
    depth from two rows instead of counting the queued ones. Two rows, so that claims
    (which move `out`) never wait for admissions (which lock `in`). Unused on SQLite,
    where one process holds the whole queue in memory."""

    __tablename__ = "queue_counts"

    name: Mapped[str] = mapped_column(String(8), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))


class QueueStateRow(Base):
    """Operators' switches over the whole queue, one row each, shared by every process
    (queue/pause.py): `queue` is paused while its row has a `paused_at`."""

    __tablename__ = "queue_state"

    # `queue`, or `drain:<machine>` for one machine's drain (its workers claim nothing).
    name: Mapped[str] = mapped_column(String(160), primary_key=True)
    paused_at: Mapped[datetime | None]
    # Who paused it: an admin key's id, or "open" (AUTH_MODE=open), or "cli".
    paused_by: Mapped[str | None] = mapped_column(String(64))


class ServiceProcessRow(Base):
    """A running service (one process) and its workers, refreshed by its heartbeat
    (store/processes.py), so operators see every machine's workers; a clean shutdown
    deletes it, a dead process's row goes silent and is pruned later."""

    __tablename__ = "service_processes"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Which machine it runs on (FLY_MACHINE_ID, or the host name): what a drain names.
    machine: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime]
    workers: Mapped[int]


class QueueSampleRow(Base):
    """The whole queue at one moment (epoch seconds `at`, a multiple of the sampling
    interval), one row per interval whichever process wrote it (ops/history.py): depth
    per priority and running now; jobs that finished in the interval, and the wait and
    run time percentiles of those that ran."""

    __tablename__ = "queue_samples"

    at: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    queued_high: Mapped[int]
    queued_normal: Mapped[int]
    queued_low: Mapped[int]
    running: Mapped[int]
    succeeded: Mapped[int]
    failed: Mapped[int]
    cancelled: Mapped[int]
    wait_p50: Mapped[float | None] = mapped_column(Double())
    wait_p95: Mapped[float | None] = mapped_column(Double())
    run_p50: Mapped[float | None] = mapped_column(Double())
    run_p95: Mapped[float | None] = mapped_column(Double())


class ResultFileRow(Base):
    """One file of a run, stored as it landed (results/files_database.py); the run's
    live preview is the row whose `name` is empty (no file may have that name)."""

    __tablename__ = "result_files"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    epoch: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    # Landing order; for the preview, its version (each replacement counts one up).
    position: Mapped[int]
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column("bytes")
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ResultChunkRow(Base):
    """One slice of a result ZIP kept in the database (results/database.py)."""

    __tablename__ = "result_chunks"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    epoch: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class WebhookDeliveryRow(Base):
    """One webhook message to send: the outbox (notify/dispatcher.py sends it).

    `id` is the message's `webhook-id`, the same on every attempt, so receivers can drop
    repeats. A `pending` row is due at `next_attempt_at`; claiming it pushes that moment
    past the attempt's longest duration, so a process that dies mid-attempt leaves it due
    again for another (at least once). `delivered` and `failed` (the dead-letter, after
    the last attempt) are final until an owner redrives a failed one. The `next_attempt_at`
    a claim sets is that claim's token: an attempt records its outcome only on the row it
    claimed, never on a later claim of it (or a redrive)."""

    __tablename__ = "webhook_deliveries"

    pk: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255))
    # What the event is about beyond the job: the file of an `output` event.
    detail: Mapped[dict[str, Any] | None]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime | None]
    # The receiver's last HTTP status (None: no answer) and what went wrong, shortened.
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_job_id", "job_id"),
        Index("ix_webhook_deliveries_owner_status_pk", "owner", "status", "pk"),
    )


# A SQLite database built from the models (store/schema.py) gets the outbox trigger too,
# once both tables exist; PostgreSQL's comes from migration 0005.
event.listen(
    WebhookDeliveryRow.__table__,
    "after_create",
    DDL(SQLITE_TRIGGER).execute_if(dialect="sqlite"),
)
