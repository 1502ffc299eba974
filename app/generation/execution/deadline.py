"""Deadlines for runs: a timer for runs that can be stopped from outside, and a thread
of their own for calls that might never return.

`deadline_timer` suits a run that ends when asked, or that can be killed (a generator in a
worker process: cancelling it kills the process after a grace period). All timers share
one thread and a heap of due times, started on first use.

`call_with_deadline` is for the rest. Python cannot stop a thread from outside, so the
call runs in another thread while the caller (a worker) waits for it; when the deadline
passes, the caller asks the call to stop (`on_expiry`, e.g. cancelling the job's token,
which a well-behaved generator notices at its next checkpoint) and waits a little longer.
A call that still has not returned is *abandoned*: the caller gets `DeadlineExceeded` and
moves on, and the thread runs to its end unobserved, then runs `on_late_return` (to clean
up what it left behind) and exits. An abandoned call still holds whatever memory and CPU
it uses until it ends; that is the limit of doing this with threads (docs/security.md).

The other thread is long-lived: each caller thread has one runner thread (made on its
first call, and again after an abandonment), which takes the caller's calls one at a
time. Starting a thread per call cost as much as a `noop` job's two UPDATEs. A runner
exits right after an abandoned call, and when its caller thread ends: at once and joined
at the end of a `runner_thread_scope` block (a worker thread's life, so a service that
shut down leaves none behind), else once the caller's runner object is collected.
"""

from __future__ import annotations

import contextvars
import functools
import heapq
import itertools
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):  # noqa: N818 - reads as an outcome, like TimeoutError
    """The call did not return in time, not even after it was asked to stop."""

    def __init__(self, seconds: float, abandoned: bool) -> None:
        state = "its thread was abandoned" if abandoned else "it stopped when asked"
        super().__init__(f"did not finish within {seconds:g} seconds; {state}")
        self.seconds = seconds
        self.abandoned = abandoned


class _Call(Generic[T]):
    """One call's outcome, handed from its thread to the waiting caller."""

    def __init__(self, target: Callable[[], T], on_late_return: Callable[[], None]) -> None:
        self._target = target
        self._on_late_return = on_late_return
        self._lock = threading.Lock()
        self.done = threading.Event()
        self.abandoned = False
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._target()
        except BaseException as error:  # noqa: BLE001 - handed to the caller to re-raise
            self.error = error
        with self._lock:
            self.done.set()
            abandoned = self.abandoned
        if abandoned:
            self._on_late_return()

    def abandon(self, on_abandoned: Callable[[], None]) -> bool:
        """Mark the call abandoned unless it finished meanwhile; True if it was.

        `on_abandoned` runs under the lock, so it always runs before `on_late_return`."""
        with self._lock:
            self.abandoned = not self.done.is_set()
            if self.abandoned:
                on_abandoned()
            return self.abandoned


class _Timers:
    """One thread that calls each due callback; `cancel` is O(1) (entries are skipped)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, list[Callable[[], None] | None]]] = []
        self._numbers = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, seconds: float, callback: Callable[[], None]) -> list[Callable[[], None] | None]:
        """Call `callback` in `seconds`; clear the returned cell's item to cancel."""
        cell: list[Callable[[], None] | None] = [callback]
        with self._changed:
            if self._thread is None or not self._thread.is_alive():  # first use, or forked
                self._thread = threading.Thread(target=self._loop, name="gen-timers", daemon=True)
                self._thread.start()
            heapq.heappush(self._due, (time.monotonic() + seconds, next(self._numbers), cell))
            if self._due[0][2] is cell:
                self._changed.notify()
        return cell

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._changed.wait(wait)
                _, _, cell = heapq.heappop(self._due)
                callback, cell[0] = cell[0], None
            if callback is not None:
                callback()


_timers = _Timers()


@contextmanager
def deadline_timer(seconds: float, on_expiry: Callable[[], None]) -> Iterator[None]:
    """Call `on_expiry()` (from the timer thread) if the block still runs after `seconds`."""
    cell = _timers.add(seconds, on_expiry)
    try:
        yield
    finally:
        cell[0] = None


class _Runner:
    """A caller thread's runner thread; when the runner object goes (its caller thread
    ended), the thread is told to exit."""

    def __init__(self, name: str) -> None:
        self.calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=_serve, args=(self.calls,), name=name, daemon=True)
        self._thread.start()
        self._exit = weakref.finalize(self, self.calls.put, None)

    def retire(self) -> None:
        """Exit after the call in progress (abandoned: it may never return)."""
        self.calls.put(None)

    def close(self) -> None:
        """Exit now and wait for the thread; only between calls, so it is idle."""
        self._exit()
        self._thread.join()


def _serve(calls: queue.SimpleQueue[Callable[[], None] | None]) -> None:
    while (call := calls.get()) is not None:
        call()
        # Not held while waiting for the next call: it holds its outcome, and an error's
        # traceback holds every frame of the run (with its locals) and the caller's.
        del call


_runners = threading.local()


@contextmanager
def runner_thread_scope() -> Iterator[None]:
    """The calling thread's runner thread, if `call_with_deadline` made one inside the
    block, has exited when the block does (an abandoned one runs on until its call ends)."""
    try:
        yield
    finally:
        runner, _runners.runner = getattr(_runners, "runner", None), None
        if runner is not None:
            runner.close()


def call_with_deadline(
    target: Callable[[], T],
    *,
    seconds: float,
    grace: float,
    on_expiry: Callable[[], None],
    on_abandoned: Callable[[], None],
    on_late_return: Callable[[], None],
) -> T:
    """Return `target()`, or raise what it raised, or `DeadlineExceeded` if it takes more
    than `seconds` plus `grace` after `on_expiry()` asked it to stop. Then
    `on_abandoned()` runs at once, and `on_late_return()` whenever `target` returns."""
    call = _Call(target, on_late_return)
    runner = getattr(_runners, "runner", None)
    if runner is None:
        runner = _runners.runner = _Runner(f"{threading.current_thread().name}-calls")
    # The caller's context variables (log fields, tracing scope) follow the call.
    context = contextvars.copy_context()
    runner.calls.put(functools.partial(context.run, call.run))
    if not call.done.wait(seconds):
        on_expiry()
        if not call.done.wait(grace) and call.abandon(on_abandoned):
            _runners.runner = None
            runner.retire()
            raise DeadlineExceeded(seconds, abandoned=True)
    if call.error is None:
        return call.result  # type: ignore[return-value]
    # The error's traceback keeps this frame, so not the call (a cycle back to the error)
    # nor the runner: its thread would wait for the cycle's collection to be told to exit.
    error = call.error
    del call, runner
    raise error
