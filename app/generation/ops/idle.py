"""Idle stop (IDLE_STOP_SECONDS): a process with nothing to do for that long exits, so the
machine it runs on stops costing money until the next request starts it again (Fly's
proxy does, with `auto_start_machines`).

Nothing to do means, continuously for `seconds`: no job queued or running anywhere on the
database (the whole cluster's, on PostgreSQL), no webhook delivery due within that time,
and nothing for the web tier of this process (no WebSocket open, no request but health
checks and metric scrapes; `local` says). Then, before it stops:

1. the admission gate closes (intake/gate.py): new submissions get 503 `unavailable`
   with Retry-After, and the ones already inside finish writing their rows;
2. it looks again. A job that got in meanwhile (here, or on another machine) cancels the
   stop: the gate reopens and the job runs. Otherwise `on_idle` stops the process (the
   server's hook: gunicorn's master gets SIGTERM and drains as on a deploy).

So a job submitted while a machine stops is either refused before its row is written, or
seen by that second look and run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from ..execution.ticker import Ticker
from ..intake.gate import AdmissionGate

log = logging.getLogger(__name__)

# How long the gate waits for the submissions inside it to write their rows.
ADMISSIONS_GRACE_SECONDS = 5.0
Busy = Callable[[], str | None]  # why there is something to do, or None


class IdleStop:
    def __init__(
        self,
        seconds: float,
        *,
        work_left: Busy,
        gate: AdmissionGate,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`work_left()` says what the cluster still has to do (or None)."""
        self.seconds = seconds
        self._work_left = work_left
        self._gate = gate
        self._clock = clock
        self._idle_since: float | None = None
        self.stopping = False
        # Set by the web tier and the server (app/idle.py): this process's own activity,
        # and how to stop it.
        self.local: Busy = lambda: None
        self.on_idle: Callable[[str], None] | None = None
        every = max(0.5, min(5.0, seconds / 4))
        self._ticker = Ticker(self.check, "gen-idle", every=every, min_interval=every)

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop(timeout=5)

    def idle_for(self) -> float:
        """Seconds this process has had nothing to do (0 while busy)."""
        since = self._idle_since
        return 0.0 if since is None else self._clock() - since

    def check(self) -> bool:
        """One look; True when it decided to stop (and called `on_idle`)."""
        on_idle = self.on_idle
        if self.stopping or on_idle is None:
            return False
        if self._busy() is not None:
            self._idle_since = None
            return False
        now = self._clock()
        if self._idle_since is None:
            self._idle_since = now
        if now - self._idle_since < self.seconds:
            return False
        if not self._nothing_arrived():
            return False
        self.stopping = True
        reason = f"idle for {self.seconds:g} s: no job queued or running, no socket, no request"
        log.warning("stopping this process: %s", reason, extra={"idle_stop": True})
        on_idle(reason)
        return True

    def _nothing_arrived(self) -> bool:
        """Close the admission gate and look again; reopen it (False) if work came."""
        settled = self._gate.close(
            "the machine is stopping: idle; retry shortly", ADMISSIONS_GRACE_SECONDS
        )
        busy = self._busy() if settled else "submissions still being written"
        if busy is None:
            return True
        log.info("idle stop called off: %s", busy)
        self._gate.reopen()
        self._idle_since = None
        return False

    def _busy(self) -> str | None:
        try:
            return self.local() or self._work_left()
        except SQLAlchemyError as error:  # cannot tell: not idle
            log.warning("idle stop: could not read the database: %s", error)
            return "the database did not answer"
