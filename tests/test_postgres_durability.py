"""Which PostgreSQL commits wait for the disk: the promise of a 202 (the row's INSERT),
the claim (its epoch fences every later write) and the outcome, with the result's chunks
in its transaction, do; lease renewals and progress, whose loss in a database crash is
harmless, do not (docs/performance.md)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, event

from app.generation import JobStatus, Priority
from app.generation.generators import OutputFile
from app.generation.job import Job, Progress
from app.generation.queue.postgres import PostgresQueue
from app.generation.results.database import DatabaseResultStore
from app.generation.store import driver_statements as hot
from app.generation.store.jobs import JobStore
from app.generation.store.listener import NoListener

SKIP_FLUSH = "SET LOCAL synchronous_commit = off"


class Transactions:
    """The statements of every transaction committed on `engine`, in commit order: those
    run through SQLAlchemy, and those of the hot path on the driver (hot.write)."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.committed: list[list[str]] = []
        self._open: dict[int, list[str]] = {}
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)
        monkeypatch.setattr(hot, "write", self._hot_write(hot.write))

    def _hot_write(self, write):
        def recorded(connection, prepared, values, *, dialect, prelude=None, then=None):
            row = write(connection, prepared, values, dialect=dialect, prelude=prelude, then=then)
            statements = [prelude] if prelude else []
            self.committed.append([*statements, " ".join(prepared.sql.split())])
            return row

        return recorded

    def _statement(self, connection, cursor, statement, parameters, context, many) -> None:
        self._open.setdefault(id(connection), []).append(" ".join(statement.split()))

    def _commit(self, connection) -> None:
        self.committed.append(self._open.pop(id(connection), []))

    def take(self) -> list[list[str]]:
        taken, self.committed = self.committed, []
        return taken


@pytest.fixture
def recorded(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[JobStore, PostgresQueue, Transactions]]:
    store = JobStore(pg_engine)
    queue = PostgresQueue(store, 10, NoListener(), aging_seconds=60)
    yield store, queue, Transactions(pg_engine, monkeypatch)


def durable(transaction: list[str]) -> bool:
    return SKIP_FLUSH not in transaction


def new_job() -> Job:
    return Job(
        pk=0,
        id=uuid.uuid4().hex,
        owner="someone",
        generator="record",
        params={},
        priority=Priority.NORMAL,
        status=JobStatus.QUEUED,
        created_at=datetime.now(UTC),
    )


def test_insert_claim_and_outcome_wait_for_the_disk_heartbeats_and_progress_do_not(recorded):
    store, queue, transactions = recorded
    new = new_job()
    queue.admit(new, share=0.0)
    [insert] = transactions.take()
    assert any(s.startswith("INSERT INTO jobs") for s in insert) and durable(insert)

    job = queue.claim("w", timeout=0)
    assert job is not None and job.status is JobStatus.RUNNING
    [claim] = transactions.take()
    assert any("FOR UPDATE SKIP LOCKED" in s for s in claim) and durable(claim)
    # One round trip: the claim takes the job and starts it in one statement.
    assert [s for s in claim if s != SKIP_FLUSH] == [claim[0]]

    assert store.renew_leases([job], datetime.now(UTC)) != []
    assert store.record_progress(job, Progress(50.0)) is not None
    renew, progress = transactions.take()
    assert not durable(renew) and not durable(progress)

    # The result's chunks are stored in the outcome's own (durable) transaction.
    results = DatabaseResultStore(store.engine)
    staged = results.stage(job.id, job.lease_epoch, [OutputFile("out.txt", b"done")], {})
    final = store.finish(job, JobStatus.SUCCEEDED, datetime.now(UTC), then=staged.write)
    staged.close()
    assert final is not None and final.status is JobStatus.SUCCEEDED
    [finish] = transactions.take()
    assert durable(finish)
    assert results.size(job.id, job.lease_epoch) == staged.info.bytes


def test_a_result_is_stored_with_its_runs_outcome_or_not_at_all(recorded):
    store, queue, _ = recorded
    job = new_job()
    queue.admit(job, share=0.0)
    lost = queue.claim("w", timeout=0)
    taken_over = store.requeue(lost) and queue.claim("w2", timeout=0)  # another run's epoch
    results = DatabaseResultStore(store.engine)
    staged = results.stage(lost.id, lost.lease_epoch, [OutputFile("out.txt", b"late")], {})
    try:
        assert store.finish(lost, JobStatus.SUCCEEDED, datetime.now(UTC), then=staged.write) is None
    finally:
        staged.close()
    with pytest.raises(FileNotFoundError):
        results.size(lost.id, lost.lease_epoch)  # the fenced UPDATE failed: no chunks either
    assert store.get(job.id).lease_epoch == taken_over.lease_epoch
