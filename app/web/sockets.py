"""Serving WebSockets: the handler-thread loop, the registry of open sockets, close codes.

Threads. Under gunicorn's gthread worker every open socket holds one pool thread (its
handler, running `SocketSession.run`) and one simple-websocket reader thread (which
answers pings and sends its own every `WS_PING_INTERVAL` seconds, dropping a client that
stops answering). The handler is the only thread that sends data frames: `ws.send` is
not thread-safe, and the reader's control frames share no state with data frames.

Opening a socket (routing, the handshake, starting the reader thread, the snapshot's
query) is the costliest thing a socket does, and clients reconnect together (after a
deploy, say): sockets open one at a time (`SocketRegistry.begin_opening`), so a burst of
handshakes queues on a lock instead of on the GIL, where every HTTP request would wait
behind it (docs/performance.md has the figures).

The handler sleeps in `Feed.wait()` and wakes for exactly three reasons: an event for a
job it follows (or a paced update falling due), input or a disconnect from its client
(`InputSignal` below), or `SocketRegistry.close_all()` at shutdown. A slow timeout backs
all three up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from simple_websocket import ConnectionClosed, Server

from .feed import Feed, Message

log = logging.getLogger(__name__)

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
# Application close codes (4000-4999), mirroring the HTTP status a REST call would get.
BAD_REQUEST = 4400
NOT_FOUND = 4404

# A backstop only: every reason to wake also wakes the handler directly.
IDLE_CHECK_SECONDS = 5.0
# Client messages handled per turn, so a chatty client cannot starve its own events.
INPUT_PER_TURN = 32
# How long a closing handler waits for the client's close frame (the closing handshake).
CLOSE_REPLY_SECONDS = 2.0
# Sockets opening at once (handshake to first message); the others wait without the GIL.
OPENING_AT_ONCE = 1


class InputSignal(threading.Event):
    """The event simple-websocket sets when a message arrives or the connection ends
    (passed to it as `event_class`). Setting it also calls `listener`, so a handler
    waiting on its feed wakes for its client too, without polling."""

    listener: Callable[[], None] | None = None

    def set(self) -> None:
        super().set()
        listener = self.listener
        if listener is not None:
            listener()


class ReaderThread(threading.Thread):
    """simple-websocket's reader thread (passed to it as `thread_class`), as a daemon:
    one still waiting on a client that vanished must not hold up the process's exit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, daemon=True, **kwargs)


