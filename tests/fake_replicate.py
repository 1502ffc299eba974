"""A loopback HTTP server that speaks Replicate's predictions protocol, scripted by tests.

Routes (under /v1, Bearer token required, as the real API):
  POST /v1/models/<owner>/<name>/predictions, POST /v1/predictions   create
  GET  /v1/predictions/<id>                                        poll
  POST /v1/predictions/<id>/cancel                                 cancel
and, without authentication, GET /files/<name> for output downloads.

A test scripts what successive polls return (`script`) and injects faults per route
(`fail`): an HTTP status, a delay longer than the client's timeout, a dropped connection,
or a malformed body. Every request is recorded with the time of the test's clock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeClock:
    """Monotonic time that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self._now = 1000.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
        time.sleep(0.001)  # let other threads (the test, the server) run


@dataclass
class Fault:
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0
    drop: bool = False


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


class FakeReplicate:
    token = "r8_test-secret-token-0123456789"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.requests: list[Recorded] = []
        self.predictions: dict[str, dict[str, Any]] = {}
        self.script: deque[dict[str, Any]] = deque()
        self.files: dict[str, bytes] = {}
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    def start(self) -> FakeReplicate:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, route: str, times: int = 1, **fault: Any) -> None:
        """The next `times` requests to `route` (create, get, cancel, file) misbehave."""
        self._faults[route].extend(Fault(**fault) for _ in range(times))

    def then(self, **state: Any) -> FakeReplicate:
        """What the next poll returns (fields merged into the prediction)."""
        self.script.append(state)
        return self

    def seen(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if _route(r.method, r.path) == route]

    # -- called by the handler --------------------------------------------------------

    def record(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, headers, body, self.clock.now()))

    def next_fault(self, route: str) -> Fault | None:
        with self._lock:
            faults = self._faults.get(route)
            return faults.popleft() if faults else None

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        route = _route(method, path)
        with self._lock:
            if route == "create":
                prediction_id = f"p{len(self.predictions) + 1}"
                model = path.removeprefix("/v1/models/").removesuffix("/predictions")
                prediction = {
                    "id": prediction_id,
                    "model": model if path.startswith("/v1/models/") else "",
                    "version": body.get("version", ""),
                    "input": body.get("input"),
                    "status": "starting",
                    "logs": "",
                    "output": None,
                    "error": None,
                    "created_at": "2026-01-01T00:00:00Z",
                    "urls": {
                        "get": f"{self.base_url}/predictions/{prediction_id}",
                        "cancel": f"{self.base_url}/predictions/{prediction_id}/cancel",
                    },
                }
                self.predictions[prediction_id] = prediction
                return 201, prediction
            prediction = self.predictions.get(path.split("/")[3])
            if prediction is None:
                return 404, {"title": "Not found", "detail": "no such prediction", "status": 404}
            if route == "cancel":
                prediction["status"] = "canceled"
            elif self.script:
                prediction.update(self.script.popleft())
            return 200, prediction


def _route(method: str, path: str) -> str:
    if path.startswith("/files/"):
        return "file"
    if method == "POST" and path.endswith("/cancel"):
        return "cancel"
    if method == "POST":
        return "create"
    return "get"


def _handler_for(fake: FakeReplicate) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            fake.record(method, self.path, dict(self.headers.items()), body)
            route = _route(method, self.path)
            fault = fake.next_fault(route)
            if fault is not None:
                return self._misbehave(fault)
            if route == "file":
                data = fake.files.get(self.path.removeprefix("/files/"))
                return self._send(200 if data is not None else 404, data or b"", "image/png")
            if self.headers.get("Authorization") != f"Bearer {fake.token}":
                return self._json(401, {"title": "Unauthenticated", "detail": "Invalid token."})
            self._json(*fake.answer(method, self.path, body))

        def _misbehave(self, fault: Fault) -> None:
            time.sleep(fault.delay)
            if fault.drop:
                self.close_connection = True
                return
            body = fault.body
            if body is None:
                body = json.dumps({"detail": f"injected {fault.status}"}).encode()
            self._send(fault.status, body, "application/json", fault.headers)

        def _json(self, status: int, document: Any) -> None:
            self._send(status, json.dumps(document).encode(), "application/json")

        def _send(
            self, status: int, body: bytes, content_type: str, headers: dict | None = None
        ) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting, as the timeout tests intend

    return Handler
