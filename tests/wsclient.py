"""A small WebSocket client for tests: every read has a timeout, so no test can hang."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

READ_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0

Message = dict[str, Any]


def open_socket(host: str, path: str, *, receive_buffer: int | None = None) -> ClientConnection:
    """Connect to `ws://host/path`. With `receive_buffer`, the client's TCP receive buffer
    is that small and frames are not compressed, so a client that stops reading pushes
    back on the server within a few kilobytes."""
    if receive_buffer is None:
        return connect(
            f"ws://{host}{path}", open_timeout=READ_TIMEOUT, close_timeout=CLOSE_TIMEOUT, proxy=None
        )
    address, port = host.rsplit(":", 1)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.connect((address, int(port)))
    return connect(
        f"ws://{host}{path}",
        sock=raw,
        open_timeout=READ_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        proxy=None,
        compression=None,
        max_queue=1,
    )


def receive(ws: ClientConnection, timeout: float = READ_TIMEOUT) -> Message:
    return json.loads(ws.recv(timeout=timeout))


def send(ws: ClientConnection, message: Message) -> None:
    ws.send(json.dumps(message))


def receive_until(
    ws: ClientConnection, done: Callable[[Message], bool], timeout: float = READ_TIMEOUT
) -> list[Message]:
    """Messages up to and including the first one for which `done` is true."""
    messages = []
    while not messages or not done(messages[-1]):
        messages.append(receive(ws, timeout))
    return messages


def receive_until_closed(ws: ClientConnection, timeout: float = READ_TIMEOUT) -> list[Message]:
    """Every message until the server closes the socket (a TimeoutError if it does not)."""
    messages = []
    try:
        while True:
            messages.append(receive(ws, timeout))
    except ConnectionClosed:
        return messages


def close_code(ws: ClientConnection) -> int | None:
    """The code the server closed with (after `receive_until_closed`)."""
    return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
