"""Checking a WebSocket handshake before anything else is spent on it.

Routing sends a request to a socket route only when it asks to upgrade (`Connection:
Upgrade`, `Upgrade: websocket`); a plain request is a 400 (errors.py). What routing does
not check, the handshake library refuses by raising, which would be a 500: so the rest of
RFC 6455 section 4.2.1 is checked here, and a bad handshake is a 400 that says which
header is wrong, with `Sec-WebSocket-Version: 13` when the version is the problem (4.4).
"""

from __future__ import annotations

import binascii
from base64 import b64decode

from flask import Request

from .errors import ApiError

WEBSOCKET_VERSION = "13"
# The client's nonce: 16 random bytes, base64-encoded (always 24 characters).
KEY_BYTES = 16


def check_handshake(request: Request) -> None:
    """Raise a 400 ApiError unless `request` is a WebSocket handshake this server takes."""
    version = request.headers.get("Sec-WebSocket-Version")
    if version != WEBSOCKET_VERSION:
        raise _refused(
            "Sec-WebSocket-Version",
            f"must be {WEBSOCKET_VERSION}",
            {"Sec-WebSocket-Version": WEBSOCKET_VERSION},
        )
    if not _is_nonce(request.headers.get("Sec-WebSocket-Key", "")):
        raise _refused("Sec-WebSocket-Key", f"must be {KEY_BYTES} bytes, base64-encoded")


def _is_nonce(key: str) -> bool:
    try:
        return len(b64decode(key.strip(), validate=True)) == KEY_BYTES
    except (binascii.Error, ValueError):
        return False


def _refused(header: str, rule: str, headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(
        400,
        "bad_request",
        f"not a WebSocket handshake this server takes: {header} {rule} (RFC 6455)",
        fields={header: rule},
        headers=headers,
    )
