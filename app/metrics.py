"""Prometheus metrics of one process, served at `/metrics` (docs/operations.md lists them).

Job events arrive through the core's observer hooks (`MetricsObserver`); levels that
are cheap to read (queue depth, workers, results kept) are read from the service when
scraped (`ServiceCollector`), so they can never drift from the truth. Each app gets its
own registry: nothing is global, and tests may build many apps in one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from .generation import GenerationService, Job, Priority
from .generation.events.observers import JobObserver

# Generation jobs take from a fraction of a second to many minutes.
SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """The metric objects of one app; `websockets_open` is moved by the WebSocket layer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.submitted = Counter(
            "generation_jobs_submitted", "Jobs accepted.", ["priority"], registry=r
        )
        self.finished = Counter(
            "generation_jobs_finished",
            "Job runs ended, by outcome (succeeded, failed, cancelled, queued = put back "
            "by a shutdown, lost = taken over by another process).",
            ["generator", "outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "generation_submissions_rejected",
            "Submissions refused, by reason (queue_full, unavailable, invalid_params, "
            "too_many_jobs, idempotency_key_reused).",
            ["reason"],
            registry=r,
        )
        self.wait_seconds = Histogram(
            "generation_job_wait_seconds",
            "From submission to the start of a run.",
            ["priority"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.run_seconds = Histogram(
            "generation_job_run_seconds",
            "Duration of a run, whatever its outcome.",
            ["generator"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.results_expired = Counter(
            "generation_results_expired", "Results deleted by retention.", registry=r
        )
        self.webhook_attempts = Counter(
            "generation_webhook_attempts",
            "Webhook attempts, by event and outcome (delivered, retrying = failed with "
            "attempts left, failed = the last attempt failed: dead-lettered).",
            ["event", "outcome"],
            registry=r,
        )
        self.admin_actions = Counter(
            "generation_admin_actions",
            "Operators' actions over /api/v1/admin, by action "
            "(pause, resume, cancel, retry, priority, drain, undrain).",
            ["action"],
            registry=r,
        )
        self.idle_seconds = Gauge(
            "generation_idle_seconds",
            "Seconds this process has had nothing to do (IDLE_STOP_SECONDS stops it there).",
            registry=r,
        )
        self.queue_paused = Gauge(
            "generation_queue_paused", "1 while an operator has paused the queue.", registry=r
        )
        self.websockets_open = Gauge(
            "generation_websockets_open", "WebSocket connections open now.", registry=r
        )
        self.http_in_flight = Gauge(
            "http_requests_in_flight", "HTTP requests being answered now.", registry=r
        )

    def watch(self, service: GenerationService, in_flight: Callable[[], int]) -> None:
        """Observe `service`'s jobs and read its levels (and `in_flight()`) at scrape time."""
        service.observers.add(MetricsObserver(self))
        self.queue_paused.set_function(lambda: int(service.pause.paused))
        idle = service.ops.idle
        if idle is not None:
            self.idle_seconds.set_function(idle.idle_for)
        self.registry.register(ServiceCollector(service))
        self.http_in_flight.set_function(in_flight)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsObserver(JobObserver):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        # `labels()` takes a lock and builds a key on every call; a submit is the hot path.
        # Filled on first use, so a priority never submitted shows no series (as before).
        self._submitted: dict[Priority, Counter] = {}
        self._waited: dict[Priority, Histogram] = {}

    def submitted(self, job: Job) -> None:
        counter = self._submitted.get(job.priority)
        if counter is None:
            counter = self._submitted[job.priority] = self._m.submitted.labels(job.priority.label)
        counter.inc()

    def rejected(self, reason: str) -> None:
        self._m.rejected.labels(reason).inc()

    def finished(self, job: Job, outcome: str, run_seconds: float) -> None:
        self._m.finished.labels(job.generator, outcome).inc()
        self._m.run_seconds.labels(job.generator).observe(run_seconds)

    def expired(self, job: Job) -> None:
        self._m.results_expired.inc()

    @contextmanager
    def running(self, job: Job) -> Iterator[None]:
        if job.started_at is not None:
            waited = (job.started_at - job.created_at).total_seconds()
            histogram = self._waited.get(job.priority)
            if histogram is None:
                histogram = self._waited[job.priority] = self._m.wait_seconds.labels(
                    job.priority.label
                )
            histogram.observe(max(0.0, waited))
        yield


class ServiceCollector(Collector):
    """Levels read from the service at each scrape."""

    def __init__(self, service: GenerationService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        service = self._service
        yield from _queue_depth(service)
        yield GaugeMetricFamily(
            "generation_queue_capacity", "GENERATION_QUEUE_SIZE.", value=service.queue_capacity
        )
        yield GaugeMetricFamily(
            "generation_workers", "Worker threads now.", value=service.worker_count
        )
        yield GaugeMetricFamily(
            "generation_active_workers", "Workers running a job now.", value=service.active_workers
        )
        yield GaugeMetricFamily(
            "generation_accepting_jobs",
            "1 while the service takes jobs, 0 while draining or stopped.",
            value=int(service.accepting),
        )
        yield from _stored_results(service)
        yield from _webhook_deliveries(service)


def _queue_depth(service: GenerationService) -> Iterator[Metric]:
    try:
        depths = service.queued_by_priority()  # read from the database on PostgreSQL
    except SQLAlchemyError:
        return  # the database is down: /ready says so; the other metrics still help
    depth = GaugeMetricFamily(
        "generation_queue_depth", "Jobs waiting in the queue.", labels=["priority"]
    )
    for priority, count in depths.items():
        depth.add_metric([priority.label], count)
    yield depth


def _webhook_deliveries(service: GenerationService) -> Iterator[Metric]:
    try:
        counts = service.deliveries.count_by_status()
    except SQLAlchemyError:
        return
    family = GaugeMetricFamily(
        "generation_webhook_deliveries",
        "Webhook deliveries in the outbox, by status (the whole cluster's).",
        labels=["status"],
    )
    for status, count in counts.items():
        family.add_metric([status], count)
    yield family


def _stored_results(service: GenerationService) -> Iterator[Metric]:
    try:
        jobs, size = service.store.stored_results()
    except SQLAlchemyError:
        return  # the database is down: /ready says so; the other metrics still help
    yield GaugeMetricFamily("generation_results_stored", "Results kept.", value=jobs)
    yield GaugeMetricFamily(
        "generation_results_stored_bytes", "Bytes of the results kept.", value=size
    )
