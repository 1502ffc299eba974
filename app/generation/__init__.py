"""The generation core: jobs, queue, workers, generators, results. Imports no Flask."""

from .errors import (
    GenerationError,
    GeneratorError,
    InvalidParamsError,
    JobCancelled,
    JobFinishedError,
    JobNotFoundError,
    QueueFullError,
    ServiceStoppedError,
)
from .models import Job, JobStatus, Priority
from .service import ANONYMOUS, GenerationService

__all__ = [
    "ANONYMOUS",
    "GenerationError",
    "GenerationService",
    "GeneratorError",
    "InvalidParamsError",
    "Job",
    "JobCancelled",
    "JobFinishedError",
    "JobNotFoundError",
    "JobStatus",
    "Priority",
    "QueueFullError",
    "ServiceStoppedError",
]
