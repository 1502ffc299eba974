"""A small keep-alive HTTP client for sequential, individually timed requests.

`http.client` rather than `requests`: it adds the least of its own time to what is
measured, and each `HttpClient` is one persistent connection, as a browser would hold.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    seconds: float


class HttpClient:
    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Reply:
        return self.request("POST", path, json.dumps(body).encode())

    def request(self, method: str, path: str, payload: bytes | None = None) -> Reply:
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        started = time.perf_counter()
        self._connection.request(method, path, body=payload, headers=headers)
        response = self._connection.getresponse()
        raw = response.read()
        seconds = time.perf_counter() - started
        is_json = response.getheader("Content-Type", "").startswith("application/json")
        return Reply(response.status, json.loads(raw) if is_json else raw, seconds)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
