"""One webhook attempt: POST the signed body to the approved address and tell what came
back. Short timeouts, no redirects, no retries here (the outbox schedules them), and only
the first bytes of the receiver's answer are read and kept.

The standard library's `http.client` does the HTTP, connecting to the address the target
check approved while presenting the host's name (Host header, TLS SNI, the certificate
check), so a DNS answer cannot change between the check and the connection. Its timeouts
bound each socket operation, not the exchange: a receiver dripping one byte a second
would hold an attempt for as long as it liked. So each attempt also has a deadline, after
which a watchdog shuts its socket down; the outbox's claim outlives that deadline.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from dataclasses import dataclass

from .targets import Target

# How much of a receiver's answer is read, and kept (as the delivery's last_error).
SNIPPET_BYTES = 512
USER_AGENT = "generation-service-webhooks/1"


@dataclass(frozen=True)
class Answer:
    """What an attempt got: the HTTP status (None: no answer) and, unless delivered,
    what went wrong."""

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def attempt_deadline(connect_timeout: float, read_timeout: float) -> float:
    """The longest one attempt may take, in seconds, from connecting to the last byte."""
    return connect_timeout + read_timeout


def post(
    target: Target,
    body: bytes,
    headers: dict[str, str],
    *,
    connect_timeout: float,
    read_timeout: float,
) -> Answer:
    """POST `body` to `target.address` as `target.host`; never longer than
    `attempt_deadline(connect_timeout, read_timeout)`."""
    connection = _connection(target, connect_timeout)
    watchdog = _Watchdog(connection, attempt_deadline(connect_timeout, read_timeout))
    sent = headers | {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    try:
        connection.connect()
        connection.sock.settimeout(read_timeout)
        connection.request("POST", target.path, body=body, headers=sent)
        response = connection.getresponse()
        snippet = response.read(SNIPPET_BYTES)
    except (OSError, http.client.HTTPException) as error:
        return Answer(None, _describe(error, watchdog.fired))
    finally:
        watchdog.cancel()
        connection.close()
    return _answer(response.status, snippet)


class _Watchdog:
    """Shuts the connection's socket down once `seconds` have passed (unless cancelled):
    whatever the attempt is blocked on then fails at once."""

    def __init__(self, connection: http.client.HTTPConnection, seconds: float) -> None:
        self.fired = False
        self._connection = connection
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.name = "gen-webhook-deadline"
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self._connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: the attempt ended meanwhile

    def cancel(self) -> None:
        self._timer.cancel()


def _connection(target: Target, connect_timeout: float) -> http.client.HTTPConnection:
    """A connection to `target.host` whose socket goes to `target.address`."""
    if target.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, target.port, timeout=connect_timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=connect_timeout)

    def connect_to_the_checked_address(
        address: tuple[str, int], timeout: float, source: object = None
    ) -> socket.socket:
        return socket.create_connection((target.address, target.port), timeout)

    # http.client opens its socket through this attribute (then, for https, wraps it with
    # TLS for `host`): the one place to send it to the approved address.
    connection._create_connection = connect_to_the_checked_address  # type: ignore[attr-defined]
    return connection


def _answer(status: int, snippet: bytes) -> Answer:
    if 200 <= status < 300:
        return Answer(status)
    if 300 <= status < 400:
        # Followed, a redirect could lead anywhere the target check refused.
        return Answer(status, f"HTTP {status}: redirect not followed (webhooks never are)")
    text = snippet.decode("utf-8", "replace").strip()
    return Answer(status, f"HTTP {status}: {text}" if text else f"HTTP {status}")


def _describe(error: Exception, timed_out: bool) -> str:
    """An attempt's failure in a line, without the URL (its query may hold a token)."""
    kind = type(error).__name__
    if timed_out or isinstance(error, TimeoutError | socket.timeout):
        return f"{kind}: the receiver did not answer in time"
    if isinstance(error, ConnectionRefusedError):
        return f"{kind}: connection refused"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"{kind}: {error.verify_message}"
    return f"{kind}: {str(error)[:200]}"
