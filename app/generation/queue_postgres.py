"""The PostgreSQL queue: every process and machine on the database claims from one table.

An idle worker claims exactly one job, the best by `claim_order()`, with

    WITH next AS MATERIALIZED (
        SELECT pk FROM jobs WHERE status = 'queued'
        ORDER BY <claim_order> LIMIT 1 FOR UPDATE SKIP LOCKED)
    UPDATE jobs SET status = 'running', lease_epoch = lease_epoch + 1, ...
    FROM next WHERE jobs.pk = next.pk RETURNING jobs.*

`SKIP LOCKED` lets concurrent claimers pass over each other's rows instead of queueing
behind them. The candidate is chosen in a materialised CTE, as Oban, Solid Queue and
graphile-worker do, because a `LIMIT` subquery inside `UPDATE ... WHERE pk IN (...)` may
be re-evaluated by the planner and lock (and claim) more rows than it returns. There is
no prefetch: a worker claims only when it is idle, so a HIGH job submitted anywhere is
the next one any idle worker in the cluster starts.

Workers that find nothing sleep on a doorbell rung by `NOTIFY` on every submission
(delivered on commit) and by the local process; they poll anyway, often while the
listening connection is down, so a lost notification delays a job, never strands it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, func, select, text, true, tuple_, update

from .errors import QueueFullError, ServiceStoppedError
from .jobs import JobStore
from .listener import Listener
from .models import Job, JobRow, JobStatus, Priority
from .queue import Announce, Clock, JobQueue, utcnow

JOBS_CHANNEL = "gs_jobs"
# Polling is the safety net under notifications: rare while they flow, brisk without them.
POLL_SECONDS_LISTENING = 5.0
POLL_SECONDS_DEAF = 0.5
# Serialises admissions so the cluster-wide capacity check and the insert are one step.
ADMISSION_LOCK_KEY = 0x67_73_51_55_45_55_45

_table = JobRow.__table__
_columns = _table.c
_queued = _columns.status == JobStatus.QUEUED.value


def claim_order() -> tuple[Any, ...]:
    """Effective priority, then age: the one ordering that claims and positions share.
    Extend it here (priority aging, fair share) and both follow."""
    return (_columns.priority, _columns.pk)


class Doorbell:
    """Wakes one idle worker per ring. A worker notes `generation` before it looks for
    work and waits only if nothing rang since, so a ring is never lost in between."""

    def __init__(self) -> None:
        self.generation = 0
        self._rang = threading.Condition()

    def ring(self) -> None:
        with self._rang:
            self.generation += 1
            self._rang.notify()

    def ring_all(self) -> None:
        with self._rang:
            self.generation += 1
            self._rang.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        with self._rang:
            self._rang.wait_for(lambda: self.generation != seen, timeout)


class PostgresQueue(JobQueue):
    def __init__(
        self, store: JobStore, capacity: int, listener: Listener, *, clock: Clock = utcnow
    ) -> None:
        super().__init__(store, capacity, clock=clock)
        self._listener = listener
        self._doorbell = Doorbell()
        self._closed = False
        listener.on(JOBS_CHANNEL, lambda _payload: self._doorbell.ring())
        listener.on_reconnect(self._doorbell.ring_all)

    def recover(self, max_attempts: int) -> list[Job]:
        # Other processes may be running jobs right now: only expired leases are taken back.
        return self.store.reclaim(max_attempts, self._clock())

    def submit(self, job: Job, *, announce: Announce | None = None) -> tuple[Job, int]:
        if self._closed:
            raise ServiceStoppedError("the generation service is shutting down")
        with self.store.engine.begin() as connection:
            self._admit(connection)
            written = self.store.insert(job, connection=connection)
            position = self._position(connection, written)
            if announce is not None:
                announce(written, position or 0)
            _notify_new_job(connection)
        # Other processes hear the notification on commit; this one's idle workers now.
        self._doorbell.ring()
        return written, position or 0

    def claim(self, worker: str, timeout: float | None = None) -> Job | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            seen = self._doorbell.generation
            job = self._claim_next(worker)
            if job is not None:
                return job
            wait = POLL_SECONDS_LISTENING if self._listener.connected else POLL_SECONDS_DEAF
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return None
            self._doorbell.wait(seen, wait)
        return None

    def returned(self, jobs: Iterable[Job]) -> None:
        if any(job.status is JobStatus.QUEUED for job in jobs):
            with self.store.engine.begin() as connection:
                _notify_new_job(connection)

    def cancel(self, job_id: str) -> Job | None:
        return self.store.cancel_queued(job_id, self._clock())

    def position(self, job: Job) -> int | None:
        with self.store.engine.connect() as connection:
            return self._position(connection, job)

    def _position(self, connection: Connection, job: Job) -> int | None:
        me = select(*claim_order()).where(_columns.pk == job.pk, _queued).subquery()
        ahead = (
            select(func.count())
            .select_from(_table.join(me, true()))
            .where(_queued, tuple_(*claim_order()) < tuple_(*me.c))
        )
        queued = select(func.count()).select_from(me)
        row = connection.execute(select(queued.scalar_subquery(), ahead.scalar_subquery()))
        is_queued, position = row.one()
        return position if is_queued else None

    def depth_by_priority(self) -> dict[Priority, int]:
        query = select(_columns.priority, func.count()).where(_queued).group_by(_columns.priority)
        with self.store.engine.connect() as connection:
            counts = dict(connection.execute(query).all())
        return {priority: counts.get(int(priority), 0) for priority in Priority}

    def close(self) -> None:
        self._closed = True
        self._doorbell.ring_all()

    def __len__(self) -> int:
        query = select(func.count()).select_from(_table).where(_queued)
        with self.store.engine.connect() as connection:
            return connection.execute(query).scalar_one()

    def _admit(self, connection: Connection) -> None:
        # Lock, then count, in separate statements: under READ COMMITTED each statement
        # sees the rows committed before it started, so the count must start after the
        # lock is held to see the insert of whoever held it before.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADMISSION_LOCK_KEY})
        queued = connection.execute(select(func.count()).select_from(_table).where(_queued))
        if queued.scalar_one() >= self.capacity:
            raise QueueFullError(self.capacity)

    def _claim_next(self, worker: str) -> Job | None:
        candidate = (
            select(_columns.pk)
            .where(_queued)
            .order_by(*claim_order())
            .limit(1)
            .with_for_update(skip_locked=True)
            .cte("next")
            .prefix_with("MATERIALIZED")
        )
        statement = (
            update(_table)
            .where(_columns.pk == candidate.c.pk)
            .values(**self.store.claim_values(worker, self._clock()))
            .returning(*_table.c)
        )
        with self.store.engine.begin() as connection:
            row = connection.execute(statement).first()
        return Job.from_row(row) if row else None


def _notify_new_job(connection: Connection) -> None:
    connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": JOBS_CHANNEL})
