"""The job table's write statements, each built once (the store runs them: store/jobs.py).

A transition is one `UPDATE ... WHERE id = :job_id AND <guard> RETURNING *` whose guard
states what it expects of the row (`status = 'queued'` to claim, `lease_epoch = :epoch`
to finish), so two actors racing for the same row can never both win. Building a Core
statement and walking it for its cache key cost more than running it (about 0.4 ms
against 0.1 ms on SQLite), and these run several times per job, so they are built once
and executed with bound values.
"""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Double,
    Update,
    bindparam,
    case,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import sqlite

from ..job import Job, JobStatus, Progress
from .job_reads import kept_results
from .tables import QUEUED_PREDICATE, JobRow

_table = JobRow.__table__
_columns = _table.c
# Every column a new row is written with: the model's defaults are spelled out, so the
# statement binds exactly these and can be prepared once (store/driver_statements.py).
NEW_ROW_DEFAULTS = {
    "progress_percent": 0.0,
    "attempts": 0,
    "lease_epoch": 0,
    "cancel_requested": False,
}
NEW_ROW_COLUMNS = (
    "id",
    "owner",
    "generator",
    "params",
    "priority",
    "status",
    "created_at",
    "idempotency_key",
    "request_hash",
    "webhook_url",
    "webhook_host",
    "webhook_events",
    "webhook_key_id",
    *NEW_ROW_DEFAULTS,
)


def new_row(job: Job) -> dict[str, Any]:
    """The columns a new queued row of `job` is written with (NEW_ROW_COLUMNS)."""
    return {
        "id": job.id,
        "owner": job.owner,
        "generator": job.generator,
        "params": job.params,
        "priority": int(job.priority),
        "status": JobStatus.QUEUED.value,
        "created_at": job.created_at,
        "idempotency_key": job.idempotency_key,
        "request_hash": job.request_hash,
        "webhook_url": job.webhook.url if job.webhook else None,
        "webhook_host": job.webhook.host if job.webhook else None,
        "webhook_events": job.webhook.events_column if job.webhook else None,
        "webhook_key_id": job.webhook.key_id if job.webhook else None,
    } | NEW_ROW_DEFAULTS


# Bound with the columns above: `share` (the job's predicted seconds on one worker),
# `key_offset` (its priority's offset) and `now_epoch` (the moment it is admitted).
KEY_BINDS = ("share", "key_offset", "now_epoch")


def admission_key_sql(now: ColumnElement[float]) -> ColumnElement[float]:
    """scheduling.admission_key in SQL, for SQLite's one-row INSERT: the owner's queued
    tail of the same priority is read in the INSERT itself, through the partial index
    (owner, priority, sort_key), so the key costs one index probe and follows every job
    admitted before it. (PostgreSQL keys a group of jobs at once: store/admission_postgres.py.)"""
    tail = (
        select(func.max(_columns.sort_key))
        .where(
            QUEUED_PREDICATE,
            _columns.owner == bindparam("owner"),
            _columns.priority == bindparam("priority"),
        )
        .scalar_subquery()
    )
    fresh = now + bindparam("key_offset", type_=Double())
    after_tail = tail + bindparam("share", type_=Double())
    return case((after_tail > fresh, after_tail), else_=fresh)


def _sqlite_insert() -> Any:
    """`INSERT ... RETURNING pk, sort_key`; a row whose (owner, idempotency key) is taken
    is not written and returns nothing. SQLite: one process on one machine, so its clock
    (`now_epoch`, the job's created_at) is the database's."""
    values = {name: bindparam(name, type_=_columns[name].type) for name in NEW_ROW_COLUMNS}
    values["sort_key"] = admission_key_sql(bindparam("now_epoch", type_=Double()))
    return (
        sqlite.insert(_table)
        .values(values)
        .on_conflict_do_nothing(index_elements=["owner", "idempotency_key"])
        .returning(_columns.pk, _columns.sort_key)
    )


INSERT_SQLITE = _sqlite_insert()
# A row as the SQLite path returns it: attribute access by column, for `Job.from_row`.
RowTuple = namedtuple("RowTuple", [column.key for column in _table.c])  # noqa: PYI024


class Guard(Enum):
    """What a transition expects of the row; if the row is not so, nothing changes."""

    QUEUED = "queued"
    RUNNING = "running"
    HELD = "held by the run with lease_epoch = :epoch"
    KEPT_RESULT = "succeeded, result not yet expired"
    FAILED = "failed"


