"""The job repository's reads: lookups, pages and the figures reports and sweeps need.

`JobStore` (store/jobs.py) adds the writes; every method here opens its own short connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, bindparam, func, select

from ..job import Job, JobStatus
from .tables import QUEUED_PREDICATE, JobRow

_table = JobRow.__table__
_columns = _table.c
# Built once: a lookup runs on every GET of a job and many times per job in the service.
_BY_ID = select(_table).where(_columns.id == bindparam("job_id"))
_BY_KEY = select(_table).where(
    _columns.owner == bindparam("owner"), _columns.idempotency_key == bindparam("key")
)


def kept_results() -> tuple[Any, ...]:
    """Succeeded jobs whose result has not been deleted by the retention sweep."""
    return (_columns.status == JobStatus.SUCCEEDED.value, _columns.expired_at.is_(None))


@dataclass(frozen=True)
class Timing:
    """When one finished job was created, started and finished."""

    created_at: datetime
    started_at: datetime | None
    finished_at: datetime


class JobQueries:
    """Reads of the `jobs` table; `JobStore` provides the engine."""

    _engine: Engine

    def get(self, job_id: str) -> Job | None:
        return self._lookup(_BY_ID, {"job_id": job_id})

    def find_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        return self._lookup(_BY_KEY, {"owner": owner, "key": key})

    def _lookup(self, query: Select[Any], params: dict[str, Any]) -> Job | None:
        """The one job `query` finds (a unique key), or None."""
        with self._engine.connect() as connection:
            row = connection.execute(query, params).first()
        return Job.from_row(row) if row else None

    def count_queued(self, owner: str | None = None, connection: Connection | None = None) -> int:
        """Queued jobs of `owner` (None: everyone's), in `connection` if given."""
        # The literal predicate lets the planner use the partial indexes of queued rows:
        # an owner's count then reads that owner's queued entries only.
        query = select(func.count()).where(QUEUED_PREDICATE)
        if owner is not None:
            query = query.where(_columns.owner == owner)
        if connection is not None:
            return connection.execute(query).scalar_one()
        with self._engine.connect() as connection:
            return connection.execute(query).scalar_one()

    def queued_tail(self, owner: str, priority: int) -> float | None:
        """The largest key among `owner`'s queued jobs of `priority` (None: none queued)."""
        query = select(func.max(_columns.sort_key)).where(
            QUEUED_PREDICATE, _columns.owner == owner, _columns.priority == priority
        )
        with self._engine.connect() as connection:
            return connection.execute(query).scalar_one()

    def page(
        self,
        *,
        owner: str | None = None,
        statuses: Sequence[JobStatus] = (),
        before_pk: int | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Newest first; `before_pk` continues a previous page."""
        query = select(_table).order_by(_columns.pk.desc()).limit(limit)
        if owner is not None:
            query = query.where(_columns.owner == owner)
        if statuses:
            query = query.where(_columns.status.in_([s.value for s in statuses]))
        if before_pk is not None:
            query = query.where(_columns.pk < before_pk)
        with self._engine.connect() as connection:
            return [Job.from_row(row) for row in connection.execute(query)]

    def queued(self) -> list[Job]:
        """Every queued job, in the order the queue should run them."""
        query = (
            select(_table)
            .where(_columns.status == JobStatus.QUEUED.value)
            .order_by(_columns.priority, _columns.pk)
        )
        with self._engine.connect() as connection:
            return [Job.from_row(row) for row in connection.execute(query)]

    def expirable(self, finished_before: datetime, limit: int = 100) -> list[Job]:
        """Succeeded jobs that finished before the cutoff and whose result is still kept."""
        query = (
            select(_table)
            .where(*kept_results(), _columns.finished_at < finished_before)
            .order_by(_columns.finished_at)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [Job.from_row(row) for row in connection.execute(query)]

    def stored_results(self) -> tuple[int, int]:
        """(jobs, bytes) of the results currently kept."""
        query = select(func.count(), func.coalesce(func.sum(_columns.result_bytes), 0)).where(
            *kept_results()
        )
        with self._engine.connect() as connection:
            jobs, size = connection.execute(query).one()
        return int(jobs), int(size)

    def count_by_status(self) -> dict[JobStatus, int]:
        query = select(_columns.status, func.count()).group_by(_columns.status)
        with self._engine.connect() as connection:
            counts = {JobStatus(status): n for status, n in connection.execute(query)}
        return {status: counts.get(status, 0) for status in JobStatus}

    def recent_timings(self, limit: int = 1000) -> list[Timing]:
        """Timings of the most recently created finished jobs."""
        query = (
            select(_columns.created_at, _columns.started_at, _columns.finished_at)
            .where(_columns.finished_at.is_not(None))
            .order_by(_columns.pk.desc())
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [Timing(*row) for row in connection.execute(query)]
