"""The webhook outbox (`webhook_deliveries`): what notify/dispatcher.py sends, and what
owners and operators read about it.

Rows for `started` and `completed` are written by the jobs table's triggers
(store/outbox_triggers.py); `output` rows here, one per landed file, under an id derived
from the run and the file's name so that announcing a file twice writes one row.

A claim takes due rows and pushes their `next_attempt_at` past the longest an attempt
can take (`lease`), in one statement: on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so
processes on several machines never take the same row; a process that dies mid-attempt
leaves its rows due again when the lease runs out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from ..job import Job
from .tables import WebhookDeliveryRow

_table = WebhookDeliveryRow.__table__
_c = _table.c

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)


@dataclass(frozen=True)
class Delivery:
    """One outbox row, as read."""

    pk: int
    id: str
    job_id: str
    owner: str
    key_id: str | None
    event: str
    url: str
    detail: dict[str, Any] | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Delivery:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


def output_id(job: Job, name: str) -> str:
    """The `webhook-id` of the `output` delivery of file `name` of `job`'s current run."""
    digest = hashlib.sha256(f"{job.id}\0{job.lease_epoch}\0{name}".encode()).hexdigest()
    return "msg_" + digest[:32]


class DeliveryStore:
    def __init__(
        self,
        engine: Engine,
        writing: Callable[[], AbstractContextManager[Connection]] | None = None,
    ) -> None:
        """`writing`: the transactions to write in (JobStore.writing: on SQLite, this
        process's writers take turns)."""
        self._engine = engine
        self._writing = writing or engine.begin
        self._postgres = engine.dialect.name == "postgresql"

    def add_output(self, job: Job, file: Mapping[str, Any], now: datetime) -> bool:
        """Write the `output` delivery of a landed file (False: it was written before)."""
        assert job.webhook is not None
        values = {
            "id": output_id(job, str(file["name"])),
            "job_id": job.id,
            "owner": job.owner,
            "key_id": job.webhook.key_id,
            "event": "output",
            "url": job.webhook.url,
            "detail": dict(file),
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        with self._writing() as connection:
            if connection.execute(select(_c.pk).where(_c.id == values["id"])).first():
                return False
            connection.execute(insert(_table).values(values))
        return True

    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[Delivery]:
        """Take up to `limit` due deliveries for an attempt each, oldest due first."""
        due = (
            select(_c.pk)
            .where(_c.status == PENDING, _c.next_attempt_at <= now)
            .order_by(_c.next_attempt_at, _c.pk)
            .limit(limit)
        )
        if self._postgres:
            due = due.with_for_update(skip_locked=True)
        claim = (
            update(_table)
            .where(_c.pk.in_(due.scalar_subquery()))
            .values(next_attempt_at=now + lease)
            .returning(*_table.c)
        )
        with self._engine.connect() as connection:  # nothing due: no write transaction
            if not self._postgres and connection.execute(due).first() is None:
                return []
        with self._writing() as connection:
            rows = connection.execute(claim).all()
        return sorted((Delivery.from_row(row) for row in rows), key=lambda d: d.pk)

    def put_back(self, delivery: Delivery, due: datetime) -> None:
        """Return a claimed delivery unattempted, due at `due`."""
        statement = (
            update(_table)
            .where(_c.pk == delivery.pk, _c.status == PENDING, _c.attempts == delivery.attempts)
            .values(next_attempt_at=due)
        )
        with self._writing() as connection:
            connection.execute(statement)

    def next_due(self) -> datetime | None:
        """When the earliest pending delivery is due (None: nothing pending)."""
        query = select(func.min(_c.next_attempt_at)).where(_c.status == PENDING)
        with self._engine.connect() as connection:
            return connection.execute(query).scalar()

    def record(
        self,
        delivery: Delivery,
        now: datetime,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        retry_at: datetime | None,
    ) -> Delivery | None:
        """Record an attempt: delivered, due again at `retry_at`, or failed for good
        (`retry_at` None). Only a row still pending with the attempts seen at the claim
        is changed, so an attempt whose lease ran out cannot overwrite a later one."""
        final = delivered or retry_at is None
        values: dict[str, Any] = {
            "attempts": delivery.attempts + 1,
            "last_attempt_at": now,
            "last_status": status,
            "last_error": error[:300] if error else None,
            "status": DELIVERED if delivered else (FAILED if final else PENDING),
            "next_attempt_at": retry_at or now,
            "finished_at": now if final else None,
        }
        statement = (
            update(_table)
            .where(_c.pk == delivery.pk, _c.status == PENDING, _c.attempts == delivery.attempts)
            .values(values)
            .returning(*_table.c)
        )
        with self._writing() as connection:
            row = connection.execute(statement).first()
        return Delivery.from_row(row) if row else None

    def get(self, delivery_id: str, owner: str | None = None) -> Delivery | None:
        query = select(_table).where(_c.id == delivery_id)
        if owner is not None:
            query = query.where(_c.owner == owner)
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return Delivery.from_row(row) if row else None

    def page(
        self,
        *,
        owner: str | None,
        status: str | None,
        before_pk: int | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        """Deliveries newest first (`owner`'s only unless None), a page at a time."""
        query = select(_table).order_by(_c.pk.desc()).limit(limit)
        if owner is not None:
            query = query.where(_c.owner == owner)
        if status is not None:
            query = query.where(_c.status == status)
        if before_pk is not None:
            query = query.where(_c.pk < before_pk)
        with self._engine.connect() as connection:
            return [Delivery.from_row(row) for row in connection.execute(query)]

    def for_job(self, job_id: str) -> list[Delivery]:
        query = select(_table).where(_c.job_id == job_id).order_by(_c.pk)
        with self._engine.connect() as connection:
            return [Delivery.from_row(row) for row in connection.execute(query)]

    def redrive(self, delivery_id: str, owner: str | None, now: datetime) -> Delivery | None:
        """Make a failed delivery due now, with a fresh schedule of attempts; None if
        there is no failed delivery with that id (of that owner)."""
        statement = (
            update(_table)
            .where(_c.id == delivery_id, _c.status == FAILED)
            .values(status=PENDING, attempts=0, next_attempt_at=now, finished_at=None)
            .returning(*_table.c)
        )
        if owner is not None:
            statement = statement.where(_c.owner == owner)
        with self._writing() as connection:
            row = connection.execute(statement).first()
        return Delivery.from_row(row) if row else None

    def count_by_status(self) -> dict[str, int]:
        """Deliveries by status, every status named (zero where none)."""
        query = select(_c.status, func.count()).group_by(_c.status)
        with self._engine.connect() as connection:
            counted = dict(connection.execute(query).all())
        return {status: counted.get(status, 0) for status in STATUSES}

    def prune(self, finished_before: datetime) -> int:
        """Delete deliveries that ended (delivered or failed) before `finished_before`."""
        statement = delete(_table).where(_c.status != PENDING, _c.finished_at < finished_before)
        with self._writing() as connection:
            return connection.execute(statement).rowcount
