"""The job repository: every state change of a job is one SQL statement, run here.

The statements (store/job_writes.py) state in their `WHERE` the transition they expect
(`status = 'queued'` to claim, `lease_epoch = :epoch` to finish), so two actors racing
for the same row can never both win: the loser sees `None`/`False` and backs off.
Each method opens its own short transaction; nothing holds a session between calls.
The reads (lookups, pages, report figures) are `JobQueries`, in store/job_reads.py. The hot
ones (claims, outcomes, progress, lookups; SQLite's INSERT too) run on the driver's
connection (driver_statements.py). A new job's INSERT fixes its scheduling key
(scheduling/policy.py): on SQLite in the statement itself, on PostgreSQL from the tails read first
(admission_postgres.insert_group, which the PostgreSQL queue runs for a whole group).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, Update

from ..job import Job, JobStatus, Progress
from ..scheduling.policy import DEFAULT_AGING_SECONDS, offset
from . import driver_statements as hot
from . import job_writes as statements
from .engine import ping, pooled_driver_connection
from .job_reads import JobQueries
from .job_writes import (
    PROGRESS_COLUMNS,
    Guard,
    Row,
    RowTuple,
    progress_values,
    setter,
    skip_flush,
)
from .tables import JobRow

_table = JobRow.__table__
DEFAULT_LEASE_SECONDS = 30.0


class JobStore(JobQueries):
    def __init__(
        self,
        engine: Engine,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        database_clock: bool | None = None,
    ) -> None:
        """`database_clock`: key new jobs by the database server's clock (the default on
        PostgreSQL, where machines' clocks may disagree) rather than by their
        `created_at` (SQLite's default: one machine, one clock)."""
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._database_clock = self._postgres if database_clock is None else database_clock
        self.lease = timedelta(seconds=lease_seconds)
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )
        self._pinned = threading.local()  # .connection: see pinned()
        self._hot: hot.Statements | None = hot.Statements(engine)

    def ping(self) -> None:
        """Raise if the database cannot answer."""
        ping(self._engine)

    def insert(
        self,
        job: Job,
        connection: Connection | None = None,
        *,
        aging_seconds: float = DEFAULT_AGING_SECONDS,
        share: float = 0.0,
    ) -> Job | None:
        """Write a new queued job, keyed by the scheduling policy (scheduling/policy.py; `share`:
        its predicted seconds on one worker), and return it with its `pk` and `sort_key`;
        None if the owner's idempotency key is taken. In `connection`'s transaction if
        given. (The PostgreSQL queue writes groups of jobs: admission_postgres.insert_group.)"""
        if self._postgres:
            return self._insert_on_postgres(job, connection, aging_seconds, share)
        values = statements.new_row(job)
        binds = values | {
            "share": max(0.0, share),
            "key_offset": offset(job.priority, aging_seconds),
            "now_epoch": job.created_at.timestamp(),
        }
        returns = (_table.c.pk, _table.c.sort_key)
        if connection is None and self._hot is not None:
            row = self._write_on_driver(statements.INSERT_SQLITE, returns, binds)
        else:
            with nullcontext(connection) if connection else self._writing() as transaction:
                row = transaction.execute(statements.INSERT_SQLITE, binds).first()
        if row is None:
            return None
        pk, sort_key = row
        return Job.from_row(Row(values | {"pk": pk, "sort_key": sort_key}))

    @property
    def database_clock(self) -> bool:
        """Whether new jobs are keyed by the database server's clock (not `created_at`)."""
        return self._database_clock

    @property
    def engine(self) -> Engine:
        return self._engine

    def claim(self, job_id: str, worker: str, now: datetime) -> Job | None:
        """Move a queued job to running for `worker`; None if it is no longer queued."""
        return self.write_row(statements.CLAIM, {"job_id": job_id} | self.claim_params(worker, now))

    def claim_params(self, worker: str, now: datetime) -> dict[str, Any]:
        """The bound values of `claim_values()`."""
        return {
            "new_worker": worker,
            "new_started_at": now,
            "new_lease_expires_at": now + self.lease,
        }

    def renew_leases(self, jobs: Iterable[Job], now: datetime) -> list[Job]:
        """Extend the leases of runs this process still owns; the runs left out lost theirs."""
        owned = [(job.id, job.lease_epoch) for job in jobs]
        if not owned:
            return []
        statement = statements.renewal(owned, now + self.lease)
        with self._writing() as connection:
            skip_flush(connection)
            return [Job.from_row(row) for row in connection.execute(statement)]

    def record_progress(self, job: Job, progress: Progress) -> Job | None:
        """Store progress of the run that holds `job.lease_epoch`; None if it lost it.
        Not flushed to disk before the answer: a database crash may lose the latest."""
        params = progress_values(progress) | {"job_id": job.id, "epoch": job.lease_epoch}
        return self.write_row(setter(Guard.HELD, PROGRESS_COLUMNS), params, durable=False)

    def finish(
        self,
        job: Job,
        status: JobStatus,
        now: datetime,
        *,
        then: Callable[[Any], None] | None = None,
        **outcome: Any,
    ) -> Job | None:
        """Record the outcome of the run that holds `job.lease_epoch`; None if it lost it.
        `then` runs on the DB-API connection in the same transaction, only if the run
        still held the job (a result stored with its outcome: results/database.py)."""
        return self._fenced(
            job,
            then=then,
            status=status.value,
            finished_at=now,
            worker=None,
            lease_expires_at=None,
            **outcome,
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
            job_id, Guard.QUEUED, status=JobStatus.CANCELLED.value, finished_at=now
        )

    def retry_failed(self, job_id: str, sort_key: float) -> Job | None:
        """Queue a failed job again under `sort_key`, as a new attempt of the same job
        with a fresh budget of attempts; None if it is not failed."""
        return self._transition(job_id, Guard.FAILED, sort_key=sort_key, **statements.RETRY_RESETS)

    def reprioritize(self, job_id: str, priority: int, aging_seconds: float) -> Job | None:
        """Give a queued job another priority (see job_writes.REPRIORITIZE); None if it is
        not queued."""
        params = {"job_id": job_id, "new_priority": priority, "aging": aging_seconds}
        return self.write_row(statements.REPRIORITIZE, params)

    def request_cancel(self, job_id: str) -> Job | None:
        """Flag a running job so its worker stops at the next checkpoint."""
        return self._transition(job_id, Guard.RUNNING, cancel_requested=True)

    def reclaim(self, max_attempts: int, now: datetime, *, expired_only: bool = True) -> list[Job]:
        """Take back running jobs whose owner is gone: requeue them, or fail those out of
        attempts, or cancel those whose cancellation was asked. Returns the changed jobs.

        `expired_only=False` takes every running job, which is safe only when no other live
        process can be running jobs on this database (SQLite at start).
        """
        statement = statements.reclaim(max_attempts, now, expired_only=expired_only)
        with self._writing() as connection:
            return [Job.from_row(row) for row in connection.execute(statement)]

    def mark_expired(self, job_id: str, now: datetime) -> Job | None:
        """Record that a job's result was deleted; None if it was already marked."""
        return self._transition(job_id, Guard.KEPT_RESULT, expired_at=now)

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Let the calling thread's writes share one connection while inside (a worker
        thread's life): on SQLite, checking a connection out of the pool and back cost
        as much as the claim's UPDATE itself (11 % of a drained job's CPU). SQLite only:
        a file does not drop connections; on PostgreSQL the pool's checkout is where a
        connection the server dropped is replaced (store/engine.py)."""
        if self._engine.dialect.name != "sqlite":
            yield
            return
        with self._engine.connect() as connection:
            self._pinned.connection = connection
            try:
                yield
            finally:
                self._pinned.connection = None

    def _insert_on_postgres(
        self, job: Job, connection: Connection | None, aging_seconds: float, share: float
    ) -> Job | None:
        # Imported here, as the service imports its PostgreSQL queue: the statements load
        # SQLAlchemy's PostgreSQL dialect, which a store on SQLite never needs.
        from .admission_postgres import DATABASE_CLOCK, insert_group

        with nullcontext(connection) if connection else self._writing() as transaction:
            now = transaction.execute(DATABASE_CLOCK).scalar_one() if self._database_clock else None
            [written] = insert_group(transaction, [(job, share)], now, aging_seconds)
        return written

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction. On SQLite this process's writers first take turns on a
        lock: SQLite admits one writer at a time, and a writer it refuses sleeps in its
        busy handler (1, 2, 5, 10... ms) instead of waking when the writer ahead commits.
        WEB_CONCURRENCY=1 on SQLite makes this process the only writer."""
        pinned: Connection | None = getattr(self._pinned, "connection", None)
        with self._write_lock:
            if pinned is None:
                with self._engine.begin() as connection:
                    yield connection
            else:
                with pinned.begin():
                    yield pinned

    def _fenced(
        self, job: Job, *, then: Callable[[Any], None] | None = None, **values: Any
    ) -> Job | None:
        return self._transition(job.id, Guard.HELD, epoch=job.lease_epoch, then=then, **values)

    def _transition(
        self,
        job_id: str,
        guard: Guard,
        *,
        epoch: int | None = None,
        then: Callable[[Any], None] | None = None,
        **values: Any,
    ) -> Job | None:
        """Set `values` on the job if `guard` holds (Guard.HELD compares `epoch`);
        the new row, or None if the job had moved on."""
        statement = setter(guard, tuple(sorted(values)))
        params = {f"new_{name}": value for name, value in values.items()}
        params |= {"job_id": job_id, "epoch": epoch}
        return self.write_row(statement, params, then=then)

    def writing(self) -> AbstractContextManager[Connection]:
        """A write transaction of this process's writers (see `_writing`), for other
        tables' repositories sharing this database (store/deliveries.py)."""
        return self._writing()

    def write_row(
        self,
        statement: Update,
        params: Mapping[str, Any],
        *,
        durable: bool = True,
        then: Callable[[Any], None] | None = None,
    ) -> Job | None:
        """Run a write that returns one job row (a transition, a claim) in a transaction
        of its own, on the driver's connection (driver_statements.py); the job, or None if no
        row matched. `durable=False` commits without waiting for the disk (skip_flush);
        `then` runs on the DB-API connection before the commit if a row matched."""
        if self._hot is None:  # SQLAlchemy's own path (tests compare the two)
            with self._writing() as connection:
                if not durable:
                    skip_flush(connection)
                found = connection.execute(statement, params).first()
                if found is not None and then is not None:
                    then(connection.connection.dbapi_connection)
            return Job.from_row(found) if found else None
        prelude = None if durable or not self._postgres else statements.SKIP_FLUSH_SQL
        row = self._write_on_driver(statement, _table.c, params, prelude=prelude, then=then)
        return Job.from_row(RowTuple(*row)) if row else None

    def _lookup(self, query: Select[Any], params: dict[str, Any]) -> Job | None:
        if self._hot is None:
            return super()._lookup(query, params)
        prepared, dialect = self._hot.get(query, _table.c), self._engine.dialect
        with self._driver_connection() as connection:
            row = hot.read(connection, prepared, params, dialect=dialect)
        return Job.from_row(RowTuple(*row)) if row else None

    def _write_on_driver(
        self,
        statement: Any,
        returns: Iterable[Any],
        params: Mapping[str, Any],
        *,
        prelude: str | None = None,
        then: Callable[[Any], None] | None = None,
    ) -> tuple[Any, ...] | None:
        """Run a hot statement on the driver's connection (store/driver_statements.py), in its own
        transaction, after this process's writers ahead of it (SQLite: `_writing`)."""
        assert self._hot is not None
        prepared = self._hot.get(statement, tuple(returns))
        dialect = self._engine.dialect
        with self._write_lock, self._driver_connection() as connection:
            return hot.write(
                connection, prepared, params, dialect=dialect, prelude=prelude, then=then
            )

    @contextmanager
    def _driver_connection(self) -> Iterator[Any]:
        """The DB-API connection of the thread's pinned connection (SQLite), or of one
        checked out of the pool for the call."""
        pinned: Connection | None = getattr(self._pinned, "connection", None)
        if pinned is not None:
            yield pinned.connection.dbapi_connection
            return
        with pooled_driver_connection(self._engine) as connection:
            yield connection
