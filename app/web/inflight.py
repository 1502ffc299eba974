"""Counts requests in flight (including streamed responses) for `/status`, and notes when
the last one that was not a probe came (the idle stop asks: app/idle.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

# Requests that are not work: load balancers' health checks and metric scrapes.
PROBES = frozenset({"/health", "/ready", "/metrics"})


class InFlightCounter:
    """WSGI middleware: `current` is the number of requests being answered right now;
    `working` of those that are not probes, and `last_work_at` (monotonic) when the last
    of those began or ended."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.current = 0
        self.working = 0
        self.last_work_at = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        work = environ.get("PATH_INFO") not in PROBES
        self._add(1, work)
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self._add(-1, work)
            raise
        return _ClosingIterable(body, lambda: self._add(-1, work))

    def _add(self, delta: int, work: bool) -> None:
        with self._lock:
            self.current += delta
            if work:
                self.working += delta
                self.last_work_at = time.monotonic()


class _ClosingIterable:
    """Passes the body through and runs `on_close` once the server closes it."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close

    def __iter__(self) -> Any:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()
