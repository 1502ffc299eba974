"""The PostgreSQL queue: every process and machine on the database claims from one table.

An idle worker claims exactly one job, the first by the scheduling key, in one SQL
statement that reads one index entry (claim_postgres.py); concurrent claimers pass over
each other's rows (`SKIP LOCKED`). There is no prefetch: a worker claims only when it is idle,
so a HIGH job submitted anywhere is the next one any idle worker in the cluster starts.

Capacity is the cluster's: triggers keep how many jobs entered and left the queued state
in `queue_counts` (migration 0003), and an admission locks the `in` row, reads the depth
from the two rows and inserts, in one transaction: O(1), and never above capacity, since
every admission holds that lock (store/admission_postgres.ADMISSION_READ). Concurrent submissions of
this process share that transaction (group commit, store/group_commit.py): one lock, one read,
one INSERT, one NOTIFY and one commit for the group, and each 202 leaves only once its
row is durable.

Workers that find nothing sleep on a doorbell rung by `NOTIFY` on every admission
(delivered on commit) and by this process; they poll anyway, often while the listening
connection is down, so a lost notification delays a job, never strands it.

Forecasts (positions, ETAs, Retry-After) need the queue as a `SchedulingIndex`: this
process keeps a copy of the queued rows, re-read by the scheduler thread at most a few
times a second (`refresh`, O(queued) per read, never per submission; a deep queue's read
waits longer, so that it takes at most REFRESH_SHARE of this process's time), and
updated at once for what this process learns (its own submissions and claims, relayed
events).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection, case, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from ..errors import QueueFullError, ServiceStoppedError
from ..job import Job, Priority
from ..scheduling.policy import QueueEntry, SchedulingIndex
from ..store.admission_postgres import Admitted, admit_group, queued_params
from ..store.group_commit import GroupCommit
from ..store.jobs import JobStore
from ..store.listener import Listener
from ..store.tables import QUEUED_PREDICATE, JobRow, QueueCountRow
from .claim_postgres import CLAIM
from .contract import JOURNAL_SIZE, Change, JobQueue, Stop, as_datetime, changes_after

log = logging.getLogger(__name__)

JOBS_CHANNEL = "gs_jobs"
# Polling is the safety net under notifications: rare while they flow, brisk without them.
POLL_SECONDS_LISTENING = 5.0
POLL_SECONDS_DEAF = 0.5
# How long a job that left the queue here is kept out of re-read copies (see refresh).
DEPARTED_SECONDS = 60.0
# Re-reading the queued rows for forecasts: at most this share of the process's time.
REFRESH_SHARE = 0.05
# At most this many submissions share one transaction.
GROUP_COMMIT_MAX = 64

_jobs = JobRow.__table__
_c = _jobs.c
_counts = QueueCountRow.__table__
QUEUE_DEPTH = select(
    func.coalesce(func.sum(case((_counts.c.name == "in", _counts.c.n), else_=-_counts.c.n)), 0)
)


class Doorbell:
    """Wakes one idle worker per ring. A worker notes `generation` before it looks for
    work and waits only if nothing rang since, so a ring is never lost in between."""

    def __init__(self) -> None:
        self.generation = 0
        self._rang = threading.Condition()

    def ring(self, everyone: bool = False) -> None:
        with self._rang:
            self.generation += 1
            if everyone:
                self._rang.notify_all()
            else:
                self._rang.notify()

    def wait(self, seen: int, timeout: float) -> None:
        with self._rang:
            self._rang.wait_for(lambda: self.generation != seen, timeout)


class PostgresQueue(JobQueue):
    """Lock invariant: `_lock` guards `_index`, `_departed`, `_journal` and `version`."""

    shared = True

    def __init__(
        self,
        store: JobStore,
        capacity: int,
        listener: Listener,
        *,
        aging_seconds: float,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], None] = lambda: None,
        cost: Callable[[str, dict[str, Any]], float] = lambda generator, params: 1.0,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.version = 0
        self._store = store
        self._engine = store.engine
        self._listener = listener
        self._aging = aging_seconds
        self._clock = clock
        self._on_change = on_change
        self._cost = cost
        self._index = SchedulingIndex(aging_seconds)
        self._journal: deque[Change] = deque(maxlen=JOURNAL_SIZE)
        self._departed: dict[str, float] = {}  # job id -> monotonic time it left
        self._doorbell = Doorbell()
        self._closed = False
        self._lock = threading.Lock()
        self._group = GroupCommit(self._admit_group, GROUP_COMMIT_MAX)
        self._next_refresh = float("-inf")  # monotonic time the next re-read may start
        listener.on(JOBS_CHANNEL, self._heard)
        listener.on_reconnect(lambda: self._doorbell.ring(everyone=True))

    @property
    def aging_seconds(self) -> float:
        return self._aging

    @property
    def closed(self) -> bool:
        return self._closed

    def admit(self, job: Job, *, share: float, max_queued: int | None = None) -> Job | None:
        if self._closed:
            raise ServiceStoppedError("the generation service is shutting down")
        return self._group.submit((job, share, max_queued))

    def check_room(self) -> None:
        if self._closed:
            raise ServiceStoppedError("the generation service is shutting down")
        with self._engine.connect() as connection:
            if connection.execute(QUEUE_DEPTH).scalar_one() >= self.capacity:
                raise QueueFullError(self.capacity)

    def put(self, entry: QueueEntry) -> None:
        with self._lock:
            if entry.job_id not in self._departed and entry.job_id not in self._index:
                self._index.add(entry)
                self._changed("put", entry)
        # Other processes heard the notification on commit; this one's idle workers now.
        self._doorbell.ring()
        self._on_change()

    def claim(
        self, worker: str, *, stop: Stop = lambda: False, timeout: float | None = None
    ) -> Job | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (self._closed or stop()):
            seen = self._doorbell.generation
            job = self._claim_next(worker)
            if job is not None:
                self._depart(job.id, "get")
                return job
            wait = POLL_SECONDS_LISTENING if self._listener.connected else POLL_SECONDS_DEAF
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return None
            self._doorbell.wait(seen, wait)
        return None

    def recover(self, max_attempts: int) -> list[Job]:
        # Other processes may be running jobs right now: only expired leases are taken back.
        taken = self._store.reclaim(max_attempts, as_datetime(self._clock()))
        self.refresh(force=True)
        return taken

    def returned(self, entries: Iterable[QueueEntry]) -> None:
        entries = list(entries)
        if not entries:
            return
        with self._lock:
            for entry in entries:
                self._departed.pop(entry.job_id, None)
        for entry in entries:
            self.put(entry)
        try:
            with self._engine.begin() as connection:
                _notify_new_job(connection)
        except SQLAlchemyError as error:  # the others find them at their next poll
            log.warning("could not announce %d requeued jobs: %s", len(entries), error)

    def remove(self, job_id: str) -> bool:
        return self._depart(job_id, "remove")

    def changes_since(self, version: int) -> list[Change] | None:
        with self._lock:
            return changes_after(self._journal, self.version, version)

    def refresh(self, *, force: bool = False) -> None:
        """Bring this copy of the queue in line with the queued rows (unless the last read
        was too recent for its cost: REFRESH_SHARE). Only what changed elsewhere is applied
        (and only that makes forecasts replay): jobs that left the queue here since the
        read began stay out (the read may predate their claim), and jobs put here since
        it began stay in (it may predate their INSERT)."""
        began = time.monotonic()
        if not force and began < self._next_refresh:
            return
        with self._lock:
            known, since = set(self._index_ids()), self.version
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(
                    _c.pk, _c.id, _c.owner, _c.priority, _c.created_at, _c.generator, _c.sort_key
                ).where(QUEUED_PREDICATE)
            ).all()
            params = queued_params(connection, [row.id for row in rows if row.id not in known])
        with self._lock:
            self._forget_departures_before(began - DEPARTED_SECONDS)
            live = {row.id: row for row in rows if self._departed.get(row.id, -1.0) < began}
            self._apply_elsewhere(live, params, self._put_here_since(since))
        self._next_refresh = began + (time.monotonic() - began) / REFRESH_SHARE

    def _index_ids(self) -> list[str]:
        return [entry.job_id for entry in self._index.entries()]

    def _forget_departures_before(self, moment: float) -> None:
        self._departed = {job: left for job, left in self._departed.items() if left > moment}

    def _put_here_since(self, version: int) -> set[str] | None:
        """Jobs this process put since `version`; None if the journal no longer says."""
        changes = changes_after(self._journal, self.version, version)
        if changes is None:
            return None
        return {entry.job_id for _, kind, entry in changes if kind == "put"}

    def _apply_elsewhere(
        self, live: dict[str, Any], params: dict[str, dict[str, Any]], put_here: set[str] | None
    ) -> None:
        """Add the queued rows this copy lacks, drop the jobs the rows no longer hold
        (except those put here during the read); if anything changed, forecasts replay."""
        current = set(self._index_ids())
        arrived = live.keys() - current
        # Not knowing what was put here during the read, drop all the rows lack: a job
        # put meanwhile comes back at the next read.
        gone = current - live.keys() - (put_here or set())
        if not arrived and not gone:
            return
        for job_id in gone:
            self._index.remove(job_id)
        for job_id in arrived:
            self._index.add(self._entry(live[job_id], params.get(job_id, {})))
        # A change the journal cannot describe: forecasts replay from a snapshot.
        self.version += 1
        self._journal.clear()

    def snapshot(self) -> tuple[int, SchedulingIndex]:
        with self._lock:
            return self.version, self._index.copy()

    def depth_by_priority(self) -> dict[Priority, int]:
        query = select(_c.priority, func.count()).where(QUEUED_PREDICATE).group_by(_c.priority)
        with self._engine.connect() as connection:
            counts = dict(connection.execute(query).all())
        return {priority: counts.get(int(priority), 0) for priority in Priority}

    def key_for(self, owner: str, priority: int, now: float, share: float) -> float:
        with self._lock:
            return self._index.key_for(owner, priority, now, share)

    def wake(self) -> None:
        self._doorbell.ring(everyone=True)

    def close(self) -> None:
        self._closed = True
        self._doorbell.ring(everyone=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def __contains__(self, job_id: object) -> bool:
        with self._lock:
            return job_id in self._index

    def _depart(self, job_id: str, kind: str) -> bool:
        """The job left the queue here (claimed or cancelled): out of this copy, and kept
        out of re-reads that may have begun before it left."""
        with self._lock:
            self._departed[job_id] = time.monotonic()
            entry = self._index.remove(job_id)
            if entry is not None:
                self._changed(kind, entry)
        return entry is not None

    def _changed(self, kind: str, entry: QueueEntry) -> None:
        self.version += 1
        self._journal.append((self.version, kind, entry))

    def _claim_next(self, worker: str) -> Job | None:
        return self._store.write_row(
            CLAIM, self._store.claim_params(worker, as_datetime(self._clock()))
        )

    def _admit_group(self, group: list[Admitted]) -> list[Job | None | BaseException]:
        with self._engine.begin() as connection:
            return admit_group(
                connection,
                group,
                capacity=self.capacity,
                aging_seconds=self._aging,
                database_clock=self._store.database_clock,
                channel=JOBS_CHANNEL,
            )

    def _heard(self, _payload: str) -> None:
        self._doorbell.ring()
        self._on_change()  # re-read the queue soon, for forecasts

    def _entry(self, row: Any, params: dict[str, Any]) -> QueueEntry:
        return QueueEntry(
            row.id,
            Priority(row.priority),
            row.pk,
            row.owner,
            row.created_at.timestamp(),
            row.generator,
            self._cost(row.generator, params),
            row.sort_key,
        )


def _notify_new_job(connection: Connection) -> None:
    connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": JOBS_CHANNEL})
