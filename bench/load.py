"""Concurrent load from `wrk`, the C load generator (Debian package `wrk`).

Why wrk and not Python threads: on a 2-core machine the client shares the CPU with the
server. A Python client spends more CPU per request than the floor app it measures, so
it would cap both servers at the client's own speed and squeeze every ratio towards 1.
wrk's event loop costs a few percent of one core at these rates, so the server, not the
client, sets the figure. Sequential latency probes use `client.HttpClient` instead, and
so does `post_many()`, for runs that need an exact number of requests rather than a rate
(wrk can stop sending after N, but then idles until its duration is over).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import HttpClient

# Prints one JSON line from `done()`.
_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = %(body)s
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "errors": %%d, "status_errors": %%d, ' ..
    '"p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int
    status_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "errors": self.errors,
            "status_errors": self.status_errors,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: `apt-get install wrk` (make bench does it)")
    return path


def post_load(
    url: str,
    body: dict[str, Any],
    *,
    seconds: int,
    connections: int = 16,
    timeout: int | None = None,
) -> LoadResult:
    """POST `body` to `url` from `connections` keep-alive connections for `seconds`
    (whole seconds: wrk takes no fractions). `timeout`: seconds before wrk counts a
    request as a timeout error (wrk's default: 2)."""
    script = _SCRIPT % {"body": _lua_string(json.dumps(body))}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "post.lua"
        path.write_text(script)
        options = [] if timeout is None else ["--timeout", f"{timeout}s"]
        completed = subprocess.run(
            [require_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", *options]
            + ["-s", str(path), url],
            capture_output=True,
            text=True,
            timeout=seconds + (timeout or 2) + 60,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    line = next(line for line in completed.stdout.splitlines() if line.startswith('{"requests"'))
    raw = json.loads(line)
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        errors=raw["errors"],
        status_errors=raw["status_errors"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def post_many(port: int, path: str, body: dict[str, Any], count: int, connections: int = 16) -> int:
    """POST `body` exactly `count` times over `connections` keep-alive connections;
    returns how many were answered 2xx."""
    share = [
        count // connections + (1 if n < count % connections else 0) for n in range(connections)
    ]

    def send(times: int) -> int:
        with HttpClient(port) as client:
            return sum(200 <= client.post(path, body).status < 300 for _ in range(times))

    with ThreadPoolExecutor(connections) as pool:
        return sum(pool.map(send, share))
