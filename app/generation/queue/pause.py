"""The queue's pause and a machine's drain.

While the queue is paused, admissions are refused (503 `paused`) and no worker claims, in
every process on the database; running jobs go on to their end. While a machine is
drained, its workers claim nothing and finish what they run; admissions go on (other
machines run the jobs), so a machine can be emptied before it is stopped or replaced.

Both switches live in the database (store/queue_state.py), so they hold across machines and
restarts. Each process reads them at most once per REFRESH_SECONDS (a submit or an idle
worker asks far more often than that) and at once when it flips one itself, so another
machine follows a pause, a drain or their end within about a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from ..store.queue_state import Holds, Paused, QueueStateStore

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0


class QueuePause:
    def __init__(
        self,
        store: QueueStateStore,
        clock: Callable[[], datetime],
        *,
        machine: str | None = None,
        on_resume: Callable[[], None] = lambda: None,
    ) -> None:
        """The switches as `machine` (this process's) sees them. `on_resume` is called
        when this process's workers may claim again (to wake those that wait)."""
        self._store = store
        self._clock = clock
        self._machine = machine
        self._on_resume = on_resume
        self._lock = threading.Lock()
        self._holds = Holds()
        self._read_at = float("-inf")
        self._running = threading.Event()
        self._running.set()

    def holds(self) -> Holds:
        """The pause and this machine's drain in force (read again if the last read is
        over a second old)."""
        with self._lock:
            fresh = time.monotonic() - self._read_at < REFRESH_SECONDS
        if not fresh:
            try:
                self._update(self._store.holds(self._machine))
            except SQLAlchemyError as error:  # the database is down: keep what we knew
                log.warning("could not read whether the queue is paused: %s", error)
                with self._lock:
                    self._read_at = time.monotonic()
        return self._holds

    def state(self) -> Paused | None:
        """The queue's pause in force, or None."""
        return self.holds().queue

    @property
    def paused(self) -> bool:
        return self.state() is not None

    @property
    def claims_held(self) -> bool:
        """Whether this process's workers must not claim: a pause, or a drain of this
        machine."""
        holds = self.holds()
        return holds.queue is not None or holds.machine is not None

    def pause(self, by: str | None) -> Paused:
        paused = self._store.pause(by, self._clock())
        self.refresh()
        return paused

    def resume(self) -> bool:
        """Resume; False if the queue was not paused."""
        resumed = self._store.resume()
        self.refresh()
        return resumed

    def refresh(self) -> None:
        """Read the switches now (after this process flipped one)."""
        with self._lock:
            self._read_at = float("-inf")
        self.holds()

    def wait_for_resume(self, timeout: float) -> None:
        """Block until this process's workers may claim, at most `timeout` seconds (a
        resume on another machine is seen by reading again, so wait in slices)."""
        if not self._running.wait(min(timeout, REFRESH_SECONDS)):
            self.holds()

    def _update(self, holds: Holds) -> None:
        held = holds.queue is not None or holds.machine is not None
        with self._lock:
            was_held = not self._running.is_set()
            self._holds = holds
            self._read_at = time.monotonic()
        if held:
            self._running.clear()
            return
        self._running.set()
        if was_held:
            self._on_resume()
