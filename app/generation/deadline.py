"""Deadlines for runs: a timer for runs that can be stopped from outside, and a thread
of its own for a call that might never return.

`deadline_timer` suits a run that ends when asked, or that can be killed (a generator in a
worker process: cancelling it kills the process after a grace period).

`call_with_deadline` is for the rest. Python cannot stop a thread from outside, so the
call runs in a fresh thread while the
caller (a worker) waits for it; when the deadline passes, the caller asks the call to
stop (`on_expiry`, e.g. cancelling the job's token, which a well-behaved generator
notices at its next checkpoint) and waits a little longer. A call that still has not
returned is *abandoned*: the caller gets `DeadlineExceeded` and moves on, and the thread
runs to its end unobserved, then runs `on_late_return` (to clean up what it left behind).
An abandoned call still holds whatever memory and CPU it uses until it ends; that is the
limit of doing this with threads (docs/security.md).
"""

from __future__ import annotations

import contextvars
import threading
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


@contextmanager
def deadline_timer(seconds: float, on_expiry: Callable[[], None]) -> Iterator[None]:
    """Call `on_expiry()` (from a timer thread) if the block still runs after `seconds`."""
    timer = threading.Timer(seconds, on_expiry)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def call_with_deadline(
    target: Callable[[], T],
    *,
    seconds: float,
    grace: float,
    on_expiry: Callable[[], None],
    on_abandoned: Callable[[], None],
    on_late_return: Callable[[], None],
    name: str,
) -> T:
    """Return `target()`, or raise what it raised, or `DeadlineExceeded` if it takes more
    than `seconds` plus `grace` after `on_expiry()` asked it to stop. Then
    `on_abandoned()` runs at once, and `on_late_return()` whenever `target` returns."""
    call = _Call(target, on_late_return)
    # The caller's context variables (log fields, tracing scope) follow the call.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(call.run,), name=name, daemon=True).start()
    if not call.done.wait(seconds):
        on_expiry()
        if not call.done.wait(grace) and call.abandon(on_abandoned):
            raise DeadlineExceeded(seconds, abandoned=True)
    if call.error is not None:
        raise call.error
    return call.result  # type: ignore[return-value]
