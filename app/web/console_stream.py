"""The console's live stream (`/api/v1/admin/stream`, a WebSocket for admins): the
console's snapshot (ops/console.py) with its charts, pushed every PUSH_SECONDS.

A socket here is served like any other (sockets.py: it counts against
WS_MAX_CONNECTIONS and holds one thread), but what it sends is shared: the snapshot is
computed once per second for every console, and the charts once per new history sample.
Clients send nothing; a message from one is ignored.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Blueprint, current_app, request
from simple_websocket import Server
from sqlalchemy.exc import SQLAlchemyError

from ..generation.ops.console import Console
from ..wiring import get_service
from .auth import current_principal
from .charts import Series, line_chart
from .errors import ApiError
from .feed import Message
from .handshake import check_handshake
from .sockets import SocketSession, error_message
from .ws import sock

bp = Blueprint("console_stream", __name__, url_prefix="/api/v1/admin")
log = logging.getLogger(__name__)

PUSH_SECONDS = 2.0
CHART_WINDOW_SECONDS = 3600
CHART_MIN_SECONDS = 300


@bp.before_request
def admins_only() -> None:
    """401 without a key (keys mode), 403 for a key that is not an admin's, before the
    upgrade; then the socket waits for its turn to open (sockets.py)."""
    if not current_principal().admin:
        raise ApiError(403, "forbidden", "this call needs an admin key")
    check_handshake(request)
    current_app.extensions["sockets"].begin_opening()
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)  # as ws.py, and why


@bp.teardown_request
def end_opening(error: BaseException | None) -> None:
    current_app.extensions["sockets"].end_opening()


@sock.route("/stream", bp=bp)
def stream(ws: Server) -> None:
    """The console's snapshot now, then a fresh one every PUSH_SECONDS until the client
    leaves or the server shuts down."""
    charts: ChartCache = current_app.extensions["console_charts"]
    feed = ConsoleFeed(get_service(current_app).ops.console, charts)
    session = SocketSession(ws, feed, current_app.extensions["sockets"])  # type: ignore[arg-type]
    session.run(lambda _: [feed.message()], lambda _feed, _text: [], until_done=False)


def console_message(console: Console, charts: ChartCache) -> Message:
    """What the stream sends: the snapshot without its raw history, with its charts."""
    snapshot = console.snapshot()
    body = {key: value for key, value in snapshot.items() if key != "history"}
    return {"type": "console", **body, "charts": charts.render(snapshot)}


class ConsoleFeed:
    """What a console's socket waits on (the part of `feed.Feed` that SocketSession
    uses): the next push falling due, its client, or the server's shutdown (`wake`)."""

    following = True

    def __init__(self, console: Console, charts: ChartCache) -> None:
        self._console = console
        self._charts = charts
        self._woken = threading.Event()
        self._due = time.monotonic() + PUSH_SECONDS

    def message(self) -> Message:
        """The next push: the console, or an error while the database is unreachable
        (the socket stays open and the next push tries again)."""
        self._due = time.monotonic() + PUSH_SECONDS
        try:
            return console_message(self._console, self._charts)
        except SQLAlchemyError as error:
            log.warning("console stream: the database is unreachable: %s", error)
            return error_message(
                "database_unavailable", "the database is unavailable; retrying in a moment"
            )

    def wake(self) -> None:
        self._woken.set()

    def wait(self, timeout: float) -> list[Message]:
        remaining = self._due - time.monotonic()
        if remaining > 0:
            self._woken.wait(min(timeout, remaining))
            self._woken.clear()
        return [self.message()] if time.monotonic() >= self._due else []

    def close(self) -> None:
        """Nothing to release: the feed subscribes to nothing."""


class ChartCache:
    """The three charts of the latest history, rendered once per change of it (a new
    sample, or a new current depth) for every console of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._charts: dict[str, str] = {}

    def render(self, snapshot: dict[str, Any]) -> dict[str, str]:
        history = snapshot["history"]
        depth = snapshot["queue"]["depth"]
        now = round(snapshot["generated_at"])
        key = (history[-1]["at"] if history else None, len(history), tuple(depth.values()), now)
        with self._lock:
            if key != self._key:
                self._charts = render_charts(history, depth, now, snapshot["sample_seconds"])
                self._key = key
            return self._charts


def render_charts(
    history: list[dict[str, Any]], depth: dict[str, int], now: float, interval: float
) -> dict[str, str]:
    """Depth per priority (ending with the depth now), wait and run percentiles, and
    finished jobs per minute, over the last hour, or from the first sample if the
    history is younger (at least CHART_MIN_SECONDS), so a new service's charts fill
    their width."""
    first = history[0]["at"] - interval if history else now
    start = min(now - CHART_MIN_SECONDS, max(now - CHART_WINDOW_SECONDS, first))
    per_minute = 60 / interval

    def line(name: str, css: str, field: str, scale: float = 1.0) -> Series:
        points = [(s["at"], None if s[field] is None else s[field] * scale) for s in history]
        return Series(name, css, points)

    def depth_line(label: str) -> Series:
        points = [(s["at"], s[f"queued_{label}"]) for s in history] + [(now, depth[label])]
        return Series(f"queued {label}", label, points)

    return {
        "depth": line_chart(
            "Queued jobs per priority",
            [depth_line(p) for p in ("high", "normal", "low")],
            start,
            now,
        ),
        "latency": line_chart(
            "Wait and run time percentiles (seconds)",
            [
                line("wait p50", "wait50", "wait_p50"),
                line("wait p95", "wait95", "wait_p95"),
                line("run p50", "run50", "run_p50"),
                line("run p95", "run95", "run_p95"),
            ],
            start,
            now,
            unit=" s",
        ),
        "throughput": line_chart(
            "Jobs finished per minute",
            [
                line("succeeded", "succeeded", "succeeded", per_minute),
                line("failed", "failed", "failed", per_minute),
                line("cancelled", "cancelled", "cancelled", per_minute),
            ],
            start,
            now,
        ),
    }
