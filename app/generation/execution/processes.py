"""Worker processes: where CPU-bound generators run, so they never hold the web's GIL.

Each worker thread of the service owns one child process, started with the 'spawn'
method (forking a process that runs threads can copy a held lock into the child) when
its first CPU-bound job comes (a service that never runs one starts none: a child costs
tens of MB), and drives it over a duplex pipe, one job at a time. A child left idle for
`idle_seconds` (GENERATION_PROCESS_IDLE_SECONDS) is asked to exit by its thread, so an
idle service returns to its idle memory; the next CPU-bound job starts a new one.

The messages on the pipe:

    parent -> child   (generator, params)        run a job; None: exit
    child  -> parent  ("progress", Progress)     whenever the generator reports progress
                      ("preview", data, type)    whenever it offers a preview (throttled
                                                 by the parent's context)
                      ("file", OutputFile)       each output file, in order
                      ("done",) | ("cancelled",) | ("error", message, traceback | None)

A child gets a CPU only when no normal task wants one (`run_below_the_web`). Progress
and files are handed to the parent's `GeneratorContext` and result store as they arrive,
so the ZIP is written while the child works. Cancellation crosses the boundary as a
shared Event that the child's `check_cancelled()` reads; a child that ignores it for
`cancel_grace` seconds is killed. A child that dies fails only the job it was running
(its thread is the only one that talks to it) and is replaced before the next job.

Why not `concurrent.futures.ProcessPoolExecutor`: one dead worker breaks the whole pool
and fails every job in it, it has no channel for progress or cancellation, and it cannot
stop one task. One child per worker thread keeps every failure attributable to one job.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Iterator, Mapping
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from typing import Any

from ..errors import GeneratorError, JobCancelled
from ..generators.base import Generator, GeneratorContext, OutputFile
from ..job import Progress
from ..settings import DEFAULT_IDLE_SECONDS

log = logging.getLogger(__name__)

START_METHOD = "spawn"
CANCEL_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.05
# Where SCHED_IDLE is missing (not Linux) or refused, children run at the lowest niceness.
FALLBACK_NICENESS = 19


class WorkerProcess:
    """One child process, driven by exactly one thread (methods are not thread-safe).
    Constructing it starts nothing: `run()` starts the child when it has none."""

    def __init__(
        self,
        name: str,
        *,
        cancel_grace: float = CANCEL_GRACE_SECONDS,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
    ) -> None:
        """`idle_seconds` 0 keeps a started child until `close()`."""
        self.name = name
        self._cancel_grace = cancel_grace
        self.idle_seconds = idle_seconds
        self._used_at = 0.0
        self._mp = multiprocessing.get_context(START_METHOD)
        self._process: SpawnProcess | None = None
        self._conn: Connection | None = None
        self._cancel: Event | None = None
        self._cancel_deadline: float | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def retire_in(self) -> float | None:
        """Seconds until the running child has been idle for `idle_seconds` (0 if it
        has); None if there is no child or it never retires."""
        if self._process is None or not self.idle_seconds:
            return None
        return max(0.0, self._used_at + self.idle_seconds - time.monotonic())

    def retire_if_idle(self) -> bool:
        """Close the child if it has been idle for `idle_seconds`; True if it was."""
        if self.retire_in() != 0.0:
            return False
        log.info("%s idle for %gs; stopping it", self.name, self.idle_seconds)
        self.close()
        return True

    def start(self) -> None:
        """Start the child (it imports in the background; the first job waits for it)."""
        parent_end, child_end = self._mp.Pipe()
        cancel = self._mp.Event()
        process = self._mp.Process(
            target=child_main, args=(child_end, cancel), name=self.name, daemon=True
        )
        process.start()
        run_below_the_web(process.pid)  # from here, not the child: its imports count too
        child_end.close()  # so that the child's death reads as EOF here
        self._process, self._conn, self._cancel = process, parent_end, cancel
        self._used_at = time.monotonic()

    def run(
        self, generator: Generator, params: Mapping[str, Any], context: GeneratorContext
    ) -> Iterator[OutputFile]:
        """Run one job in the child, relaying its progress to `context` and yielding its
        files; raises as `generator.run` would (JobCancelled, GeneratorError)."""
        if self._process is None or not self._process.is_alive():
            self._discard()
            self.start()
        assert self._conn is not None and self._cancel is not None
        self._cancel.clear()
        self._cancel_deadline = None
        try:
            self._conn.send((generator, dict(params)))
        except (BrokenPipeError, ConnectionResetError):
            raise self._died() from None
        outcome = None
        try:
            while outcome is None:
                message = self._receive(context)
                if message[0] == "progress":
                    progress: Progress = message[1]
                    context.progress(
                        progress.stage or "",
                        progress.percent,
                        progress.message or "",
                        step=progress.step,
                        total=progress.total,
                    )
                elif message[0] == "preview":
                    context.preview(message[1], message[2])
                elif message[0] == "file":
                    yield message[1]
                else:
                    outcome = message
        finally:
            self._used_at = time.monotonic()
            if outcome is None:  # we stopped early: the child must stop too
                self._abandon_job()
        self._raise_for(outcome)

    def close(self) -> None:
        """Ask the child to exit; kill it if it does not within the grace period."""
        if self._process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._process.join(self._cancel_grace)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._discard()

    # -- internals ----------------------------------------------------------------

    def _receive(self, context: GeneratorContext) -> tuple[Any, ...]:
        assert self._conn is not None
        while True:
            self._forward_cancellation(context)
            if self._conn.poll(POLL_SECONDS):
                try:
                    return self._conn.recv()
                except (EOFError, OSError):
                    raise self._died() from None

    def _forward_cancellation(self, context: GeneratorContext) -> None:
        if self._cancel_deadline is None:
            try:
                context.check_cancelled()
            except JobCancelled:
                self._cancel.set()
                self._cancel_deadline = time.monotonic() + self._cancel_grace
        elif time.monotonic() > self._cancel_deadline:
            log.warning(
                "%s ignored cancellation for %ss; killing it", self.name, self._cancel_grace
            )
            self._kill()
            raise JobCancelled("the generator ignored cancellation; its process was killed")

    def _abandon_job(self) -> None:
        """Stop the child's current job: ask, drain its messages, kill if it won't stop."""
        if self._process is None or not self._process.is_alive():
            self._discard()
            return
        self._cancel.set()
        deadline = time.monotonic() + self._cancel_grace
        while time.monotonic() < deadline:
            try:
                if not self._conn.poll(POLL_SECONDS):
                    continue
                if self._conn.recv()[0] not in ("progress", "preview", "file"):
                    return  # the job's final message: the child is free again
            except (EOFError, OSError):
                break
        self._kill()

    def _raise_for(self, outcome: tuple[Any, ...]) -> None:
        kind = outcome[0]
        if kind == "done":
            return
        if kind == "cancelled":
            raise JobCancelled("cancelled in the worker process")
        if kind == "error":
            _, message, details = outcome
            if details:
                log.error("generator failed in %s:\n%s", self.name, details)
            raise GeneratorError(message)
        raise GeneratorError(f"unexpected message from the worker process: {kind!r}")

    def _died(self) -> GeneratorError:
        self._process.join(1)
        code = self._process.exitcode
        self._discard()
        if code == -signal.SIGKILL:
            how = "was killed (SIGKILL: out of memory?)"
        elif code is not None and code < 0:
            how = f"was killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        log.error("worker process %s %s while running a job; replacing it", self.name, how)
        return GeneratorError(f"the worker process running this job {how}; it has been replaced")

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join()
        self._discard()

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None and not self._process.is_alive():
            self._process.close()
        self._process = self._conn = None


def run_below_the_web(pid: int) -> None:
    """Give process `pid` a CPU only when no normal task wants one (its later threads too).

    SCHED_IDLE, not a niceness: a normal task that wakes always preempts an idle-policy
    one, while a nice task may keep its CPU until a later scheduler tick (4 ms at 250 Hz)
    and a web thread waits that long (docs/performance.md, "CPU isolation"). The price:
    while normal tasks keep every CPU busy the child gets almost nothing (weight 3 against
    1,024 per busy task, where nice 10 left it ~10 %): generation waits for the web."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # no SCHED_IDLE here, or not allowed
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, FALLBACK_NICENESS)


