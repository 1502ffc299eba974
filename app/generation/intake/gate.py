"""The admission gate: lets submissions in, or shuts them out while the process decides
to stop (ops/idle.py).

A submission holds the gate from its checks until its row is written. Closing the gate
refuses new ones (503 `unavailable`, retryable) and waits for those inside to finish, so
that whoever closed it then sees every job admitted here in the database: none can be
written after that look and be left behind by a process that stops.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ServiceStoppedError


class AdmissionGate:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._inside = 0
        self._closed: str | None = None

    @contextmanager
    def admitting(self) -> Iterator[None]:
        """Hold the gate open for one submission; ServiceStoppedError while closed."""
        with self._changed:
            self._refuse_if_closed()
            self._inside += 1
        try:
            yield
        finally:
            with self._changed:
                self._inside -= 1
                self._changed.notify_all()

    def check(self) -> None:
        """Raise as `admitting()` would (for quotes), holding nothing."""
        with self._changed:
            self._refuse_if_closed()

    def close(self, reason: str, timeout: float) -> bool:
        """Refuse submissions from now on, saying `reason`; then wait for those inside.
        False if some were still inside after `timeout` seconds."""
        with self._changed:
            self._closed = reason
            return self._changed.wait_for(lambda: self._inside == 0, timeout)

    def reopen(self) -> None:
        with self._changed:
            self._closed = None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def _refuse_if_closed(self) -> None:
        if self._closed is not None:
            raise ServiceStoppedError(self._closed)
