"""Counts requests in flight (including streamed responses) for `/status`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any


class InFlightCounter:
    """WSGI middleware: `current` is the number of requests being answered right now."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.current = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        self._add(1)
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self._add(-1)
            raise
        return _ClosingIterable(body, lambda: self._add(-1))

    def _add(self, delta: int) -> None:
        with self._lock:
            self.current += delta


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
