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
from ..job import Job, JobStatus
from ..results.storage import ResultStore, StagedResult
from ..store.jobs import JobStore
from .deadline import DeadlineExceeded, call_with_deadline, deadline_timer
from .outcomes import OutcomeWriter
from .processes import WorkerProcess
from .run_context import CancelToken, RunContext

log = logging.getLogger(__name__)

# How long a timed-out job may take to notice its cancellation before it is abandoned.
STOP_GRACE_SECONDS = 5.0


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
        context = RunContext(
            job, self._store, self._bus, token, self._results.files, self._observer
        )
        with self._observer.running(job):
            started = time.monotonic()
            try:
                final = self._outcome(job, context, process)
            finally:
                context.end()
            outcome = final.status.value if final is not None else "lost"
            self._observer.finished(final or job, outcome, time.monotonic() - started)
        return final

    def _outcome(self, job: Job, context: RunContext, process: WorkerProcess | None) -> Job | None:
        token = context.token
        try:
            staged = self._generate_in_time(job, context, process)
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
        context.announce_result(final.result_files or [])
        self._bus.publish(job.id, EventType.SUCCEEDED, result=result_summary(final))
        return final

    def _generate_in_time(
        self, job: Job, context: RunContext, process: WorkerProcess | None
    ) -> Any:
        """`_generate`, failing the job once it runs past the timeout."""
        if self._timeout is None:
            return self._generate(job, context, process)
        expire = functools.partial(context.token.cancel, "timeout")
        generator = self._generators.get(job.generator)
        if generator is not None and generator.cpu_bound and process is not None:
            # A worker process can be killed: cancelling is enough, it ends the run.
            with deadline_timer(self._timeout, expire):
                return self._generate(job, context, process)
        return call_with_deadline(
            lambda: self._generate(job, context, process),
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
        self, job: Job, context: RunContext, process: WorkerProcess | None
    ) -> StagedResult:
        generator = self._generators.get(job.generator)
        if generator is None:
            raise LookupError(f"generator {job.generator!r} is not installed on this server")
        if generator.cpu_bound and process is not None:
            files = process.run(generator, job.params, context)
        else:
            files = generator.run(job.params, context)
        manifest = {"job_id": job.id, "generator": job.generator, "params": job.params}
        manifest |= generator.manifest_extra(job.params)
        # Saved now, or (results in the database) stored by the outcome's transaction.
        staged = self._results.stage(job.id, job.lease_epoch, context.land(files), manifest)
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
        """Remove a run's result and files, if any; a failure here must not hide the
        outcome."""
        try:
            self._results.discard_run(job.id, job.lease_epoch)
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
