"""A graceful drain on SIGTERM, for servers that are stopped by a signal.

From the moment `begin()` is called (by gunicorn.conf.py's SIGTERM handler):
at once, the service stops accepting jobs, so `/ready` answers 503 and submissions get
503 `unavailable` with `Retry-After`; running jobs get `timeout` seconds to finish;
whatever still runs then is interrupted at its next checkpoint and put back in the
queue, durably, for the next process on the same database; queued jobs stay queued.

The work happens on a thread started in advance (`arm()`): a signal handler should only
set flags (see huey's consumer), and this drain must keep time even while gunicorn's
main thread waits for open requests.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

# Not from .generation.service: the gunicorn master imports this module for its
# settings and should not import the service (SQLAlchemy and all) to read one number.
from .generation.execution.timeouts import SHUTDOWN_GRACE_SECONDS

if TYPE_CHECKING:
    from .generation import GenerationService


def longest_drain(timeout: float) -> float:
    """The most seconds a drain with this deadline can take: the deadline, then the
    interrupted jobs' grace to reach a checkpoint."""
    return timeout + SHUTDOWN_GRACE_SECONDS


class Drain:
    def __init__(self, service: GenerationService, timeout: float) -> None:
        self.timeout = timeout
        self._service = service
        self._requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gen-drain", daemon=True)

    def arm(self) -> None:
        """Start the thread that carries out the drain once `begin()` is called."""
        self._thread.start()

    def begin(self) -> None:
        """Start draining now. Only flips flags, so it is safe in a signal handler."""
        self._service.stop_accepting()
        self._requested.set()

    def finish(self) -> None:
        """Return once the service is shut down. Without a drain begun (a quick exit),
        shut down at once: running jobs are put back in the queue right away."""
        if self._requested.is_set() and self._thread.is_alive():
            self._thread.join(longest_drain(self.timeout))
        else:
            self._service.shutdown(wait=True, timeout=0)

    def _run(self) -> None:
        self._requested.wait()
        self._service.shutdown(wait=True, timeout=self.timeout)
