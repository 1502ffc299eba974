"""Errors of the generation core. The web layer maps each to one HTTP answer."""

from __future__ import annotations


class GenerationError(Exception):
    """Base class of every error the core raises on purpose."""


class QueueFullError(GenerationError):
    def __init__(self, capacity: int, retry_after: int = 5) -> None:
        super().__init__(f"the queue is full ({capacity} jobs waiting); try again later")
        self.capacity = capacity
        self.retry_after = retry_after


class TooManyJobsError(GenerationError):
    """The owner already has as many queued jobs as one owner may have."""

    def __init__(self, limit: int, retry_after: int = 5) -> None:
        super().__init__(
            f"you already have {limit} queued jobs, the most one key may have; "
            "wait for some to start or cancel them"
        )
        self.limit = limit
        self.retry_after = retry_after


class PriorityNotAllowedError(GenerationError):
    def __init__(self, requested: str, tier: str, ceiling: str) -> None:
        super().__init__(
            f"priority {requested!r} is above what a {tier} key may ask for (at most {ceiling!r})"
        )
        self.requested = requested
        self.ceiling = ceiling


class IdempotencyKeyReusedError(GenerationError):
    """An Idempotency-Key was used before with a different request."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used for job {job_id} with a different "
            "request; use a new key for a new request"
        )
        self.key = key
        self.job_id = job_id


class QueuePausedError(GenerationError):
    """An operator paused the queue: no job is admitted (or started) until it resumes."""

    def __init__(self, since: str, retry_after: int = 30) -> None:
        super().__init__(f"the queue is paused by its operators (since {since}); try again later")
        self.retry_after = retry_after


class ServiceStoppedError(GenerationError):
    """The service is not accepting work (not started yet, draining or shut down)."""


class JobNotFoundError(GenerationError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class JobFinishedError(GenerationError):
    """The job already reached a terminal status, so it cannot change any more."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id} already {status}")
        self.job_id = job_id
        self.status = status


class JobStatusConflictError(GenerationError):
    """An operator's action needs the job in another status (retry: failed; a new
    priority: queued). `code` names what it needed (`not_failed`, `not_queued`)."""

    def __init__(self, job_id: str, status: str, needed: str, action: str) -> None:
        super().__init__(f"job {job_id} is {status}; only a {needed} job can {action}")
        self.job_id = job_id
        self.status = status
        self.code = f"not_{needed}"


class MachineNotFoundError(GenerationError):
    """No running service reports from that machine (store/processes.py)."""

    def __init__(self, machine: str) -> None:
        super().__init__(f"no running service reports from machine {machine!r}")
        self.machine = machine


class InvalidParamsError(GenerationError):
    """A submission's fields are wrong; `fields` maps each field to what is wrong with it."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("invalid parameters: " + "; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


class GeneratorError(GenerationError):
    """A generator's own, expected failure (a provider said no, an input cannot be used).

    Raise it from `run()` and the job fails with exactly this message as its `error`,
    without a traceback in the log; any other exception fails the job as
    "TypeName: message" and logs the traceback.
    """


class JobCancelled(GenerationError):  # noqa: N818 - a control-flow signal, not a failure
    """Raised inside a generator at a checkpoint after cancellation was requested."""