class SocketRegistry:
    """The open sockets of this process: at most `capacity`, all closed by `close_all()`.

    Capping sockets below the thread budget is what keeps HTTP answering: each socket
    holds a thread for as long as it is open.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._wakers: set[Callable[[], None]] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._opening = threading.BoundedSemaphore(OPENING_AT_ONCE)
        self._turn = threading.local()

    def begin_opening(self) -> None:
        """Wait for a turn to open a socket (a handshake, up to its first message).

        Opening costs a few milliseconds of CPU (routing, the handshake, a reader thread,
        the snapshot's query); hundreds of clients reconnecting at once would otherwise
        all hold the GIL in turn, and a /health request would wait behind each of them.
        Waiting here, a thread sleeps on a lock and leaves the GIL to HTTP."""
        self._opening.acquire()
        self._turn.held = True

    def end_opening(self) -> None:
        """Give the turn back (idempotent: called when the socket is open and again when
        its request ends, in case the handshake failed before that)."""
        if getattr(self._turn, "held", False):
            self._turn.held = False
            self._opening.release()

    def admit(self, wake: Callable[[], None]) -> bool:
        """Register an opening socket; False when full or shutting down."""
        with self._lock:
            if self._closing or len(self._wakers) >= self.capacity:
                return False
            self._wakers.add(wake)
            return True

    def release(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wakers.discard(wake)

    @property
    def closing(self) -> bool:
        return self._closing

    def close_all(self) -> None:
        """Ask every open socket to say goodbye (`server_restarting`, close 1001) and
        refuse new ones. Returns at once; each handler closes its own socket."""
        with self._lock:
            self._closing = True
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def __len__(self) -> int:
        with self._lock:
            return len(self._wakers)


class CloseWithError(Exception):
    """Raised while serving a socket: tell the client what is wrong, then close."""

    def __init__(self, code: str, message: str, close_code: int, job_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code
        self.job_id = job_id

    def payload(self) -> Message:
        return error_message(self.code, self.message, self.job_id)


def error_message(code: str, message: str, job_id: str | None = None) -> Message:
    """The protocol's error message; the `error` object has the HTTP API's shape."""
    where = {"job_id": job_id} if job_id else {}
    return {"type": "error", **where, "error": {"code": code, "message": message}}


Start = Callable[[Feed], list[Message]]
OnInput = Callable[[Feed, str], list[Message]]


class SocketSession:
    """One open socket: its feed, and the loop its handler thread runs until it closes."""

    def __init__(self, ws: Server, feed: Feed, registry: SocketRegistry) -> None:
        self.ws = ws
        self.feed = feed
        self._registry = registry
        if isinstance(ws.event, InputSignal):
            ws.event.listener = feed.wake

    def run(self, start: Start, on_input: OnInput, *, until_done: bool) -> None:
        """Send `start(feed)`'s messages, then events, until the client leaves, the server
        shuts down or (`until_done`) every followed job has finished. Client messages go
        to `on_input`. Never raises: whatever happens ends in a closed socket."""
        admitted = self._registry.admit(self.feed.wake)
        try:
            if not admitted:
                self._registry.end_opening()
                raise CloseWithError(
                    "unavailable", "too many open sockets; retry shortly", TRY_AGAIN_LATER
                )
            try:
                first = start(self.feed)
            finally:
                self._registry.end_opening()
            self._send_all(first)
            self._loop(on_input, until_done)
        except CloseWithError as error:
            self._close_quietly(error.close_code, error.code, error.payload())
        except (ConnectionClosed, OSError):
            pass  # the client went away; nothing to tell it
        except Exception:  # noqa: BLE001 - a broken socket must not become an HTTP 500
            log.exception("WebSocket handler failed")
            self._close_quietly(INTERNAL_ERROR, "internal error")
        finally:
            if admitted:
                self._registry.release(self.feed.wake)
            self.feed.close()

    def _loop(self, on_input: OnInput, until_done: bool) -> None:
        while True:
            if self._registry.closing:
                self._send({"type": "server_restarting", "reconnect": True})
                self._close(GOING_AWAY, "server restarting")
                return
            for text in self._inbox():
                self._send_all(on_input(self.feed, text))
            if not self.ws.connected:
                return
            if until_done and not self.feed.following:
                self._close(NORMAL_CLOSURE, "done")
                return
            self._send_all(self.feed.wait(IDLE_CHECK_SECONDS))

    def _inbox(self) -> Iterator[str]:
        for _ in range(INPUT_PER_TURN):
            data = self.ws.receive(timeout=0)
            if data is None:
                return
            yield data if isinstance(data, str) else data.decode("utf-8", "replace")

    def _send(self, message: Message) -> None:
        self.ws.send(json.dumps(message, separators=(",", ":")))

    def _send_all(self, messages: list[Message]) -> None:
        for message in messages:
            self._send(message)

    def _close(self, code: int, reason: str) -> None:
        """The closing handshake: send a close frame, give simple-websocket's reader a
        moment to take the client's answer, then end our side of TCP, as RFC 6455 (7.1.1)
        has the server do. Without that, a server that reads the socket to its end before
        closing it (werkzeug's) waits until the client gives up."""
        self.ws.close(code, reason)
        reader = getattr(self.ws, "thread", None)
        if reader is not None and reader is not threading.current_thread():
            reader.join(CLOSE_REPLY_SECONDS)
        with contextlib.suppress(OSError):  # the reader has already closed the socket
            self.ws.sock.shutdown(socket.SHUT_WR)

    def _close_quietly(self, code: int, reason: str, last_words: Message | None = None) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):  # the peer is already gone
            if last_words is not None:
                self._send(last_words)
            self._close(code, reason)
