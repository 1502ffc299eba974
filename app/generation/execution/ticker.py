"""A named thread that runs one step whenever something changed, and at least every tick.

The service's `gen-scheduler` uses it to resize the worker pool and push changed queue
positions: it wakes on every queue change, but at most every `min_interval` seconds, so a
burst of submissions costs one forecast, not one each. A failing step is logged and the
thread goes on, as a worker does after a bad job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Ticker:
    def __init__(
        self, step: Callable[[], object], name: str, *, every: float, min_interval: float
    ) -> None:
        self._step = step
        self._every = every
        self._min_interval = min_interval
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Something changed: run the step soon."""
        self._changed.set()

    def stop(self, timeout: float | None = None) -> None:
        self._stopping.set()
        self._changed.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._changed.wait(self._every)
            self._changed.clear()
            try:
                self._step()
            except Exception:  # noqa: BLE001 - one failed step must not end the thread
                log.exception("%s step failed", self._thread.name)
            self._stopping.wait(self._min_interval)
