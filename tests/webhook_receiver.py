"""A webhook receiver on loopback, speaking plain HTTP as any receiver does: it records
every POST (headers, body, when) and answers as the test tells it (a status, a redirect,
or no answer at all)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


@dataclass(frozen=True)
class Message:
    headers: dict[str, str]
    body: bytes
    path: str
    at: float  # time.monotonic() when it arrived

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def verified(self, secret: str) -> dict:
        """The body, checked with the Standard Webhooks verifier (raises if it fails)."""
        return Webhook(secret).verify(self.body, self.headers)


class Receiver:
    """`answer(message)` returns a status, or a (status, headers) pair; `hang` keeps
    requests unanswered until `release()` (or `stop`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.messages: list[Message] = []
        self.answer: Callable[[Message], int | tuple[int, dict[str, str]]] = lambda m: 204
        self.hang = False
        self._released = threading.Event()
        self._arrived = threading.Condition()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks"

    def ids(self) -> list[str]:
        return [message.id for message in self.messages]

    def wait_for(self, count: int, timeout: float = 10) -> list[Message]:
        """The first `count` messages, once they have arrived."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.messages)} of {count} webhooks arrived")
                self._arrived.wait(left)
            return self.messages[:count]

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                message = Message(
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    self.path,
                    time.monotonic(),
                )
                with receiver._arrived:
                    receiver.messages.append(message)
                    receiver._arrived.notify_all()
                if receiver.hang:
                    receiver._released.wait(30)
                    return
                answer = receiver.answer(message)
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                """Quiet: the tests read `messages`."""

        return Handler


@contextmanager
def receiving(host: str = "127.0.0.1", port: int = 0) -> Iterator[Receiver]:
    receiver = Receiver(host, port)
    try:
        yield receiver
    finally:
        receiver.stop()
