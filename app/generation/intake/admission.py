"""Admission: what stands between a submission and a durable, queued row.

- Validation: the generator must exist and accept the params (its `validate`).
- Idempotency: a submission may carry a client's key. The pair (owner, key) is unique in
  the `jobs` table, next to a digest of the request as the client sent it, so a repeat
  finds the first job (even after a restart) and a different request under the same key
  is refused. Two racing repeats cannot both insert: the loser hits the unique index.
- Per-owner quota: at most `max_queued` queued jobs per owner.
- Capacity and the owner's quota: the queue backend writes the row only if a slot is
  free and the owner is under its quota (queue/contract.py), so a refused or failed submission
  leaves nothing behind. On a shared (PostgreSQL) queue both are counted in the same
  locked transaction, so they hold cluster-wide.
- Its place: the row's INSERT fixes its scheduling key (scheduling/policy.py), given the job's
  `share` (its predicted run seconds on one worker, from `share_of`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from ..errors import (
    IdempotencyKeyReusedError,
    InvalidParamsError,
    QueueFullError,
    TooManyJobsError,
)
from ..generators import GeneratorRegistry
from ..job import Job, JobStatus, Priority, Webhook
from ..queue.contract import JobQueue
from ..store.jobs import JobStore


def fingerprint(
    generator: str, params: Mapping[str, Any], priority: Priority, webhook: Webhook | None = None
) -> str:
    """A digest of a submission as the client sent it (before defaults are filled in).
    A webhook counts only when there is one, so digests of requests without one stay
    those of the requests made before webhooks existed."""
    parts: list[Any] = [generator, params, priority.label]
    if webhook is not None:
        parts.append([webhook.url, list(webhook.events)])
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Admission:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        retry_after: Callable[[], int],
        *,
        generators: GeneratorRegistry | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        share_of: Callable[[str, dict[str, Any]], float] = lambda generator, params: 0.0,
    ) -> None:
        self._store = store
        self._share_of = share_of
        self._queue = queue
        self._retry_after = retry_after
        self._generators = generators or GeneratorRegistry()
        self._clock = clock

    def accept(
        self,
        generator: str,
        params: Mapping[str, Any],
        priority: Priority,
        owner: str,
        idempotency_key: str | None,
        max_queued: int | None,
        webhook: Webhook | None = None,
    ) -> Job:
        """The new row, its queue slot taken but not yet indexed; or, for a repeated
        idempotency key, the job the first request created (marked `replayed`)."""
        request_hash = None
        if idempotency_key is not None:
            request_hash = fingerprint(generator, params, priority, webhook)
            earlier = self.earlier(owner, idempotency_key, request_hash)
            if earlier is not None:
                return earlier
        new = Job(
            pk=0,
            id=uuid.uuid4().hex,
            owner=owner,
            generator=generator,
            params=self.validate(generator, params),
            priority=priority,
            status=JobStatus.QUEUED,
            created_at=self._clock(),
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            webhook=webhook,
        )
        return self.admit(new, max_queued)

    def validate(self, generator_name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The params with defaults filled in; InvalidParamsError naming what is wrong."""
        generator = self._generators.get(generator_name)
        if generator is None:
            names = ", ".join(self._generators.names())
            raise InvalidParamsError({"generator": f"unknown generator; available: {names}"})
        clean, errors = generator.validate(params)
        if errors:
            raise InvalidParamsError({f"params.{name[:64]}": text for name, text in errors.items()})
        return clean

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
            written = self._admit(job, max_queued)
        except IntegrityError:
            if not job.idempotency_key:
                raise
            written = None
        if written is not None:
            return written
        # A concurrent request with the same idempotency key wrote its row first.
        key, request_hash = job.idempotency_key, job.request_hash
        earlier = self.earlier(job.owner, key, request_hash) if key and request_hash else None
        if earlier is None:
            # Unreachable while rows are never deleted: a conflict means a committed row.
            raise RuntimeError(f"idempotency key of job {job.id} taken by a row not found")
        return earlier

    def _admit(self, job: Job, max_queued: int | None) -> Job | None:
        share = self._share_of(job.generator, job.params)
        try:
            return self._queue.admit(job, share=share, max_queued=max_queued)
        except QueueFullError as full:
            raise QueueFullError(full.capacity, self._retry_after()) from None
        except TooManyJobsError as over:
            raise TooManyJobsError(over.limit, self._retry_after()) from None
