"""Result retention: results older than a TTL are deleted so they cannot fill the disk.

The job row stays (its history, params and outcome remain visible); it gains
`expired_at` and no longer offers a result. The file is deleted before the row is
marked, so a crash in between leaves a row whose file is already gone (the next sweep
marks it) and never a file that nothing will delete. Marking is conditional on the row
not being marked yet, so several processes may sweep the same database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from ..events.observers import JobObserver
from ..store.jobs import JobStore
from .storage import ResultStore

log = logging.getLogger(__name__)

SWEEP_BATCH = 100


class ResultSweeper:
    """Deletes expired results, on demand (`sweep`) or every `interval` seconds
    on its own thread (`start` / `stop`)."""

    def __init__(
        self,
        store: JobStore,
        results: ResultStore,
        ttl: timedelta,
        clock: Callable[[], datetime],
        observer: JobObserver,
        *,
        interval: float = 60.0,
        also: Callable[[datetime], int] | None = None,
    ) -> None:
        """`also(cutoff)` deletes other records that end with a job's result (the
        webhook deliveries that ended before the cutoff) on every sweep."""
        if ttl <= timedelta(0):
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.ttl = ttl
        self.interval = interval
        self._store = store
        self._results = results
        self._clock = clock
        self._observer = observer
        self._also = also
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> int:
        """Expire every result older than the TTL now; returns how many were expired."""
        now = self._clock()
        cutoff = now - self.ttl
        expired = 0
        # Each job of a batch is marked (by us or a concurrent sweeper) or an error is
        # raised, so every batch is new and the loop ends; `stop()` ends it early.
        while not self._stopped.is_set() and (batch := self._store.expirable(cutoff, SWEEP_BATCH)):
            for job in batch:
                self._results.delete(job.id, job.lease_epoch)
                if self._store.mark_expired(job.id, now) is not None:
                    expired += 1
                    self._observer.expired(job)
        if expired:
            log.info("retention: deleted %d results older than %s", expired, self.ttl)
        if self._also is not None and not self._stopped.is_set():
            self._also(cutoff)
        return expired

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gen-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a failed sweep is retried next interval
                log.exception("retention sweep failed; retrying in %ss", self.interval)
