"""Hooks into a job's life for whatever watches the service from outside the core.

Metrics, error tracking and log context implement `JobObserver` in their own modules
and are added with `service.observers.add(...)`; the core calls the hooks and never
imports what implements them.

Hooks run on the thread where the event happens (a request thread for `submitted` and
`rejected`, the job's worker thread for the rest), so they must be quick and must not
block. An exception in a hook is logged and otherwise ignored: watching a job must never
change what happens to it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time, hooks only pass jobs along
    from ..job import Job

log = logging.getLogger(__name__)


class JobObserver:
    """Every hook does nothing; subclasses override the ones they need."""

    def submitted(self, job: Job) -> None:
        """A job was accepted (its row is written)."""

    def rejected(self, reason: str) -> None:
        """A submission was refused: `queue_full`, `unavailable`, `invalid_params`,
        `too_many_jobs` or `idempotency_key_reused`."""

    @contextmanager
    def running(self, job: Job) -> Iterator[None]:
        """Wraps one run of a claimed job on its worker thread, up to its recorded outcome;
        `failed` and `finished` are called inside it."""
        yield

    def landed(self, job: Job, file: dict[str, Any], position: int) -> None:
        """A file of the running job was stored and announced (`output`): name, bytes,
        sha256, content_type; `position`: the order it landed in, from 0. (Files of a
        run that ends sooner are announced with its outcome, not here.)"""

    def failed(self, job: Job, error: BaseException) -> None:
        """The generator raised `error`; the job is about to be recorded as failed."""

    def finished(self, job: Job, outcome: str, run_seconds: float) -> None:
        """A run ended. `outcome` is the status it left the job in (`succeeded`, `failed`,
        `cancelled`, or `queued` when a shutdown put it back), or `lost` if another
        process took the job over meanwhile."""

    def expired(self, job: Job) -> None:
        """The retention sweep deleted the job's result."""


class ObserverSet(JobObserver):
    """Fans each hook out to the registered observers, isolating their failures.

    Observers are kept in a tuple replaced on `add`, so worker threads iterate a stable
    snapshot without taking a lock.
    """

    def __init__(self) -> None:
        self._observers: tuple[JobObserver, ...] = ()
        self._lock = threading.Lock()

    def add(self, observer: JobObserver) -> None:
        with self._lock:
            self._observers = (*self._observers, observer)

    def submitted(self, job: Job) -> None:
        self._each("submitted", job)

    def rejected(self, reason: str) -> None:
        self._each("rejected", reason)

    @contextmanager
    def running(self, job: Job) -> Iterator[None]:
        # The body (JobRunner.run) never raises, so each observer's exit is a normal one.
        with ExitStack() as stack:
            for observer in self._observers:
                try:
                    manager = observer.running(job)
                    manager.__enter__()
                except Exception:  # noqa: BLE001 - see the module docstring
                    log.exception("observer %r failed entering a run", observer)
                    continue
                stack.callback(_leave, observer, manager)
            yield

    def landed(self, job: Job, file: dict[str, Any], position: int) -> None:
        self._each("landed", job, file, position)

    def failed(self, job: Job, error: BaseException) -> None:
        self._each("failed", job, error)

    def finished(self, job: Job, outcome: str, run_seconds: float) -> None:
        self._each("finished", job, outcome, run_seconds)

    def expired(self, job: Job) -> None:
        self._each("expired", job)

    def _each(self, hook: str, *args: object) -> None:
        for observer in self._observers:
            try:
                getattr(observer, hook)(*args)
            except Exception:  # noqa: BLE001 - see the module docstring
                log.exception("observer %r failed in %s", observer, hook)


def _leave(observer: JobObserver, manager: AbstractContextManager[None]) -> None:
    try:
        manager.__exit__(None, None, None)
    except Exception:  # noqa: BLE001 - see the module docstring
        log.exception("observer %r failed leaving a run", observer)
