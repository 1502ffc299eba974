"""This process in the registry of running services (store/processes.py): reported at
start and every `interval` seconds (a third of a lease, like the lease heartbeat), removed
at a clean shutdown. A process that died stops reporting: operators see its heartbeat
age grow, and after PRUNE_AFTER any process removes its row."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from ..execution.ticker import Ticker
from ..store.processes import ProcessRecord, ProcessStore

log = logging.getLogger(__name__)

PRUNE_AFTER = timedelta(hours=1)


class ProcessRegistry:
    def __init__(
        self,
        store: ProcessStore,
        *,
        name: str,
        machine: str,
        clock: Callable[[], datetime],
        workers: Callable[[], int],
        interval: float,
    ) -> None:
        """`workers()` says how many worker threads this process has."""
        self._store = store
        self.name = name
        self.machine = machine
        self._clock = clock
        self._workers = workers
        self._started_at = clock()
        self._ticker = Ticker(self._beat, "gen-registry", every=interval, min_interval=interval)

    def start(self) -> None:
        self.report()
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop(timeout=5)
        try:
            self._store.forget(self.name)
        except SQLAlchemyError as error:  # the row goes silent and is pruned later
            log.warning("could not remove this process from the registry: %s", error)

    def _beat(self) -> None:
        try:
            self.report()
        except SQLAlchemyError as error:  # the next beat tries again
            log.warning("could not report this process to the registry: %s", error)

    def report(self) -> None:
        """Say this process is alive, with its workers; remove long-silent ones."""
        now = self._clock()
        record = ProcessRecord(self.name, self.machine, self._started_at, now, self._workers())
        self._store.report(record)
        self._store.prune(now - PRUNE_AFTER)
