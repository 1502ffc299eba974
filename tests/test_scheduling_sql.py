"""The policy in SQL agrees with the Python one: the INSERT keys every job as
`SchedulingIndex.key_for` does (SQLite and PostgreSQL), and the PostgreSQL claim drains
a mixed queue in the index's order."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.generation import Job, JobStatus, Priority
from app.generation.queue.postgres import PostgresQueue
from app.generation.scheduling.policy import QueueEntry, SchedulingIndex
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore
from app.generation.store.listener import NoListener

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
AGING = 60.0
OWNERS = ("ann", "bob", "cy", "dee")
SHARES = (0.0, 0.25, 3.0, 45.0)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> JobStore:
    if request.param == "sqlite":
        engine = create_database_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
        schema.upgrade(engine)
    else:
        engine = request.getfixturevalue("pg_engine")
    # Keys from the jobs' own created_at, so that the test can make time pass.
    return JobStore(engine, database_clock=False)


def new_job(rng: random.Random, at: datetime) -> Job:
    return Job(
        pk=0,
        id=uuid.uuid4().hex,
        owner=rng.choice(OWNERS),
        generator="g",
        params={},
        priority=rng.choice(list(Priority)),
        status=JobStatus.QUEUED,
        created_at=at,
    )


def entry_of(job: Job) -> QueueEntry:
    return QueueEntry(
        job.id, job.priority, job.pk, job.owner, job.created_at.timestamp(), key=job.sort_key
    )


def test_the_insert_keys_jobs_as_the_python_rule_does(store):
    """Admissions, cancellations and claims in random order: every key the INSERT
    computed (from the queued tail it read) is the one the index computes."""
    rng = random.Random(7)
    index = SchedulingIndex(AGING)
    at = NOW
    for _ in range(300):
        at += timedelta(seconds=rng.choice((0, 0.3, 1, 4, 20)))
        roll = rng.random()
        if roll < 0.6:
            job, share = new_job(rng, at), rng.choice(SHARES)
            expected = index.key_for(job.owner, int(job.priority), at.timestamp(), share)
            written = store.insert(job, aging_seconds=AGING, share=share)
            assert written.sort_key == expected
            index.add(entry_of(written))
        elif roll < 0.8 and len(index):
            job_id = rng.choice(index.entries()).job_id
            assert store.cancel_queued(job_id, at) is not None
            index.remove(job_id)
        elif len(index):
            taken = index.pop()
            assert store.claim(taken.job_id, "w", at) is not None
    assert {entry.job_id: entry.key for entry in index.entries()} == {
        job.id: job.sort_key for job in store.queued()
    }


def test_postgres_claims_in_exactly_the_order_of_the_scheduling_index(pg_engine):
    rng = random.Random(4)
    store = JobStore(pg_engine, database_clock=False)
    queue = PostgresQueue(store, 1000, NoListener(), aging_seconds=AGING, clock=NOW.timestamp)
    index = SchedulingIndex(AGING)
    at = NOW - timedelta(seconds=300)
    for _ in range(80):
        at += timedelta(seconds=rng.uniform(0, 5))
        written = store.insert(new_job(rng, at), aging_seconds=AGING, share=rng.choice(SHARES))
        index.add(entry_of(written))
    expected = [index.pop().job_id for _ in range(len(index))]
    claimed = []
    while (job := queue.claim("w", timeout=0)) is not None:
        claimed.append(job.id)
    assert claimed == expected
