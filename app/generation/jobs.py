"""The job repository: every state change of a job is one SQL statement here.

Writes use SQLAlchemy Core with a `WHERE` that states the transition they expect
(`status = 'queued'` to claim, `lease_epoch = :epoch` to finish), so two actors racing
for the same row can never both win: the loser sees `None`/`False` and backs off.
Each method opens its own short transaction; nothing holds a session between calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, case, func, insert, or_, select, text, tuple_, update

from .db import ping
from .models import Job, JobRow, JobStatus

_table = JobRow.__table__
_columns = _table.c


@dataclass(frozen=True)
class Timing:
    """When one finished job was created, started and finished."""

    created_at: datetime
    started_at: datetime | None
    finished_at: datetime


DEFAULT_LEASE_SECONDS = 30.0


class JobStore:
    def __init__(self, engine: Engine, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self._engine = engine
        self.lease = timedelta(seconds=lease_seconds)

    @property
    def engine(self) -> Engine:
        return self._engine

    def ping(self) -> None:
        """Raise if the database cannot answer."""
        ping(self._engine)

    def insert(self, job: Job, *, connection: Connection | None = None) -> Job:
        """Write a new queued job and return it with its `pk`; in `connection`'s
        transaction if given (the PostgreSQL queue admits and announces in it)."""
        values = {
            "id": job.id,
            "owner": job.owner,
            "generator": job.generator,
            "params": job.params,
            "priority": int(job.priority),
            "status": JobStatus.QUEUED.value,
            "created_at": job.created_at,
            "idempotency_key": job.idempotency_key,
            "request_hash": job.request_hash,
        }
        statement = insert(_table).values(values).returning(_columns.pk)
        if connection is None:
            with self._engine.begin() as connection:
                pk = connection.execute(statement).scalar_one()
        else:
            pk = connection.execute(statement).scalar_one()
        return Job.from_row(_Row(values | {"pk": pk}))

    def get(self, job_id: str) -> Job | None:
        with self._engine.connect() as connection:
            row = connection.execute(select(_table).where(_columns.id == job_id)).first()
        return Job.from_row(row) if row else None

    def find_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        query = select(_table).where(_columns.owner == owner, _columns.idempotency_key == key)
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return Job.from_row(row) if row else None

    def count_queued(self, owner: str) -> int:
        query = select(func.count()).where(
            _columns.owner == owner, _columns.status == JobStatus.QUEUED.value
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

    def claim(self, job_id: str, worker: str, now: datetime) -> Job | None:
        """Move a queued job to running for `worker`; None if it is no longer queued."""
        return self._transition(
            job_id, (_columns.status == JobStatus.QUEUED.value,), **self.claim_values(worker, now)
        )

    def claim_values(self, worker: str, now: datetime) -> dict[str, Any]:
        """The columns every claim sets: a new attempt, a new epoch, a fresh lease."""
        return {
            "status": JobStatus.RUNNING.value,
            "attempts": _columns.attempts + 1,
            "lease_epoch": _columns.lease_epoch + 1,
            "lease_expires_at": now + self.lease,
            "worker": worker,
            "started_at": now,
            "progress_percent": 0.0,
            "progress_stage": None,
            "progress_message": None,
        }

    def renew_leases(self, jobs: Iterable[Job], now: datetime) -> list[Job]:
        """Extend the leases of runs this process still owns; the runs left out lost theirs."""
        owned = [(job.id, job.lease_epoch) for job in jobs]
        if not owned:
            return []
        statement = (
            update(_table)
            .where(
                _columns.status == JobStatus.RUNNING.value,
                tuple_(_columns.id, _columns.lease_epoch).in_(owned),
            )
            .values(lease_expires_at=now + self.lease)
            .returning(*_table.c)
        )
        with self._engine.begin() as connection:
            skip_flush(connection)
            return [Job.from_row(row) for row in connection.execute(statement)]

    def record_progress(self, job: Job, progress: dict[str, Any]) -> Job | None:
        """Store progress of the run that holds `job.lease_epoch`; None if it lost it."""
        return self._fenced(job, durable=False, **progress)

    def finish(self, job: Job, status: JobStatus, now: datetime, **outcome: Any) -> Job | None:
        """Record the outcome of the run that holds `job.lease_epoch`; None if it lost it."""
        return self._fenced(
            job, status=status.value, finished_at=now, lease_expires_at=None, **outcome
        )

    def requeue(self, job: Job) -> Job | None:
        """Give a running job back to the queue (a drain that ran out of time)."""
        return self._fenced(
            job,
            status=JobStatus.QUEUED.value,
            worker=None,
            started_at=None,
            lease_expires_at=None,
            cancel_requested=False,
        )

    def cancel_queued(self, job_id: str, now: datetime) -> Job | None:
        return self._transition(
            job_id,
            (_columns.status == JobStatus.QUEUED.value,),
            status=JobStatus.CANCELLED.value,
            finished_at=now,
        )

    def request_cancel(self, job_id: str) -> Job | None:
        """Flag a running job so its worker stops at the next checkpoint."""
        return self._transition(
            job_id, (_columns.status == JobStatus.RUNNING.value,), cancel_requested=True
        )

    def reclaim(
        self, max_attempts: int, now: datetime, *, expired_only: bool = True
    ) -> list[Job]:
        """Take back running jobs whose owner is gone: requeue them, or fail those out of
        attempts, or cancel those whose cancellation was asked. Returns the changed jobs.

        `expired_only=False` takes every running job, which is safe only when no other live
        process can be running jobs on this database (SQLite at start).
        """
        abandoned = _columns.status == JobStatus.RUNNING.value
        if expired_only:
            abandoned &= or_(_columns.lease_expires_at.is_(None), _columns.lease_expires_at < now)
        out_of_attempts = _columns.attempts >= max_attempts
        ends = (
            (_columns.cancel_requested, JobStatus.CANCELLED.value),
            (out_of_attempts, JobStatus.FAILED.value),
        )
        statement = (
            update(_table)
            .where(abandoned)
            .values(
                status=case(*ends, else_=JobStatus.QUEUED.value),
                finished_at=case(*((when, now) for when, _ in ends), else_=None),
                error=case(
                    (
                        ~_columns.cancel_requested & out_of_attempts,
                        f"Interrupted {max_attempts} times: the process running it stopped "
                        "(crash, restart or lost lease); giving up (JOB_MAX_ATTEMPTS).",
                    ),
                    else_=None,
                ),
                worker=None,
                started_at=case(*((when, _columns.started_at) for when, _ in ends), else_=None),
                lease_expires_at=None,
            )
            .returning(*_table.c)
        )
        with self._engine.begin() as connection:
            return [Job.from_row(row) for row in connection.execute(statement)]

    def expirable(self, finished_before: datetime, limit: int = 100) -> list[Job]:
        """Succeeded jobs that finished before the cutoff and whose result is still kept."""
        query = (
            select(_table)
            .where(*_kept_results(), _columns.finished_at < finished_before)
            .order_by(_columns.finished_at)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [Job.from_row(row) for row in connection.execute(query)]

    def mark_expired(self, job_id: str, now: datetime) -> Job | None:
        """Record that a job's result was deleted; None if it was already marked."""
        return self._transition(job_id, _kept_results(), expired_at=now)

    def stored_results(self) -> tuple[int, int]:
        """(jobs, bytes) of the results currently kept."""
        query = select(func.count(), func.coalesce(func.sum(_columns.result_bytes), 0)).where(
            *_kept_results()
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

    def _fenced(self, job: Job, *, durable: bool = True, **values: Any) -> Job | None:
        return self._transition(
            job.id,
            (
                _columns.status == JobStatus.RUNNING.value,
                _columns.lease_epoch == job.lease_epoch,
            ),
            durable=durable,
            **values,
        )

    def _transition(
        self, job_id: str, conditions: tuple[Any, ...], *, durable: bool = True, **values: Any
    ) -> Job | None:
        statement = (
            update(_table)
            .where(_columns.id == job_id, *conditions)
            .values(**values)
            .returning(*_table.c)
        )
        with self._engine.begin() as connection:
            if not durable:
                skip_flush(connection)
            row = connection.execute(statement).first()
        return Job.from_row(row) if row else None


def skip_flush(connection: Connection) -> None:
    """Let this transaction commit without waiting for its WAL to reach the disk.

    For writes whose loss in a database crash (not a process crash) is harmless: progress,
    lease renewals, notifications. On PostgreSQL that saves a disk flush per commit; a
    crash can lose the last few, never corrupt anything. SQLite's WAL mode with
    synchronous=NORMAL already behaves so for every commit."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL synchronous_commit = off"))


def _kept_results() -> tuple[Any, ...]:
    return (_columns.status == JobStatus.SUCCEEDED.value, _columns.expired_at.is_(None))


class _Row:
    """Attribute access over a dict of column values, for `Job.from_row`."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(
            {
                "progress_percent": 0.0,
                "progress_stage": None,
                "progress_message": None,
                "error": None,
                "attempts": 0,
                "lease_epoch": 0,
                "lease_expires_at": None,
                "worker": None,
                "cancel_requested": False,
                "result_bytes": None,
                "result_files": None,
                "started_at": None,
                "finished_at": None,
                "expired_at": None,
            }
            | values
        )
