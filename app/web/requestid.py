"""A request id for every request: taken from Fly's proxy (or a caller) when given,
made up otherwise, put in the logging context and echoed in `X-Request-Id`.

WSGI middleware rather than Flask hooks: three hooks (before, after, teardown) cost
more than the work they did, on every request (docs/performance.md). The id is set
before Flask sees the request and reset when the app returns, which is when Flask's
teardown ran: logs of the whole request carry it, error handlers' included.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from ..logs import request_id

HEADER = "X-Request-Id"
# The first of these present is the one considered (WSGI spelling of Fly-Request-Id, X-Request-Id).
INCOMING = ("HTTP_FLY_REQUEST_ID", "HTTP_X_REQUEST_ID")
_SAFE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def choose_request_id(environ: dict[str, Any]) -> str:
    """The incoming id if it is well formed, else 32 random hex digits."""
    for name in INCOMING:
        given = environ.get(name)
        if given is not None:
            break
    else:
        given = ""
    return given if _SAFE.fullmatch(given) else os.urandom(16).hex()


class RequestIds:
    """WSGI middleware: binds the request id for logging and adds it to the answer."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        value = choose_request_id(environ)

        def start_with_id(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            headers.append((HEADER, value))
            return start_response(status, headers, *exc_info)

        # Pool threads serve many requests: leave no id behind for the next one.
        token = request_id.set(value)
        try:
            return self.app(environ, start_with_id)
        finally:
            request_id.reset(token)
