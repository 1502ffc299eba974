"""Admission: what stands between a validated submission and a durable, queued row.

- Idempotency: a submission may carry a client's key. The pair (owner, key) is unique in
  the `jobs` table, next to a digest of the request as the client sent it, so a repeat
  finds the first job (even after a restart) and a different request under the same key
  is refused. Two racing repeats cannot both insert: the loser hits the unique index.
- Per-owner quota: at most `max_queued` queued jobs per owner.
- Capacity: a queue slot is reserved before the row is written and given back if the
  write fails, so a refused or failed submission leaves nothing behind.
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
from .queue import JobQueue

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

    def check(self, owner: str, max_queued: int | None = None) -> None:
        """Raise as `admit` would for the owner's quota or a full queue, holding nothing
        (for quotes)."""
        if max_queued is not None and self._store.count_queued(owner) >= max_queued:
            raise TooManyJobsError(max_queued, self._retry_after())
        try:
            self._queue.check_room()
        except QueueFullError as full:
            raise QueueFullError(full.capacity, self._retry_after()) from None

    def admit(self, job: Job, max_queued: int | None = None) -> Job:
        """Check the owner's quota, hold a queue slot and write the row; all or nothing.
        If a concurrent request with the same idempotency key wrote its row first, return
        that request's job instead (or refuse, if its request was a different one).

        Raises TooManyJobsError, QueueFullError, IdempotencyKeyReusedError, or the
        database's error."""
        try:
            return self._admit(job, max_queued)
        except IntegrityError:
            key, request_hash = job.idempotency_key, job.request_hash
            earlier = self.earlier(job.owner, key, request_hash) if key and request_hash else None
            if earlier is None:
                raise
            return earlier

    def _admit(self, job: Job, max_queued: int | None) -> Job:
        if max_queued is None:
            return self._insert(job)
        # The count and the insert must not interleave with another submit of the same
        # owner in this process, or both could take the last place in the quota.
        with self._owner_locks[hash(job.owner) % OWNER_LOCK_STRIPES]:
            if self._store.count_queued(job.owner) >= max_queued:
                raise TooManyJobsError(max_queued, self._retry_after())
            return self._insert(job)

    def _insert(self, job: Job) -> Job:
        try:
            self._queue.reserve()
        except QueueFullError as full:
            raise QueueFullError(full.capacity, self._retry_after()) from None
        try:
            return self._store.insert(job)
        except BaseException:
            self._queue.release()
            raise