def _guard_conditions(guard: Guard) -> tuple[Any, ...]:
    if guard is Guard.QUEUED:
        return (_columns.status == JobStatus.QUEUED.value,)
    if guard is Guard.RUNNING:
        return (_columns.status == JobStatus.RUNNING.value,)
    if guard is Guard.FAILED:
        return (_columns.status == JobStatus.FAILED.value,)
    if guard is Guard.HELD:
        return (
            _columns.status == JobStatus.RUNNING.value,
            _columns.lease_epoch == bindparam("epoch"),
        )
    return kept_results()


def _update(guard: Guard, **values: Any) -> Update:
    """`UPDATE jobs SET <values> WHERE id = :job_id AND <guard> RETURNING *`."""
    where = (_columns.id == bindparam("job_id"), *_guard_conditions(guard))
    return update(_table).where(*where).values(**values).returning(*_table.c)


PROGRESS_COLUMNS = ("progress_message", "progress_percent", "progress_stage")


def progress_values(progress: Progress) -> dict[str, Any]:
    """A progress report as the bound values of `setter(..., PROGRESS_COLUMNS)`."""
    return {
        "new_progress_percent": progress.percent,
        "new_progress_stage": progress.stage,
        "new_progress_message": progress.message,
    }


@cache
def setter(guard: Guard, columns: tuple[str, ...]) -> Update:
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


CLAIM = _update(Guard.QUEUED, **claim_values())

# A queued job's new priority (`new_priority`): its key keeps its start and takes the new
# level's offset (key = start + (priority - HIGH) x aging; `aging` bound), so it keeps
# the wait it has done and ranks as if it had been admitted at that level.
_new_priority = bindparam("new_priority", type_=_columns.priority.type)
REPRIORITIZE = _update(
    Guard.QUEUED,
    priority=_new_priority,
    sort_key=_columns.sort_key
    + (_new_priority - _columns.priority) * bindparam("aging", type_=Double()),
)
# What a retry clears: the failed attempt's run and outcome (its events stay).
RETRY_RESETS = {
    "status": JobStatus.QUEUED.value,
    "error": None,
    "attempts": 0,
    "worker": None,
    "started_at": None,
    "finished_at": None,
    "lease_expires_at": None,
    "cancel_requested": False,
    "progress_percent": 0.0,
    "progress_stage": None,
    "progress_message": None,
    "result_bytes": None,
    "result_files": None,
}
SKIP_FLUSH_SQL = "SET LOCAL synchronous_commit = off"
_SKIP_FLUSH = text(SKIP_FLUSH_SQL)


def renewal(owned: list[tuple[str, int]], until: datetime) -> Update:
    """Push the leases of the `(job id, epoch)` runs to `until`; returns the rows kept."""
    return (
        update(_table)
        .where(
            _columns.status == JobStatus.RUNNING.value,
            tuple_(_columns.id, _columns.lease_epoch).in_(owned),
        )
        .values(lease_expires_at=until)
        .returning(*_table.c)
    )


def reclaim(max_attempts: int, now: datetime, *, expired_only: bool) -> Update:
    """Take back abandoned runs: requeue, fail (out of attempts) or cancel (asked)."""
    abandoned = _columns.status == JobStatus.RUNNING.value
    if expired_only:
        abandoned &= or_(_columns.lease_expires_at.is_(None), _columns.lease_expires_at < now)
    out_of_attempts = _columns.attempts >= max_attempts
    ends = (
        (_columns.cancel_requested, JobStatus.CANCELLED.value),
        (out_of_attempts, JobStatus.FAILED.value),
    )
    return (
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


def skip_flush(connection: Connection) -> None:
    """Let this transaction commit without waiting for its WAL to reach the disk.

    For writes whose loss in a database crash (not a process crash) is harmless: lease
    renewals, progress, notifications. On PostgreSQL that saves a disk flush per commit;
    a crash can lose the last few, never corrupt anything. Never for the INSERT (the 202's
    promise), a claim (a lost claim lets an epoch be handed out twice: store/admission_postgres.py)
    or an outcome. SQLite's WAL with synchronous=NORMAL already behaves so for every
    commit (only an OS crash loses commits there, and it takes the workers with it)."""
    if connection.dialect.name == "postgresql":
        connection.execute(_SKIP_FLUSH)


class Row:
    """Attribute access over a dict of column values (the unset ones at their defaults),
    for `Job.from_row`."""

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
