"""Error tracking and tracing with Sentry, on when `SENTRY_DSN` is set.

Web requests are traced by the Flask integration (health checks and scrapes excepted).
Each job run is a transaction of its own (`queue.process`) in its own isolation scope,
tagged with the job's id, generator and priority, so an exception a generator raises on
a worker thread arrives with the job it belongs to.

No personal data is sent: no IP addresses, cookies or request bodies (prompts are user
content), no local variables in stack traces, no job params; of the request headers
only the names and a few harmless values.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.tracing import Span, TransactionSource

from .config import Config
from .generation import GenerationService, Job
from .generation.events.observers import JobObserver
from .generation.notify.sender import Answer
from .generation.store.deliveries import Delivery

SAFE_HEADERS = [
    "content-type",
    "content-length",
    "accept",
    "user-agent",
    "request-id",
    "fly-region",
]

UNTRACED_PATHS = frozenset({"/health", "/ready", "/metrics"})

# Span status (Sentry's vocabulary) for each outcome of a run.
RUN_STATUS = {
    "succeeded": "ok",
    "failed": "internal_error",
    "cancelled": "cancelled",
    "queued": "aborted",
    "lost": "aborted",
}


# What the SDK may collect: nothing about users. This is the structured successor of
# `send_default_pii=False` (deprecated in this SDK), stricter where it can be: no
# cookies, no bodies, no local variables; only harmless request header values.
DATA_COLLECTION = {
    "user_info": False,
    "cookies": {"mode": "off"},
    "http_headers": {"request": {"mode": "allowlist", "terms": SAFE_HEADERS}},
    "http_bodies": [],
    "url_query_params": {"mode": "denylist"},
    "database_query_data": False,
    "queues": False,
    "gen_ai": {"inputs": False, "outputs": False},
    "stack_frame_variables": False,
}


def init_sentry(config: Config, service: GenerationService) -> bool:
    """Start the SDK and watch `service`'s jobs; False (and nothing done) without a DSN."""
    if not config.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=config.sentry_dsn,
        environment=config.sentry_environment,
        release=config.sentry_release,
        traces_sampler=traces_sampler(config.sentry_traces_sample_rate),
        data_collection=DATA_COLLECTION,
        max_request_body_size="never",
        integrations=[FlaskIntegration(transaction_style="url")],
    )
    service.observers.add(SentryJobObserver())
    service.webhooks.listeners.append(WebhookTrail())
    return True


class WebhookTrail:
    """A breadcrumb for each failed webhook attempt, kept with its delivery; when the
    delivery is dead-lettered (its last attempt failed), a warning event that carries
    that delivery's breadcrumbs and no one else's.

    Kept per delivery, not on a scope: attempts run on a pool of sender threads, and a
    scope shared between them would hand one owner's receiver errors to every later
    event of the process. At most `limit` deliveries are followed (the oldest go)."""

    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        self._crumbs: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, delivery: Delivery, answer: Answer, outcome: str) -> None:
        if outcome == "delivered":
            with self._lock:
                self._crumbs.pop(delivery.id, None)
            return
        crumb = {
            "category": "webhook",
            "level": "warning",
            "message": f"attempt {delivery.attempts + 1} of {delivery.event} "
            f"(job {delivery.job_id}): {answer.error}",
            "data": {"status": answer.status, "host": delivery.host},
        }
        with self._lock:
            trail = self._crumbs.setdefault(delivery.id, [])
            trail.append(crumb)
            self._crumbs.move_to_end(delivery.id)
            while len(self._crumbs) > self._limit:
                self._crumbs.popitem(last=False)
            if outcome == "failed":
                trail = self._crumbs.pop(delivery.id)
        if outcome == "failed":
            _report_dead_letter(delivery, answer, trail)


def _report_dead_letter(delivery: Delivery, answer: Answer, trail: list[dict[str, Any]]) -> None:
    with sentry_sdk.isolation_scope() as isolation, sentry_sdk.new_scope() as scope:
        isolation.clear_breadcrumbs()
        scope.clear_breadcrumbs()
        for crumb in trail:
            scope.add_breadcrumb(**crumb)
        scope.set_tag("job.id", delivery.job_id)
        scope.set_tag("webhook.id", delivery.id)
        scope.set_tag("webhook.host", delivery.host)
        sentry_sdk.capture_message(
            f"webhook delivery failed after {delivery.attempts + 1} attempts: {answer.error}",
            level="warning",
        )


def traces_sampler(rate: float) -> Callable[[dict[str, Any]], float]:
    """Sample at `rate`, except the probes and scrapes that arrive every few seconds
    (Fly's health checks, metrics scraping), which would only bury the real traffic."""

    def sample(context: dict[str, Any]) -> float:
        environ = context.get("wsgi_environ") or {}
        return 0.0 if environ.get("PATH_INFO") in UNTRACED_PATHS else rate

    return sample


class SentryJobObserver(JobObserver):
    @contextmanager
    def running(self, job: Job) -> Iterator[None]:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_tag("job.id", job.id)
            scope.set_tag("job.generator", job.generator)
            scope.set_tag("job.priority", job.priority.label)
            scope.set_tag("job.attempt", str(job.attempts))
            with sentry_sdk.start_transaction(
                op="queue.process",
                name=f"generate {job.generator}",
                source=TransactionSource.TASK,
            ) as transaction:
                _describe_message(transaction, job)
                yield

    def failed(self, job: Job, error: BaseException) -> None:
        sentry_sdk.capture_exception(error)

    def finished(self, job: Job, outcome: str, run_seconds: float) -> None:
        span = sentry_sdk.get_current_span()
        if span is not None:
            span.set_tag("job.outcome", outcome)
            span.set_status(RUN_STATUS.get(outcome, "unknown_error"))


def _describe_message(transaction: Span, job: Job) -> None:
    """The fields Sentry's Queues view reads from a `queue.process` transaction."""
    transaction.set_data("messaging.message.id", job.id)
    transaction.set_data("messaging.destination.name", f"generation.{job.priority.label}")
    transaction.set_data("messaging.message.retry.count", max(0, job.attempts - 1))
    if job.started_at is not None:
        waited = (job.started_at - job.created_at).total_seconds()
        transaction.set_data("messaging.message.receive.latency", round(waited * 1000))
