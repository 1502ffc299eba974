"""The queue's pause: while it holds, admissions are refused (503 `paused`) and no
worker claims, in every process on the database; running jobs go on to their end.

The switch lives in the database (store/queue_state.py), so it holds across machines and
restarts. Each process reads it at most once per REFRESH_SECONDS (a submit or an idle
worker asks far more often than that) and at once when it flips the switch itself, so
another machine follows a pause or a resume within about a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from ..store.queue_state import Paused, QueueStateStore

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0


class QueuePause:
    def __init__(
        self,
        store: QueueStateStore,
        clock: Callable[[], datetime],
        *,
        on_resume: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_resume` is called when this process sees the queue resume (to wake the
        workers that wait for it)."""
        self._store = store
        self._clock = clock
        self._on_resume = on_resume
        self._lock = threading.Lock()
        self._state: Paused | None = None
        self._read_at = float("-inf")
        self._running = threading.Event()
        self._running.set()

    def state(self) -> Paused | None:
        """The pause in force (read again if the last read is over a second old)."""
        with self._lock:
            fresh = time.monotonic() - self._read_at < REFRESH_SECONDS
        if not fresh:
            try:
                self._update(self._store.paused())
            except SQLAlchemyError as error:  # the database is down: keep what we knew
                log.warning("could not read whether the queue is paused: %s", error)
                with self._lock:
                    self._read_at = time.monotonic()
        return self._state

    @property
    def paused(self) -> bool:
        return self.state() is not None

    def pause(self, by: str | None) -> Paused:
        paused = self._store.pause(by, self._clock())
        self._update(paused)
        return paused

    def resume(self) -> bool:
        """Resume; False if the queue was not paused."""
        resumed = self._store.resume()
        self._update(None)
        return resumed

    def wait_for_resume(self, timeout: float) -> None:
        """Block until this process sees the queue running, at most `timeout` seconds
        (a resume on another machine is seen by reading again, so wait in slices)."""
        if not self._running.wait(min(timeout, REFRESH_SECONDS)):
            self.state()

    def _update(self, state: Paused | None) -> None:
        with self._lock:
            was_paused = self._state is not None
            self._state = state
            self._read_at = time.monotonic()
        if state is None:
            self._running.set()
            if was_paused:
                self._on_resume()
        else:
            self._running.clear()
