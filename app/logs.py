"""Process-wide logging: one JSON object per line on stdout, as Fly's log shipping expects.

The entry points (wsgi.py, gunicorn.conf.py) configure it, never the app factory, so
tests and embedding applications keep their own logging. Each line carries `request_id`
while a request is served and `job_id` while a job runs: both live in context variables,
set by the web layer and by `JobLogContext` respectively, and copied onto every record
by `ContextFilter`.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from pythonjsonlogger.json import JsonFormatter

from .generation.events.observers import JobObserver

if TYPE_CHECKING:
    from .generation import Job

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)

JSON_FIELDS = ["levelname", "name", "message", "threadName"]
RENAMED = {"levelname": "level", "name": "logger", "threadName": "thread"}


class ContextFilter(logging.Filter):
    """Adds `request_id` and `job_id` to a record when they are set."""

    def filter(self, record: logging.LogRecord) -> bool:
        for var in (request_id, job_id):
            value = var.get()
            if value is not None and not hasattr(record, var.name):
                setattr(record, var.name, value)
        return True


class JobLogContext(JobObserver):
    """Sets `job_id` for everything logged while a job runs on its worker thread."""

    @contextmanager
    def running(self, job: Job) -> Iterator[None]:
        token = job_id.set(job.id)
        try:
            yield
        finally:
            job_id.reset(token)


def json_formatter() -> logging.Formatter:
    """time, level, logger, message, thread, then any extra fields of the record."""
    return JsonFormatter(JSON_FIELDS, rename_fields=RENAMED, timestamp="time")


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` document: everything, gunicorn's loggers included,
    goes to stdout as JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"json": {"()": json_formatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json",
                "filters": ["context"],
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            # Their own handlers are replaced by the root's, so each line is written once.
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))
