"""Webhooks on both engines and across processes: the outbox row and the status change
it reports commit together or not at all; on PostgreSQL, services on one database share
the outbox and never send one delivery twice at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

from app.generation import GenerationService, Job, JobStatus, Priority
from app.generation.job import Progress, Webhook
from app.generation.notify.signing import new_secret
from app.generation.store import schema
from app.generation.store.deliveries import DeliveryStore
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore
from app.generation.store.tables import WebhookDeliveryRow

from .conftest import wait_for
from .servers import free_port
from .webhook_receiver import receiving

SECRET = new_secret()
_deliveries = WebhookDeliveryRow.__table__


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_engine")
        return
    engine = create_database_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    schema.prepare(engine)  # built from the models: the trigger must come with them
    yield engine
    engine.dispose()


def queued_job(store: JobStore, events: tuple[str, ...] = ("started", "completed")) -> Job:
    job = Job(
        pk=0,
        id=uuid.uuid4().hex,
        owner="alice",
        generator="noop",
        params={},
        priority=Priority.NORMAL,
        status=JobStatus.QUEUED,
        created_at=datetime.now(UTC),
        webhook=Webhook("https://example.com/hooks", events, "k1"),
    )
    inserted = store.insert(job)
    assert inserted is not None
    return inserted


def outbox(engine: Engine) -> list[tuple[str, str, str | None]]:
    query = select(_deliveries.c.job_id, _deliveries.c.event, _deliveries.c.key_id)
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query.order_by(_deliveries.c.pk))]


def test_the_delivery_commits_or_rolls_back_with_the_status_change(engine):
    store = JobStore(engine)
    job = queued_job(store)
    finish = text("UPDATE jobs SET status = 'succeeded', finished_at = :now WHERE id = :id")
    with engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(finish, {"now": datetime.now(UTC), "id": job.id})
        inside = connection.execute(select(func.count()).select_from(_deliveries)).scalar()
        transaction.rollback()  # a crash before the commit: neither happened
    assert inside == 1 and outbox(engine) == []
    assert store.get(job.id).status is JobStatus.QUEUED
    with engine.begin() as connection:
        connection.execute(finish, {"now": datetime.now(UTC), "id": job.id})
    assert outbox(engine) == [(job.id, "completed", "k1")]


def test_claims_and_outcomes_write_only_the_events_asked_for(engine):
    store = JobStore(engine)
    both, completed_only = queued_job(store), queued_job(store, ("completed",))
    now = datetime.now(UTC)
    for job in (both, completed_only):
        claimed = store.claim(job.id, "w", now)
        assert claimed is not None
        # Progress does not set status: no trigger fires for it.
        store.record_progress(claimed, Progress(50.0, "half"))
        store.finish(claimed, JobStatus.FAILED, now, error="boom")
    assert outbox(engine) == [
        (both.id, "started", "k1"),
        (both.id, "completed", "k1"),
        (completed_only.id, "completed", "k1"),
    ]


# Loopback receivers, this file's secret, fast retries.
WEBHOOKS = {
    "webhook_allow_http": True,
    "webhook_allow_private": True,
    "webhook_secret": SECRET,
    "webhook_concurrency": 4,
    "webhook_per_host": 4,
    "webhook_retry_delays": (0.2,),
}


@pytest.fixture
def make_node(make_pg_service) -> Callable[..., GenerationService]:
    def make(name: str, **config: object) -> GenerationService:
        return make_pg_service(name, **(WEBHOOKS | {"generation_workers": 2} | config))

    return make


def test_services_sharing_a_database_send_each_delivery_once(make_node):
    first, second = make_node("one"), make_node("two")
    with receiving() as receiver:
        # Slow answers keep attempts in flight while both services claim.
        receiver.answer = lambda message: (time.sleep(0.05), 204)[1]
        jobs = [
            (first if n % 2 else second).submit("noop", {}, webhook=receiver.url) for n in range(24)
        ]
        for job in jobs:
            wait_for(first, job.id)
        messages = receiver.wait_for(24, timeout=20)
        time.sleep(0.5)  # anything sent twice would arrive by now
    assert len(receiver.messages) == 24
    assert len({message.id for message in messages}) == 24
    assert all(message.verified(SECRET)["type"] == "job.completed" for message in messages)
    assert first.deliveries.count_by_status() == {"pending": 0, "delivered": 24, "failed": 0}


def test_deliveries_survive_the_database_dropping_every_connection(make_node, pg_engine):
    service = make_node("one", webhook_retry_delays=(0.5,) * 40)
    port = free_port()  # the receiver is down at first
    jobs = [service.submit("noop", {}, webhook=f"http://127.0.0.1:{port}/h") for _ in range(3)]

    def attempted(job: Job) -> bool:
        return any(d.attempts for d in service.deliveries.for_job(job.id))

    deadline = time.monotonic() + 10
    while not all(attempted(job) for job in jobs):
        assert time.monotonic() < deadline, "no attempt failed yet"
        time.sleep(0.05)
    with pg_engine.connect() as connection:  # the outage: every other session is cut
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    with receiving(port=port) as receiver:
        messages = receiver.wait_for(3, timeout=20)
    assert {m.verified(SECRET)["data"]["id"] for m in messages} == {job.id for job in jobs}


def test_a_success_writes_each_files_output_before_its_completed(engine):
    store = JobStore(engine)
    job = queued_job(store, ("output", "completed"))
    claimed = store.claim(job.id, "w", datetime.now(UTC))
    files = [{"name": f"image-0{n}.png", "bytes": 10 + n, "sha256": "ab" * 32} for n in (1, 2)]
    # The first file was stored (and its delivery written) while the job ran.
    deliveries = DeliveryStore(engine)
    deliveries.add_output(claimed, files[0] | {"content_type": "image/png"}, 0, claimed.started_at)
    store.finish(claimed, JobStatus.SUCCEEDED, datetime.now(UTC), result_files=files)
    written = deliveries.for_job(job.id)
    assert [(d.id, d.event) for d in written] == [
        (f"msg_{job.id}_1_0", "output"),
        (f"msg_{job.id}_1_1", "output"),
        (written[2].id, "completed"),
    ]
    assert written[1].detail == files[1] and written[1].host == "example.com"


def test_an_attempt_records_only_on_the_claim_it_was_made_under(engine):
    """A claim whose time ran out is claimed again; the first attempt, finishing late,
    must not overwrite the second's outcome (nor a redrive's fresh start)."""
    store, deliveries = JobStore(engine), DeliveryStore(engine)
    job = queued_job(store, ("completed",))
    now = datetime.now(UTC)
    store.finish(store.claim(job.id, "w", now), JobStatus.FAILED, now, error="x")
    now += timedelta(seconds=1)  # PostgreSQL's trigger dates the row by the server's clock
    lease = timedelta(seconds=30)
    (first,) = deliveries.claim_due(now, 10, lease)
    (second,) = deliveries.claim_due(now + lease * 2, 10, lease)  # the first ran out
    outcome = {"status": 500, "error": "HTTP 500", "retry_at": None}
    assert deliveries.record(first, now, delivered=False, **outcome) is None
    assert deliveries.record(second, now, delivered=True, status=204, error=None, retry_at=None)
    assert deliveries.get(first.id).status == "delivered"
    assert deliveries.claim_due(now + lease * 10, 10, lease, busy={"example.com"}) == []
