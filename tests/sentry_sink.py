"""A loopback stand-in for Sentry's ingest: it receives the SDK's real envelopes."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sentry_sdk.envelope import Envelope

PROJECT = "42"


class EnvelopeSink:
    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self._server.server_address[1]}/{PROJECT}"

    def start(self) -> EnvelopeSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def items(self, kind: str) -> list[dict[str, Any]]:
        """Payloads of every received item of one type (`event`, `transaction`, ...)."""
        with self._lock:
            bodies = list(self.raw)
        return [
            item.payload.json
            for body in bodies
            for item in Envelope.deserialize(body).items
            if item.type == kind and item.payload.json is not None
        ]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with sink._lock:
                    sink.raw.append(body)
                    sink.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler
