"""The webhook outbox (`webhook_deliveries`): what notify/dispatcher.py sends, and what
owners and operators read about it.

Rows are written by the jobs table's trigger (store/outbox_triggers.py) with the status
change they report; the `output` row of a file stored while its job runs is written here,
under the id the trigger would give it (`msg_<job>_<epoch>_<position>`), so the file is
reported once whichever writes first.

A claim takes due rows and pushes their `next_attempt_at` past the longest an attempt
can take (`lease`), in one statement: on PostgreSQL with `FOR UPDATE SKIP LOCKED` in a
materialised CTE (as the job claim, queue/claim_postgres.py), so processes on several
machines never take the same row; a process that dies mid-attempt leaves its rows due
again when the lease runs out. The moment a claim sets is its token: `record` and
`put_back` change the row only if it still holds it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update

from ..job import Job
from .engine import TableStore, insert_unless_present
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
    host: str
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


def output_id(job: Job, position: int) -> str:
    """The `webhook-id` of the `output` delivery of the file that landed `position`-th
    (from 0) in `job`'s current run: the trigger's formula."""
    return f"msg_{job.id}_{job.lease_epoch}_{position}"


class DeliveryStore(TableStore):
    def add_output(self, job: Job, file: Mapping[str, Any], position: int, now: datetime) -> None:
        """Write the `output` delivery of a file stored while its job runs (nothing if
        it was written before)."""
        assert job.webhook is not None
        values = {
            "id": output_id(job, position),
            "job_id": job.id,
            "owner": job.owner,
            "key_id": job.webhook.key_id,
            "event": "output",
            "url": job.webhook.url,
            "host": job.webhook.host,
            "detail": dict(file),
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        statement = insert_unless_present(_table, self._postgres).values(values)
        with self._writing() as connection:
            connection.execute(statement)

    def claim_due(
        self, now: datetime, limit: int, lease: timedelta, busy: Collection[str] = ()
    ) -> list[Delivery]:
        """Take up to `limit` due deliveries for an attempt each, oldest due first,
        passing over those to the `busy` hosts (they wait for a free slot)."""
        due = self._due(now, busy).order_by(_c.next_attempt_at, _c.pk).limit(limit)
        # Mostly nothing is due: one read, no write transaction (on PostgreSQL a claim
        # that finds nothing still costs a transaction, which the job claims feel).
        with self._engine.connect() as connection:
            if connection.execute(due).first() is None:
                return []
        if self._postgres:
            due = due.with_for_update(skip_locked=True)
        chosen = due.cte("due").prefix_with("MATERIALIZED", dialect="postgresql")
        claim = (
            update(_table)
            .where(_c.pk == chosen.c.pk)
            .values(next_attempt_at=now + lease)
            .returning(*_table.c)
        )
        with self._writing() as connection:
            rows = connection.execute(claim).all()
        return sorted((Delivery.from_row(row) for row in rows), key=lambda d: d.pk)

    def _due(self, now: datetime, busy: Collection[str]) -> Any:
        query = select(_c.pk).where(_c.status == PENDING, _c.next_attempt_at <= now)
        return query.where(_c.host.not_in(list(busy))) if busy else query

    def put_back(self, deliveries: Collection[Delivery], due: datetime) -> None:
        """Return claimed deliveries unattempted, due at `due`."""
        with self._writing() as connection:
            for delivery in deliveries:
                connection.execute(_still_claimed(delivery).values(next_attempt_at=due))

    def next_due(self, busy: Collection[str] = ()) -> datetime | None:
        """When the earliest pending delivery not to a `busy` host is due (None: none)."""
        query = select(func.min(_c.next_attempt_at)).where(_c.status == PENDING)
        if busy:
            query = query.where(_c.host.not_in(list(busy)))
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
        (`retry_at` None). Only a row that still holds this claim is changed, so an
        attempt whose lease ran out cannot overwrite a later one's outcome."""
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
        statement = _still_claimed(delivery).values(values).returning(*_table.c)
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


def _still_claimed(delivery: Delivery) -> Any:
    """An UPDATE of the delivery's row as long as it holds the claim `delivery` was read
    under (its `next_attempt_at`, which every claim and redrive moves)."""
    return update(_table).where(
        _c.pk == delivery.pk,
        _c.status == PENDING,
        _c.attempts == delivery.attempts,
        _c.next_attempt_at == delivery.next_attempt_at,
    )
