"""The generation core: jobs, queue, workers, generators, results. Imports no Flask.

The names below load on first use (PEP 562), so that importing one light module of the
core (a generator, `processes` in a generation child, `observers` for the logs) does not
import the service and with it SQLAlchemy.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        GenerationError,
        GeneratorError,
        IdempotencyKeyReusedError,
        InvalidParamsError,
        JobCancelled,
        JobFinishedError,
        JobNotFoundError,
        JobStatusConflictError,
        MachineNotFoundError,
        PriorityNotAllowedError,
        QueueFullError,
        QueuePausedError,
        ServiceStoppedError,
        TooManyJobsError,
    )
    from .forecast.outlook import Quote
    from .intake.keys import ANONYMOUS
    from .job import Job, JobStatus, Priority
    from .service import GenerationService

_HOMES = {
    "ANONYMOUS": ".intake.keys",
    "GenerationError": ".errors",
    "GenerationService": ".service",
    "GeneratorError": ".errors",
    "IdempotencyKeyReusedError": ".errors",
    "InvalidParamsError": ".errors",
    "Job": ".job",
    "JobCancelled": ".errors",
    "JobFinishedError": ".errors",
    "JobNotFoundError": ".errors",
    "JobStatus": ".job",
    "JobStatusConflictError": ".errors",
    "MachineNotFoundError": ".errors",
    "PriorityNotAllowedError": ".errors",
    "Priority": ".job",
    "QueueFullError": ".errors",
    "QueuePausedError": ".errors",
    "Quote": ".forecast.outlook",
    "ServiceStoppedError": ".errors",
    "TooManyJobsError": ".errors",
}
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
    "JobStatusConflictError",
    "MachineNotFoundError",
    "PriorityNotAllowedError",
    "Priority",
    "QueueFullError",
    "QueuePausedError",
    "Quote",
    "ServiceStoppedError",
    "TooManyJobsError",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value  # looked up once
    return value
