"""The worker threads that drain the queue, and how many of them there are.

The pool keeps between `minimum` (GENERATION_WORKERS) and `maximum`
(GENERATION_WORKERS_MAX) threads. `WorkerScaler` is the pure rule: add one thread when the
queue has had work waiting and no idle worker for `scale_up_after` seconds, and retire one
extra thread that has been idle for `idle_after` seconds. `WorkerPool.rebalance()` applies
the rule; the service calls it on every submit and on a periodic tick, with its clock, so
tests drive scaling by moving an injected clock instead of sleeping.

Each thread is named (`gen-worker-N`) and outlives any one bad job, like huey's workers.
A thread may own a helper child process (`gen-process-N`, for CPU-bound generators): the
thread starts it with its first CPU-bound job, stops it once it has been idle for
GENERATION_PROCESS_IDLE_SECONDS (waiting for a job no longer than that), and closes it when
the thread ends.

Lock invariant: `_lock` guards `_threads`, `_idle_since`, `_retiring` and `_numbers`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from ..job import Job
from ..queue.contract import JobQueue
from ..queue.pause import QueuePause
from .processes import WorkerProcess

log = logging.getLogger(__name__)

CLAIM_RETRY_SECONDS = 1.0
# How long a worker of a paused queue waits before it looks again (a resume in this
# process wakes it at once).
PAUSED_CHECK_SECONDS = 1.0


@dataclass
class WorkerScaler:
    minimum: int
    maximum: int
    scale_up_after: float
    idle_after: float
    backlog_since: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {self.minimum}, {self.maximum}")

    def decide(self, now: float, workers: int, queued: int, oldest_idle: float | None) -> int:
        """+1 to add a worker, -1 to retire an idle one, 0 to stay.

        `oldest_idle` is since when the longest-idle worker has waited (None: all busy).
        """
        backlog = queued > 0 and oldest_idle is None
        if not backlog:
            self.backlog_since = None
        elif self.backlog_since is None:
            self.backlog_since = now
        if backlog and workers < self.maximum and now - self.backlog_since >= self.scale_up_after:
            self.backlog_since = now  # the next thread needs another full period of backlog
            return 1
        if (
            workers > self.minimum
            and queued == 0
            and oldest_idle is not None
            and now - oldest_idle >= self.idle_after
        ):
            return -1
        return 0


class WorkerPool:
    def __init__(
        self,
        queue: JobQueue,
        process: Callable[[Job, WorkerProcess | None], None],
        scaler: WorkerScaler,
        clock: Callable[[], float],
        *,
        helper: Callable[[str], WorkerProcess | None] = lambda name: None,
        prefix: str = "",
        around: Callable[[], AbstractContextManager[Any]] = nullcontext,
        pause: QueuePause | None = None,
    ) -> None:
        """`process(job, helper)` runs a job the thread claimed; the `worker` column of
        a job says `<prefix><thread name>` (the prefix names the process in a cluster);
        each thread runs inside `around()` (e.g. a database connection of its own)."""
        self._queue = queue
        self._process = process
        self._helper = helper
        self._prefix = prefix
        self._around = around
        self._pause = pause
        self.scaler = scaler
        self._clock = clock
        self._threads: dict[str, threading.Thread] = {}
        self._idle_since: dict[str, float] = {}
        self._retiring: set[str] = set()
        self._numbers = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        for _ in range(self.scaler.minimum):
            self._spawn()

    @property
    def count(self) -> int:
        """Threads that take jobs (not counting ones told to retire)."""
        with self._lock:
            return len(self._threads) - len(self._retiring)

    @property
    def idle(self) -> int:
        """Threads waiting for a job."""
        with self._lock:
            return len(self._idle_since)

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads.values())

    def rebalance(self) -> int:
        """Apply the scaling rule once; returns the change in thread count."""
        if self._queue.closed:  # draining: the threads are on their way out
            return 0
        with self._lock:
            workers = len(self._threads) - len(self._retiring)
            idle = {n: t for n, t in self._idle_since.items() if n not in self._retiring}
            oldest = min(idle.values(), default=None)
            change = self.scaler.decide(self._clock(), workers, len(self._queue), oldest)
            if change < 0:
                self._retiring.add(min(idle, key=idle.__getitem__))
        if change > 0:
            self._spawn()
            log.info("queue backlog: added a worker (now %d)", self.count)
        elif change < 0:
            self._queue.wake()
            log.info("idle: retiring a worker (now %d)", self.count)
        return change

    def join(self, timeout: float | None) -> bool:
        """Wait for every thread to end, within `timeout` in all; True if they did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self.threads():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(thread.is_alive() for thread in self.threads())

    def _spawn(self) -> None:
        with self._lock:
            self._numbers += 1
            name = f"gen-worker-{self._numbers}"
        helper = self._helper(name)
        thread = threading.Thread(target=self._loop, args=(helper,), name=name, daemon=True)
        with self._lock:
            self._threads[name] = thread
        thread.start()

    def _claim(self, name: str, helper: WorkerProcess | None) -> Job | None:
        """The next job for this idle thread; None when told to stop, after a failure
        (the database is down: the job stays queued; look again in a moment), or when
        the helper process is due to retire (it then does)."""
        timeout = helper.retire_in() if helper is not None else None
        try:
            job = self._queue.claim(
                self._prefix + name,
                stop=lambda: name in self._retiring or self._paused(),
                timeout=timeout,
            )
            if job is None and helper is not None:
                helper.retire_if_idle()
            return job
        except Exception:  # noqa: BLE001 - the worker outlives a database outage
            log.exception(
                "worker %s could not claim a job; retrying in %ss", name, CLAIM_RETRY_SECONDS
            )
            time.sleep(CLAIM_RETRY_SECONDS)
            return None

    def _loop(self, helper: WorkerProcess | None) -> None:
        name = threading.current_thread().name
        try:
            with self._around():
                self._work(name, helper)
        finally:
            if helper is not None:
                helper.close()
            with self._lock:
                self._threads.pop(name, None)
                self._retiring.discard(name)
                self._idle_since.pop(name, None)

    def _paused(self) -> bool:
        """The queue is paused, or this machine drained: claim nothing meanwhile."""
        return self._pause is not None and self._pause.claims_held

    def _work(self, name: str, helper: WorkerProcess | None) -> None:
        while True:
            if self._paused():
                self._pause.wait_for_resume(PAUSED_CHECK_SECONDS)
                if self._queue.closed or name in self._retiring:
                    return
                continue
            with self._lock:
                self._idle_since[name] = self._clock()
            job = self._claim(name, helper)
            with self._lock:
                self._idle_since.pop(name, None)
            if job is None:
                if self._queue.closed or name in self._retiring:
                    return
                continue
            try:
                self._process(job, helper)
            except Exception:  # noqa: BLE001 - the worker outlives any one job
                log.exception("worker %s could not process job %s", name, job.id)
