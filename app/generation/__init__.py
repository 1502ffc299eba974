"""The generation core: jobs, queue, workers, generators, results. Imports no Flask."""

from . import schema
from .errors import (
    GenerationError,
    GeneratorError,
    IdempotencyKeyReusedError,
    InvalidParamsError,
    JobCancelled,
    JobFinishedError,
    JobNotFoundError,
    PriorityNotAllowedError,
    QueueFullError,
    ServiceStoppedError,
    TooManyJobsError,
)
from .keys import ANONYMOUS
from .models import Job, JobStatus, Priority
from .service import GenerationService

__all__ = [
    "ANONYMOUS",
    "GenerationError",
    "GenerationService",
    "GeneratorError",
    "IdempotencyKeyReusedError",
    "InvalidParamsError",
    "Job",
    "JobCancelled",
    "JobFinishedError",
    "JobNotFoundError",
    "JobStatus",
    "PriorityNotAllowedError",
    "Priority",
    "QueueFullError",
    "ServiceStoppedError",
    "TooManyJobsError",
    "schema",
]
