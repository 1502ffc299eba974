"""Idle stop wired into the server (the policy is the core's: generation/ops/idle.py).

The core knows the cluster's jobs; this adds what only the web tier knows (open
WebSockets, requests that are not probes) and how the server stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask

from .generation.ops.idle import IdleStop
from .web.inflight import InFlightCounter
from .web.sockets import SocketRegistry
from .wiring import get_service


def arm_idle_stop(app: Flask, *, stop: Callable[[str], None]) -> IdleStop | None:
    """Start `app`'s idle stop (if IDLE_STOP_SECONDS is set), calling `stop(reason)` once
    the process has had nothing to do for that long."""
    service = get_service(app)
    idle = service.ops.idle
    if idle is None:
        return None

    def stop_unless_stopping(reason: str) -> None:
        if service.accepting:  # not when a deploy's SIGTERM already drains it
            stop(reason)

    idle.local = local_activity(app.extensions["inflight"], app.extensions["sockets"])
    idle.on_idle = stop_unless_stopping
    idle.start()
    return idle


def local_activity(requests: InFlightCounter, sockets: SocketRegistry) -> Callable[[], str | None]:
    """Why this process's web tier is busy, or None: an open WebSocket, a request being
    answered, or one since the previous look. Health checks and metric scrapes do not
    count (Fly's arrive every 15 s)."""
    looked_at = time.monotonic()

    def busy() -> str | None:
        nonlocal looked_at
        since, looked_at = looked_at, time.monotonic()
        if len(sockets):
            return f"{len(sockets)} WebSockets open"
        if requests.working:
            return "requests being answered"
        if requests.last_work_at >= since:
            return "a request since the last look"
        return None

    return busy
