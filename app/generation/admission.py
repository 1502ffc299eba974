"""Admission: what stands between a validated submission and a durable, queued row.

- Idempotency: a submission may carry a client's key. The pair (owner, key) is unique in
  the `jobs` table, next to a digest of the request as the client sent it, so a repeat
  finds the first job (even after a restart) and a different request under the same key
  is refused. Two racing repeats cannot both insert: the loser hits the unique index.
- Per-owner quota: at most `max_queued` queued jobs per owner.
- Capacity: the queue backend writes the row only if a slot is free (queue.py), so a
  refused or failed submission leaves nothing behind.

The per-owner quota is checked under a lock of this process: with several processes on
PostgreSQL, two submissions of one owner to two processes at the same moment may both
take the last place, so the quota can be exceeded by (processes - 1) at most.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError

from .errors import IdempotencyKeyReusedError, QueueFullError, TooManyJobsError
from .jobs import JobStore
from .models import Job, Priority
from .queue import Announce, JobQueue

OWNER_LOCK_STRIPES = 16


def fingerprint(generator: str, params: Mapping[str, Any], priority: Priority) -> str:
    """A digest of a submission as the client sent it (before defaults are filled in)."""
    canonical = json.dumps(
        [generator, params, priority.label], sort_keys=True, separators=(",", ":"), default=repr
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Admission:
    def __init__(self, store: JobStore, queue: JobQueue, retry_after: Callable[[], int]) -> None:
        self._store = store
        self._queue = queue
        self._retry_after = retry_after
        # Striped so that submits of different owners rarely wait for each other.
        self._owner_locks = [threading.Lock() for _ in range(OWNER_LOCK_STRIPES)]

    def earlier(self, owner: str, key: str, request_hash: str) -> Job | None:
        """The job a previous request with this key created (marked `replayed`), if that
        request was the same; IdempotencyKeyReusedError if it was not."""
        earlier = self._store.find_by_idempotency_key(owner, key)
        if earlier is None:
            return None
        if earlier.request_hash != request_hash:
            raise IdempotencyKeyReusedError(key, earlier.id)
        return dataclasses.replace(earlier, replayed=True)

    def admit(
        self, job: Job, max_queued: int | None = None, *, announce: Announce | None = None
    ) -> Job:
        """Check the owner's quota and queue the job (with its `position`; `announce` as
        `JobQueue.submit` says); all or nothing.
        If a concurrent request with the same idempotency key wrote its row first, return
        that request's job instead (or refuse, if its request was a different one).

        Raises TooManyJobsError, QueueFullError, IdempotencyKeyReusedError, or the
        database's error."""
        try:
            return self._admit(job, max_queued, announce)
        except IntegrityError:
            key, request_hash = job.idempotency_key, job.request_hash
            earlier = self.earlier(job.owner, key, request_hash) if key and request_hash else None
            if earlier is None:
                raise
            return earlier

    def _admit(self, job: Job, max_queued: int | None, announce: Announce | None) -> Job:
        if max_queued is None:
            return self._insert(job, announce)
        # The count and the insert must not interleave with another submit of the same
        # owner in this process, or both could take the last place in the quota.
        with self._owner_locks[hash(job.owner) % OWNER_LOCK_STRIPES]:
            if self._store.count_queued(job.owner) >= max_queued:
                raise TooManyJobsError(max_queued, self._retry_after())
            return self._insert(job, announce)

    def _insert(self, job: Job, announce: Announce | None) -> Job:
        try:
            written, position = self._queue.submit(job, announce=announce)
        except QueueFullError as full:
            raise QueueFullError(full.capacity, self._retry_after()) from None
        return dataclasses.replace(written, position=position)
