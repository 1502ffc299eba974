"""One LISTEN connection per process, kept alive by itself.

PostgreSQL delivers a `NOTIFY` to every session listening on its channel once the
sending transaction commits. `PgListener` owns one dedicated autocommit connection (not
from the pool: a pooled connection would be handed to someone else), LISTENs on the
channels its users registered, and calls their handlers on its own thread.

When the connection drops (database restart, failover, network) it says so through
`connected`, so users fall back to polling, and reconnects with backoff by itself; after
each reconnect it calls the `on_reconnect` handlers so users can catch up on what they
missed. An idle connection is probed every PROBE_SECONDS, so a half-open socket is
noticed too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine

from .listener import Listener

log = logging.getLogger(__name__)

PROBE_SECONDS = 5.0
WAKE_SECONDS = 0.25
RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)


class PgListener(Listener):
    def __init__(self, engine: Engine, *, name: str = "gen-listener") -> None:
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._connect_args: tuple[Any, ...] = tuple(args)
        self._connect_kwargs: dict[str, Any] = dict(kwargs) | {"autocommit": True}
        self._handlers: dict[str, list[Callable[[str], None]]] = {}
        self._reconnect_handlers: list[Callable[[], None]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.connected = False
        self.connections = 0

    def on(self, channel: str, handler: Callable[[str], None]) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    def on_reconnect(self, handler: Callable[[], None]) -> None:
        self._reconnect_handlers.append(handler)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(WAKE_SECONDS + 5)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                with psycopg.connect(*self._connect_args, **self._connect_kwargs) as connection:
                    failures = 0
                    self._listen(connection)
            except psycopg.Error as error:
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                if self.connected or failures == 1:
                    log.warning("notification connection lost (%s); polling meanwhile", error)
                self.connected = False
                self._stopping.wait(delay)
        self.connected = False

    def _listen(self, connection: psycopg.Connection[Any]) -> None:
        for channel in self._handlers:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        if self.connections:
            log.info("notification connection restored")
        self.connected = True
        self.connections += 1
        self._call(self._reconnect_handlers)
        alive_at = time.monotonic()
        while not self._stopping.is_set():
            for notify in connection.notifies(timeout=WAKE_SECONDS):
                alive_at = time.monotonic()
                for handler in self._handlers.get(notify.channel, ()):
                    self._call([lambda h=handler, p=notify.payload: h(p)])
            if time.monotonic() - alive_at >= PROBE_SECONDS:
                connection.execute("SELECT 1")
                alive_at = time.monotonic()

    @staticmethod
    def _call(handlers: list[Callable[[], None]]) -> None:
        for handler in handlers:
            try:
                handler()
            except Exception:  # noqa: BLE001 - a bad handler must not silence the others
                log.exception("notification handler failed")
