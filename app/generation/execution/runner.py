"""Running one job: drive its generator, record exactly one outcome.

`JobRunner.run()` is what a worker thread calls for each job it claimed. It never
raises: whatever the generator does (raise, return garbage, get cancelled), the job ends
in a recorded state and the worker thread lives on to take the next job.

The database may drop out under a run (restart, failover). A progress write that fails
is skipped; outcome writes are retried (execution/outcomes.py). A run that cannot save its result
for that reason gives the job back to the queue (counting the attempt) rather than
failing it: the fault is ours, not the job's. A run whose lease was taken over stops
and writes nothing.
"""

from __future__ import annotations

import errno
import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..errors import GeneratorError, JobCancelled
from ..events.bus import EventBus, EventType
from ..events.observers import JobObserver
from ..generators import GeneratorRegistry
from ..job import Job, JobStatus, Progress
from ..results.storage import ResultStore, StagedResult
from ..store.jobs import JobStore
from .deadline import DeadlineExceeded, call_with_deadline, deadline_timer
from .outcomes import OutcomeWriter
from .processes import WorkerProcess

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL = 0.5
# How long a timed-out job may take to notice its cancellation before it is abandoned.
STOP_GRACE_SECONDS = 5.0


class CancelToken:
    """Set once, by a cancel request or a shutdown; `reason` says which."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class RunContext:
    """The `GeneratorContext` of one run: progress goes to the bus at once and to the
    row at most every PROGRESS_WRITE_INTERVAL seconds (stage changes and 100 % always)."""

    def __init__(self, job: Job, store: JobStore, bus: EventBus, token: CancelToken) -> None:
        self._job = job
        self._store = store
        self._bus = bus
        self._token = token
        self._percent = 0.0
        self._stage: str | None = None
        self._written_at = 0.0

    def progress(
        self,
        stage: str,
        percent: float,
        message: str = "",
        *,
        step: int | None = None,
        total: int | None = None,
    ) -> None:
        if self._token.is_set():  # a run told to stop reports nothing more
            return
        self._percent = max(self._percent, min(100.0, max(0.0, float(percent))))
        progress = Progress(
            round(self._percent, 2), str(stage)[:64], str(message)[:500], step, total
        )
        self._bus.publish(self._job.id, EventType.PROGRESS, **progress.event_data())
        now = time.monotonic()
        if (
            stage != self._stage
            or self._percent >= 100
            or now - self._written_at >= PROGRESS_WRITE_INTERVAL
        ):
            self._stage = stage
            self._written_at = now
            self._write(progress)

    def check_cancelled(self) -> None:
        if self._token.is_set():
            raise JobCancelled(self._token.reason)

    def _write(self, progress: Progress) -> None:
        try:
            row = self._store.record_progress(self._job, progress)
        except SQLAlchemyError as error:
            log.warning("could not store progress of job %s: %s", self._job.id, error)
            return
        if row is None:
            self._token.cancel("lease_lost")
        elif row.cancel_requested:
            self._token.cancel("cancelled")


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        results: ResultStore,
        generators: GeneratorRegistry,
        bus: EventBus,
        clock: Callable[[], datetime],
        observer: JobObserver | None = None,
        timeout: float | None = None,
        max_attempts: int = 3,
    ) -> None:
        self._store = store
        self._outcomes = OutcomeWriter(store, clock)
        self._max_attempts = max_attempts
        self._results = results
        self._generators = generators
        self._bus = bus
        self._clock = clock
        self._observer = observer or JobObserver()
        self._timeout = timeout
        self._lock = threading.Lock()
        self._abandoned = 0

    @property
    def abandoned_runs(self) -> int:
        """Timed-out runs whose threads are still going (they hold CPU and memory)."""
        with self._lock:
            return self._abandoned

    def run(self, job: Job, token: CancelToken, process: WorkerProcess | None = None) -> Job | None:
        """Run a claimed job to its outcome; returns the final row (None if the claim was lost).
        A cpu_bound generator runs in `process` when one is given."""
        self._bus.publish(job.id, EventType.STARTED, attempt=job.attempts, worker=job.worker)
        with self._observer.running(job):
            started = time.monotonic()
            final = self._outcome(job, token, process, started)
            outcome = final.status.value if final is not None else "lost"
            self._observer.finished(final or job, outcome, time.monotonic() - started)
        return final

    def _outcome(
        self, job: Job, token: CancelToken, process: WorkerProcess | None, started: float
    ) -> Job | None:
        try:
            staged = self._generate_in_time(job, token, process)
        except JobCancelled:
            return self._stop(job, token)
        except GeneratorError as exc:
            log.warning("job %s (%s) failed: %s", job.id, job.generator, exc)
            return self._fail(job, str(exc))
        except SQLAlchemyError as error:
            log.warning("job %s interrupted by a database error: %s", job.id, error)
            return self._give_back(job)
        except DeadlineExceeded as exc:
            self._observer.failed(job, exc)
            log.error("job %s (%s) %s", job.id, job.generator, exc)
            return self._fail(job, _timeout_message(exc))
        except Exception as exc:  # noqa: BLE001 - one bad job must never kill the worker
            self._observer.failed(job, exc)
            log.exception("job %s (%s) failed", job.id, job.generator)
            return self._fail(job, failure_message(exc))
        try:
            final = self._outcomes.finish(
                job,
                JobStatus.SUCCEEDED,
                then=staged.write,
                result_bytes=staged.info.bytes,
                result_files=staged.info.files,
                progress_percent=100.0,
            )
        finally:
            staged.close()
        if final is None:
            self._discard(job)
            log.warning("job %s lost its claim before finishing; result discarded", job.id)
            return None
        self._bus.publish(job.id, EventType.SUCCEEDED, result=result_summary(final))
        return final

    def _generate_in_time(self, job: Job, token: CancelToken, process: WorkerProcess | None) -> Any:
        """`_generate`, failing the job once it runs past the timeout."""
        if self._timeout is None:
            return self._generate(job, token, process)
        expire = functools.partial(token.cancel, "timeout")
        generator = self._generators.get(job.generator)
        if generator is not None and generator.cpu_bound and process is not None:
            # A worker process can be killed: cancelling is enough, it ends the run.
            with deadline_timer(self._timeout, expire):
                return self._generate(job, token, process)
        return call_with_deadline(
            lambda: self._generate(job, token, process),
            seconds=self._timeout,
            grace=min(STOP_GRACE_SECONDS, self._timeout),
            on_expiry=expire,
            on_abandoned=self._count_abandoned,
            on_late_return=lambda: self._abandoned_run_ended(job),
        )

    def _count_abandoned(self) -> None:
        with self._lock:
            self._abandoned += 1

    def _abandoned_run_ended(self, job: Job) -> None:
        self._discard(job)
        with self._lock:
            self._abandoned -= 1
        log.warning("the abandoned run of job %s has ended", job.id)

    def _generate(
        self, job: Job, token: CancelToken, process: WorkerProcess | None
    ) -> StagedResult:
        generator = self._generators.get(job.generator)
        if generator is None:
            raise LookupError(f"generator {job.generator!r} is not installed on this server")
        context = RunContext(job, self._store, self._bus, token)
        if generator.cpu_bound and process is not None:
            files = process.run(generator, job.params, context)
        else:
            files = generator.run(job.params, context)
        manifest = {"job_id": job.id, "generator": job.generator, "params": job.params}
        manifest |= generator.manifest_extra(job.params)
        # Saved now, or (results in the database) stored by the outcome's transaction.
        staged = self._results.stage(job.id, job.lease_epoch, files, manifest)
        try:
            context.check_cancelled()
        except JobCancelled:
            staged.close()
            raise
        return staged

    def _stop(self, job: Job, token: CancelToken) -> Job | None:
        if token.reason == "timeout":
            return self._fail(job, _timeout_message(DeadlineExceeded(self._timeout, False)))
        self._discard(job)
        if token.reason == "lease_lost":
            log.warning("job %s stopped: another process took it over", job.id)
            return None
        if token.reason == "shutdown":
            return self._requeue(job)
        final = self._outcomes.finish(job, JobStatus.CANCELLED)
        if final is not None:
            self._bus.publish(job.id, EventType.CANCELLED)
        return final

    def _fail(self, job: Job, error: str) -> Job | None:
        self._discard(job)
        final = self._outcomes.finish(job, JobStatus.FAILED, error=error[:2000])
        if final is not None:
            self._bus.publish(job.id, EventType.FAILED, error=final.error)
        return final

    def _give_back(self, job: Job) -> Job | None:
        """Requeue a run our infrastructure broke; fail it once it is out of attempts."""
        if job.attempts >= self._max_attempts:
            return self._fail(
                job,
                f"Interrupted {job.attempts} times by database errors; "
                "giving up (JOB_MAX_ATTEMPTS).",
            )
        self._discard(job)
        return self._requeue(job)

    def _requeue(self, job: Job) -> Job | None:
        final = self._outcomes.requeue(job)
        if final is not None:
            self._bus.publish(job.id, EventType.QUEUED, requeued=True)
        return final

    def _discard(self, job: Job) -> None:
        """Remove a run's result, if any; a failure here must not hide the outcome."""
        try:
            self._results.delete(job.id, job.lease_epoch)
        except (OSError, SQLAlchemyError):
            log.exception("could not delete the result of job %s", job.id)


def failure_message(error: Exception) -> str:
    """What a failed job's `error` says about the exception that ended it."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return "the results disk is full (ENOSPC): the result could not be saved"
    return f"{type(error).__name__}: {error}"


def _timeout_message(exceeded: DeadlineExceeded) -> str:
    message = f"timed out after {exceeded.seconds:g} seconds (JOB_TIMEOUT_SECONDS)"
    if exceeded.abandoned:
        message += "; the generator did not stop when asked and was abandoned"
    return message


def result_summary(job: Job) -> dict[str, Any]:
    """The `result` object of a succeeded job, without the URL (the web layer adds it)."""
    return {"bytes": job.result_bytes, "files": [f["name"] for f in job.result_files or []]}
