"""The job repository: every state change of a job is one SQL statement here.

Writes use SQLAlchemy Core with a `WHERE` that states the transition they expect
(`status = 'queued'` to claim, `lease_epoch = :epoch` to finish), so two actors racing
for the same row can never both win: the loser sees `None`/`False` and backs off.
Each method opens its own short transaction; nothing holds a session between calls.
The reads (lookups, pages, report figures) are `JobQueries`, in job_queries.py.

The write statements are built once and executed with bound values: building a Core
statement and walking it for its cache key cost more than running it (about 0.4 ms
against 0.1 ms on SQLite), and these run several times per job.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta
from enum import Enum
from functools import cache
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Update,
    bindparam,
    case,
    insert,
    or_,
    text,
    tuple_,
    update,
)

from . import hot
from .db import ping
from .job_queries import JobQueries, kept_results
from .models import Job, JobRow, JobStatus

_table = JobRow.__table__
_columns = _table.c
# Every column a new row is written with: the model's defaults are spelled out, so the
# statement binds exactly these and can be prepared once (hot.py).
_NEW_ROW_DEFAULTS = {
    "progress_percent": 0.0,
    "attempts": 0,
    "lease_epoch": 0,
    "cancel_requested": False,
}
_NEW_ROW_COLUMNS = (
    "id",
    "owner",
    "generator",
    "params",
    "priority",
    "status",
    "created_at",
    "idempotency_key",
    "request_hash",
    *_NEW_ROW_DEFAULTS,
)
_INSERT = (
    insert(_table)
    .values({name: bindparam(name, type_=_columns[name].type) for name in _NEW_ROW_COLUMNS})
    .returning(_columns.pk)
)
# A row as the SQLite path returns it: attribute access by column, for `Job.from_row`.
_RowTuple = namedtuple("_RowTuple", [column.key for column in _table.c])  # noqa: PYI024


class _Guard(Enum):
    """What a transition expects of the row; if the row is not so, nothing changes."""

    QUEUED = "queued"
    RUNNING = "running"
    HELD = "held by the run with lease_epoch = :epoch"
    KEPT_RESULT = "succeeded, result not yet expired"


def _guard_conditions(guard: _Guard) -> tuple[Any, ...]:
    if guard is _Guard.QUEUED:
        return (_columns.status == JobStatus.QUEUED.value,)
    if guard is _Guard.RUNNING:
        return (_columns.status == JobStatus.RUNNING.value,)
    if guard is _Guard.HELD:
        return (
            _columns.status == JobStatus.RUNNING.value,
            _columns.lease_epoch == bindparam("epoch"),
        )
    return kept_results()


def _update(guard: _Guard, **values: Any) -> Update:
    """`UPDATE jobs SET <values> WHERE id = :job_id AND <guard> RETURNING *`."""
    where = (_columns.id == bindparam("job_id"), *_guard_conditions(guard))
    return update(_table).where(*where).values(**values).returning(*_table.c)


@cache
def _setter(guard: _Guard, columns: tuple[str, ...]) -> Update:
    """The transition that sets `columns` to bound values named `new_<column>`."""
    binds = {name: bindparam(f"new_{name}", type_=_columns[name].type) for name in columns}
    return _update(guard, **binds)


def claim_values() -> dict[str, Any]:
    """What every claim sets: a new attempt under a new epoch, with a fresh lease. Bound
    values: `new_worker`, `new_started_at`, `new_lease_expires_at`."""
    return {
        "status": JobStatus.RUNNING.value,
        "attempts": _columns.attempts + 1,
        "lease_epoch": _columns.lease_epoch + 1,
        "lease_expires_at": bindparam("new_lease_expires_at", type_=_columns.started_at.type),
        "worker": bindparam("new_worker", type_=_columns.worker.type),
        "started_at": bindparam("new_started_at", type_=_columns.started_at.type),
        "progress_percent": 0.0,
        "progress_stage": None,
        "progress_message": None,
    }


_CLAIM = _update(_Guard.QUEUED, **claim_values())
_SKIP_FLUSH = text("SET LOCAL synchronous_commit = off")
DEFAULT_LEASE_SECONDS = 30.0


class JobStore(JobQueries):
    def __init__(self, engine: Engine, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self._engine = engine
        self.lease = timedelta(seconds=lease_seconds)
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )
        self._pinned = threading.local()  # .connection: see pinned()
        self._hot = hot.Statements(engine) if engine.dialect.name == "sqlite" else None

    def ping(self) -> None:
        """Raise if the database cannot answer."""
        ping(self._engine)

    def insert(self, job: Job, connection: Connection | None = None) -> Job:
        """Write a new queued job and return it with its `pk`; in `connection`'s
        transaction if given (the PostgreSQL queue counts and inserts in one)."""
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
        } | _NEW_ROW_DEFAULTS
        if connection is not None:
            pk = connection.execute(_INSERT, values).scalar_one()
        elif self._hot is not None:
            (pk,) = self._write_on_driver(_INSERT, (_columns.pk,), values)
        else:
            with self._writing() as connection:
                pk = connection.execute(_INSERT, values).scalar_one()
        return Job.from_row(_Row(values | {"pk": pk}))

    @property
    def engine(self) -> Engine:
        return self._engine

    def claim(self, job_id: str, worker: str, now: datetime) -> Job | None:
        """Move a queued job to running for `worker`; None if it is no longer queued."""
        return self._write_row(_CLAIM, {"job_id": job_id} | self.claim_params(worker, now))

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
        statement = (
            update(_table)
            .where(
                _columns.status == JobStatus.RUNNING.value,
                tuple_(_columns.id, _columns.lease_epoch).in_(owned),
            )
            .values(lease_expires_at=now + self.lease)
            .returning(*_table.c)
        )
        with self._writing() as connection:
            skip_flush(connection)
            return [Job.from_row(row) for row in connection.execute(statement)]

    def record_progress(self, job: Job, progress: dict[str, Any]) -> Job | None:
        """Store progress of the run that holds `job.lease_epoch`; None if it lost it.
        Not flushed to disk before the answer: a database crash may lose the latest."""
        statement = _setter(_Guard.HELD, tuple(sorted(progress)))
        params = {f"new_{name}": value for name, value in progress.items()}
        params |= {"job_id": job.id, "epoch": job.lease_epoch}
        return self._write_row(statement, params, durable=False)

    def finish(self, job: Job, status: JobStatus, now: datetime, **outcome: Any) -> Job | None:
        """Record the outcome of the run that holds `job.lease_epoch`; None if it lost it."""
        return self._fenced(
            job,
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
            job_id, _Guard.QUEUED, status=JobStatus.CANCELLED.value, finished_at=now
        )

    def request_cancel(self, job_id: str) -> Job | None:
        """Flag a running job so its worker stops at the next checkpoint."""
        return self._transition(job_id, _Guard.RUNNING, cancel_requested=True)

    def reclaim(self, max_attempts: int, now: datetime, *, expired_only: bool = True) -> list[Job]:
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
        with self._writing() as connection:
            return [Job.from_row(row) for row in connection.execute(statement)]

    def mark_expired(self, job_id: str, now: datetime) -> Job | None:
        """Record that a job's result was deleted; None if it was already marked."""
        return self._transition(job_id, _Guard.KEPT_RESULT, expired_at=now)

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Let the calling thread's writes share one connection while inside (a worker
        thread's life): on SQLite, checking a connection out of the pool and back cost
        as much as the claim's UPDATE itself (11 % of a drained job's CPU). SQLite only:
        a file does not drop connections; on PostgreSQL the pool's checkout is where a
        connection the server dropped is replaced (db.py)."""
        if self._engine.dialect.name != "sqlite":
            yield
            return
        with self._engine.connect() as connection:
            self._pinned.connection = connection
            try:
                yield
            finally:
                self._pinned.connection = None

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

    def _fenced(self, job: Job, **values: Any) -> Job | None:
        return self._transition(job.id, _Guard.HELD, epoch=job.lease_epoch, **values)

    def _transition(
        self, job_id: str, guard: _Guard, *, epoch: int | None = None, **values: Any
    ) -> Job | None:
        """Set `values` on the job if `guard` holds (_Guard.HELD compares `epoch`);
        the new row, or None if the job had moved on."""
        statement = _setter(guard, tuple(sorted(values)))
        params = {f"new_{name}": value for name, value in values.items()}
        return self._write_row(statement, params | {"job_id": job_id, "epoch": epoch})

    def _write_row(
        self, statement: Update, params: Mapping[str, Any], *, durable: bool = True
    ) -> Job | None:
        if self._hot is not None:
            row = self._write_on_driver(statement, _table.c, params)
            return Job.from_row(_RowTuple(*row)) if row else None
        with self._writing() as connection:
            if not durable:
                skip_flush(connection)
            row = connection.execute(statement, params).first()
        return Job.from_row(row) if row else None

    def _lookup(self, query: Select[Any], params: dict[str, Any]) -> Job | None:
        if self._hot is None:
            return super()._lookup(query, params)
        with self._driver_connection() as connection:
            row = hot.read(connection, self._hot.get(query, _table.c), params)
        return Job.from_row(_RowTuple(*row)) if row else None

    def _write_on_driver(
        self, statement: Any, returns: Iterable[Any], params: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """SQLite: run a hot statement on the driver's connection (hot.py), in its own
        transaction, after the writers ahead of it (`_writing`)."""
        assert self._hot is not None
        prepared = self._hot.get(statement, tuple(returns))
        with self._write_lock, self._driver_connection() as connection:
            return hot.write(connection, prepared, params)

    @contextmanager
    def _driver_connection(self) -> Iterator[Any]:
        """The sqlite3 connection of the thread's pinned connection, or of one checked
        out of the pool for the call."""
        pinned: Connection | None = getattr(self._pinned, "connection", None)
        if pinned is not None:
            yield pinned.connection.dbapi_connection
            return
        pooled = self._engine.raw_connection()
        try:
            yield pooled.dbapi_connection
        finally:
            pooled.close()


def skip_flush(connection: Connection) -> None:
    """Let this transaction commit without waiting for its WAL to reach the disk.

    For writes whose loss in a database crash (not a process crash) is harmless: lease
    renewals, progress, notifications. On PostgreSQL that saves a disk flush per commit;
    a crash can lose the last few, never corrupt anything. Never for the INSERT (the 202's
    promise), a claim (a lost claim lets an epoch be handed out twice: queue_postgres.py)
    or an outcome. SQLite's WAL with synchronous=NORMAL already behaves so for every
    commit (only an OS crash loses commits there, and it takes the workers with it)."""
    if connection.dialect.name == "postgresql":
        connection.execute(_SKIP_FLUSH)


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
