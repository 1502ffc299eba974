"""Reads that show operators the whole queue (ops/console.py): what runs, what failed,
who waits, and what finished lately. Each reads through an index and is bounded by what
it returns (or, for the per-owner counts, by the queued rows), never by the table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, bindparam, desc, func, select

from ..job import Job, JobStatus, Priority
from .tables import QUEUED_PREDICATE, JobRow

_table = JobRow.__table__
_c = _table.c


@dataclass(frozen=True)
class Finished:
    """One job that finished: how, and when it was created, started and finished."""

    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime


class JobOverview:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def running(self, limit: int = 50) -> list[Job]:
        """Running jobs, longest-running first."""
        query = (
            select(_table)
            .where(_c.status == JobStatus.RUNNING.value)
            .order_by(_c.started_at)
            .limit(limit)
        )
        return self._jobs(query)

    def next_queued(self, limit: int = 20) -> list[Job]:
        """The queued jobs that start next, in the claim's order (ix_jobs_queued_sort_key)."""
        query = select(_table).where(QUEUED_PREDICATE).order_by(_c.sort_key, _c.pk).limit(limit)
        return self._jobs(query)

    def count_running(self) -> int:
        query = select(func.count()).where(_c.status == JobStatus.RUNNING.value)
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def recent_failures(self, limit: int = 10) -> list[Job]:
        """The jobs that failed last, latest first (ix_jobs_finished_at backwards)."""
        query = (
            select(_table)
            .where(_c.finished_at.is_not(None), _c.status == JobStatus.FAILED.value)
            .order_by(desc(_c.finished_at))
            .limit(limit)
        )
        return self._jobs(query)

    def oldest_queued(self) -> list[Job]:
        """The oldest queued job of each priority (one index probe each)."""
        first = (
            select(_table)
            .where(QUEUED_PREDICATE, _c.priority == bindparam("priority"))
            .order_by(_c.pk)
            .limit(1)
        )
        with self._engine.connect() as connection:
            rows = [connection.execute(first, {"priority": int(p)}).first() for p in Priority]
        return [Job.from_row(row) for row in rows if row is not None]

    def queued_per_owner(self, limit: int = 10) -> list[tuple[str, int]]:
        """The owners with the most queued jobs, most first."""
        count = func.count().label("queued")
        query = (
            select(_c.owner, count)
            .where(QUEUED_PREDICATE)
            .group_by(_c.owner)
            .order_by(desc(count), _c.owner)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [(owner, int(n)) for owner, n in connection.execute(query)]

    def finished_between(self, start: datetime, end: datetime) -> list[Finished]:
        """Jobs that finished in [start, end) (through ix_jobs_finished_at)."""
        query = select(_c.status, _c.created_at, _c.started_at, _c.finished_at).where(
            _c.finished_at >= start, _c.finished_at < end
        )
        with self._engine.connect() as connection:
            return [
                Finished(JobStatus(status), created, started, finished)
                for status, created, started, finished in connection.execute(query)
            ]

    def _jobs(self, query: object) -> list[Job]:
        with self._engine.connect() as connection:
            return [Job.from_row(row) for row in connection.execute(query)]  # type: ignore[call-overload]
