"""The policy in SQL agrees with the Python one: rule 1 on SQLite and on PostgreSQL, and
the whole claim order on PostgreSQL."""

from __future__ import annotations

import os
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError

from app.generation import Job, JobStatus, Priority, schema
from app.generation.db import create_database_engine
from app.generation.jobs import JobStore
from app.generation.listener import NoListener
from app.generation.models import JobRow
from app.generation.queue_postgres import PostgresQueue
from app.generation.scheduling import (
    QueueEntry,
    SchedulingIndex,
    effective_priority,
    effective_priority_sql,
)

POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
AGING = 60.0
WAITED = (0, 1, 59.999, 60, 61, 119.5, 120, 121, 3600)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        yield create_database_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
        return
    name = f"gs_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        admin.dispose()
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("PostgreSQL is not reachable")
    engine = create_database_engine(f"{POSTGRES}/{name}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_sql_effective_priority_matches_the_python_rule(engine):
    schema.upgrade(engine)
    store = JobStore(engine)
    expected = {}
    # Oldest first, so that created_at rises with the primary key, as it does in service.
    for waited, priority in sorted(((w, p) for w in WAITED for p in Priority), reverse=True):
        job = store.insert(
            Job(
                pk=0,
                id=uuid.uuid4().hex,
                owner="anonymous",
                generator="g",
                params={},
                priority=priority,
                status=JobStatus.QUEUED,
                created_at=NOW - timedelta(seconds=waited),
            )
        )
        expected[job.id] = effective_priority(priority, waited, AGING)
    columns = JobRow.__table__.c
    level = effective_priority_sql(columns.priority, columns.created_at, NOW, AGING)
    with engine.connect() as connection:
        got = dict(connection.execute(select(columns.id, level)).all())
        ordered = connection.execute(select(columns.id).order_by(level, columns.pk)).scalars()
        sql_order = list(ordered)
    assert got == expected
    # One owner, one moment: the index drains in exactly the SQL order.
    index = SchedulingIndex(AGING)
    for job in store.queued():
        entry = QueueEntry(job.id, job.priority, job.pk, job.owner, job.created_at.timestamp())
        index.add(entry, NOW.timestamp())
    drained = [index.pop(NOW.timestamp()).job_id for _ in range(len(index))]
    assert drained == sql_order


def test_postgres_claims_in_exactly_the_order_of_the_scheduling_index(pg_engine):
    """Rules 1-3 together: the SQL claim (aging, then owners' turns kept in
    `owner_turns`, then the primary key) drains a mixed queue as the index does."""
    rng = random.Random(4)
    store = JobStore(pg_engine)
    queue = PostgresQueue(store, 1000, NoListener(), aging_seconds=AGING, clock=NOW.timestamp)
    index = SchedulingIndex(AGING)
    waits = sorted((rng.uniform(0, 200) for _ in range(60)), reverse=True)  # oldest first
    for n, waited in enumerate(waits):
        job = store.insert(
            Job(
                pk=0,
                id=f"job-{n:02d}",
                owner=rng.choice(["ann", "bob", "cy", "dee"]),
                generator="g",
                params={},
                priority=rng.choice(list(Priority)),
                status=JobStatus.QUEUED,
                created_at=NOW - timedelta(seconds=waited),
            )
        )
        entry = QueueEntry(job.id, job.priority, job.pk, job.owner, job.created_at.timestamp())
        index.add(entry, NOW.timestamp())
    expected = [index.pop(NOW.timestamp()).job_id for _ in range(len(index))]
    claimed = []
    while (job := queue.claim("w", timeout=0)) is not None:
        claimed.append(job.id)
    assert claimed == expected
    assert len(set(claimed)) == 60
