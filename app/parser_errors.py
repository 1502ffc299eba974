"""gunicorn's answers to requests it cannot parse, in the contract's JSON error shape.

gunicorn refuses some requests before the app sees them: a request line over
`limit_request_line` (414), header fields over `limit_request_field_size` or too many
of them (431), a malformed request line or header (400), an `Expect` it does not know
(417). It writes those answers itself, as HTML; every other error of this API is
`{"error": {"code", "message"}}` (app/web/errors.py), and the OpenAPI document promises that
shape for every status it lists. gunicorn has no setting or hook for this page, so
`install()` replaces the one function that writes it (`gunicorn.util.write_error`, which
its workers call through the module), keeping the status, reason and message.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn import util

CODES = {500: "internal_error"}


def json_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP response (head and body) saying `message` in the API's error shape."""
    # The app's own codes where they exist (an unexpected failure is `internal_error`).
    code = CODES.get(status, reason.lower().replace(" ", "_"))
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: Any) -> None:
    """`gunicorn.util.write_error`'s signature, writing JSON instead of an HTML page."""
    util.write_nonblock(sock, json_error(status_int, reason, str(mesg)))


def install() -> None:
    util.write_error = write_json_error
