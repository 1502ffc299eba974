"""Reads that show operators the whole queue (ops/console.py): what runs, what failed,
who waits, and what finished lately. Each reads through an index that the job's own
writes already keep, and is bounded by what it returns (or, for the per-owner counts and
the running jobs, by the queued or running rows), never by the table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, bindparam, desc, func, select

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


ENDS = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def _finished(status: JobStatus) -> tuple[Any, ...]:
    """Jobs that ended in `status`, as ix_jobs_status_expired_at_finished_at holds them
    (status, expired_at IS NULL, then by finished_at): no index of its own, so a job's
    writes pay for nothing the console reads."""
    return (_c.status == status.value, _c.expired_at.is_(None))


def _finished_in(status: JobStatus) -> Select[Any]:
    columns = (_c.status, _c.created_at, _c.started_at, _c.finished_at)
    return select(*columns).where(
        *_finished(status),
        _c.finished_at >= bindparam("start", type_=_c.finished_at.type),
        _c.finished_at < bindparam("end", type_=_c.finished_at.type),
    )


def failed_lately(limit: int) -> Select[Any]:
    """The `limit` jobs that failed last, latest first: the retention index backwards."""
    query = select(_table).where(*_finished(JobStatus.FAILED))
    # `expired_at` (NULL in every row here) leads the order too: the planner treats only
    # `=`, not IS NULL, as fixing an index column, and would sort the failures otherwise.
    return query.order_by(desc(_c.expired_at), desc(_c.finished_at)).limit(limit)


# Jobs of each outcome that finished in [:start, :end) (the history's samples).
FINISHED_IN = {status: _finished_in(status) for status in ENDS}


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

    def any_unfinished(self) -> bool:
        """Whether any job is queued or running (one index probe)."""
        unfinished = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
        query = select(_c.pk).where(_c.status.in_(unfinished)).limit(1)
        with self._engine.connect() as connection:
            return connection.execute(query).first() is not None

    def count_running(self) -> int:
        query = select(func.count()).where(_c.status == JobStatus.RUNNING.value)
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def recent_failures(self, limit: int = 10) -> list[Job]:
        """The jobs that failed last, latest first."""
        return self._jobs(failed_lately(limit))

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
        """Jobs that finished in [start, end): one range of the retention index per
        outcome (FINISHED_IN). A result the sweep deleted is not among them: the sweep
        deletes results an hour old at the least, and this reads the last seconds."""
        found = []
        with self._engine.connect() as connection:
            for query in FINISHED_IN.values():
                rows = connection.execute(query, {"start": start, "end": end})
                found += [Finished(JobStatus(row[0]), *row[1:]) for row in rows]
        return found

    def _jobs(self, query: object) -> list[Job]:
        with self._engine.connect() as connection:
            return [Job.from_row(row) for row in connection.execute(query)]  # type: ignore[call-overload]
