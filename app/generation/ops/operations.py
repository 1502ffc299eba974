"""The operators' side of one service: its row in the registry of services, the queue's
history, the console's snapshot and the actions beyond pause and cancel. Built and
started by the service (service.py), used by app/web/admin.py and app/web/console.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from ..events.bus import EventBus
from ..execution.ticker import Ticker
from ..forecast.outlook import Outlook
from ..intake.gate import AdmissionGate
from ..job import Priority
from ..queue.contract import JobQueue
from ..queue.pause import QueuePause
from ..store.deliveries import DeliveryStore
from ..store.jobs import JobStore
from ..store.overview import JobOverview
from ..store.processes import ProcessStore
from ..store.queue_state import QueueStateStore
from ..store.samples import SampleStore
from .console import Console, ConsoleFacts, ConsoleSources
from .history import QueueHistory
from .idle import IdleStop
from .registry import ProcessRegistry
from .steering import QueueSteering

log = logging.getLogger(__name__)


class Operations:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        outlook: Outlook,
        bus: EventBus,
        *,
        pause: QueuePause,
        states: QueueStateStore,
        deliveries: DeliveryStore,
        name: str,
        machine: str,
        clock: Callable[[], datetime],
        workers: Callable[[], int],
        result_ttl: timedelta | None,
        gate: AdmissionGate,
        idle_stop_seconds: float = 0.0,
    ) -> None:
        """`workers()` says how many worker threads this service has; `gate` is its
        admissions' (an idle stop closes it); with `idle_stop_seconds`, `idle` is the
        IdleStop the server starts (app/idle.py)."""
        processes = ProcessStore(store.engine, store.writing)
        overview = JobOverview(store.engine)
        depth: Callable[[], dict[Priority, int]] = queue.depth_by_priority
        self.history = QueueHistory(
            SampleStore(store.engine, store.writing), overview, depth, clock
        )
        beat = store.lease.total_seconds() / 3  # as often as the lease heartbeat
        self.registry = ProcessRegistry(
            processes, name=name, machine=machine, clock=clock, workers=workers, interval=beat
        )
        self.steering = QueueSteering(
            store,
            queue,
            outlook,
            bus,
            states=states,
            processes=processes,
            pause=pause,
            clock=clock,
        )
        self.console = Console(
            ConsoleSources(
                store, overview, processes, states, deliveries, self.history, pause, depth
            ),
            ConsoleFacts(
                process=name,
                machine=machine,
                shared=queue.shared,
                capacity=queue.capacity,
                aging_seconds=queue.aging_seconds,
                result_ttl=result_ttl,
                silent_after=store.lease.total_seconds(),
            ),
            clock,
        )
        # Look for a finished interval twice per interval: its sample is at most half an
        # interval late, and a process that finds it written by another does nothing.
        self.idle: IdleStop | None = None
        if idle_stop_seconds > 0:
            self.idle = IdleStop(
                idle_stop_seconds,
                work_left=_work_left(overview, deliveries, clock, idle_stop_seconds),
                gate=gate,
            )
        half = self.history.interval / 2
        self._sampler = Ticker(
            lambda: _quietly(self.history.sample, "sample the queue's history"),
            "gen-history",
            every=half,
            min_interval=half,
        )

    def start(self) -> None:
        self.registry.start()
        self._sampler.start()

    def stop(self) -> None:
        if self.idle is not None:
            self.idle.stop()
        self._sampler.stop(timeout=5)
        self.registry.stop()


def _work_left(
    overview: JobOverview,
    deliveries: DeliveryStore,
    clock: Callable[[], datetime],
    within: float,
) -> Callable[[], str | None]:
    """What the cluster still has to do, as an idle stop asks: jobs queued or running
    anywhere, or webhook deliveries due before the process would be back."""

    def work_left() -> str | None:
        if overview.any_unfinished():
            return "jobs queued or running"
        due = deliveries.next_due()
        if due is not None and due <= clock() + timedelta(seconds=within):
            return "webhook deliveries due"
        return None

    return work_left


def _quietly(step: Callable[[], object], what: str) -> None:
    """Run a background step; a database outage is a warning, not a traceback every few
    seconds (the next step tries again; nothing of a job depends on it)."""
    try:
        step()
    except SQLAlchemyError as error:
        log.warning("could not %s: %s", what, error)