# -- the child's side -------------------------------------------------------------


class ChildContext:
    """The `GeneratorContext` a generator sees inside the worker process."""

    def __init__(self, conn: Connection, cancel: Event) -> None:
        self._conn = conn
        self._cancel = cancel

    def progress(
        self,
        stage: str,
        percent: float,
        message: str = "",
        *,
        step: int | None = None,
        total: int | None = None,
    ) -> None:
        self._conn.send(("progress", Progress(percent, stage, message, step, total)))

    def preview(self, data: bytes, content_type: str = "image/png") -> None:
        self._conn.send(("preview", data, content_type))

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled("cancelled")


def child_main(conn: Connection, cancel: Event) -> None:
    """The child's loop: run jobs until told to exit or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent to handle
    context = ChildContext(conn, cancel)
    with contextlib.suppress(EOFError, BrokenPipeError):
        while True:
            try:
                request = conn.recv()
            except (EOFError, BrokenPipeError):
                raise
            except Exception as error:  # noqa: BLE001 - e.g. a plugin not importable here
                conn.send(("error", _describe(error), traceback.format_exc()))
                continue
            if request is None:
                return
            conn.send(run_job(conn, context, *request))


def run_job(
    conn: Connection, context: ChildContext, generator: Generator, params: dict[str, Any]
) -> tuple[Any, ...]:
    """Run one job, streaming its files to the parent; return the final message."""
    try:
        for item in generator.run(params, context):
            conn.send(("file", item))
    except JobCancelled:
        return ("cancelled",)
    except GeneratorError as error:
        return ("error", str(error), None)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which fails the job
        return ("error", _describe(error), traceback.format_exc())
    return ("done",)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
