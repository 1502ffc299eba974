"""The queue contract (app/generation/queue.py), run against every backend: the in-memory
index on SQLite and the shared PostgreSQL claimer. Like huey's StorageTests, one class,
one fixture that hands out each backend in turn."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.generation import Job, JobStatus, Priority, QueueFullError, ServiceStoppedError, schema
from app.generation.db import create_database_engine
from app.generation.jobs import JobStore
from app.generation.listener import NoListener
from app.generation.queue import JobQueue, MemoryQueue
from app.generation.queue_postgres import PostgresQueue

LEASE = 30


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def sqlite_engine(tmp_path: Path) -> Engine:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    schema.upgrade(engine)
    return engine


@pytest.fixture(params=["memory", "postgres"])
def make_queue(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[Callable[..., JobQueue]]:
    """Queues of the backend under test; all on one database, closed at the end."""
    if request.param == "memory":
        engine = sqlite_engine(tmp_path)
    else:
        engine = request.getfixturevalue("pg_engine")
    built: list[JobQueue] = []

    def make(capacity: int = 10) -> JobQueue:
        store = JobStore(engine, lease_seconds=LEASE)
        if request.param == "memory":
            queue: JobQueue = MemoryQueue(store, capacity, clock=clock)
        else:
            queue = PostgresQueue(store, capacity, NoListener(), clock=clock)
        built.append(queue)
        return queue

    yield make
    for queue in built:
        queue.close()


def new_job(tag: str = "", priority: Priority = Priority.NORMAL) -> Job:
    return Job(
        pk=0,
        id=uuid.uuid4().hex,
        owner="anonymous",
        generator="record",
        params={"tag": tag},
        priority=priority,
        status=JobStatus.QUEUED,
        created_at=datetime.now(UTC),
    )


def put(queue: JobQueue, tag: str = "", priority: Priority = Priority.NORMAL) -> Job:
    job, _ = queue.submit(new_job(tag, priority))
    return job


def drain(queue: JobQueue) -> list[str]:
    tags = []
    while (job := queue.claim("w", timeout=0)) is not None:
        tags.append(job.params["tag"])
    return tags


class TestQueueContract:
    def test_submit_writes_the_row_and_claim_runs_it_under_a_lease(self, make_queue, clock):
        queue = make_queue()
        submitted = put(queue, "a")
        assert queue.store.get(submitted.id).status is JobStatus.QUEUED
        claimed = queue.claim("host:1/gen-worker-1", timeout=0)
        assert claimed.id == submitted.id
        assert claimed.status is JobStatus.RUNNING
        assert (claimed.attempts, claimed.lease_epoch) == (1, 1)
        assert claimed.worker == "host:1/gen-worker-1"
        assert claimed.lease_expires_at == clock.now + timedelta(seconds=LEASE)

    def test_submit_announces_the_position_before_any_worker_can_claim(self, make_queue):
        queue = make_queue()
        put(queue, "high", Priority.HIGH)
        claimed_at_announce = []

        def announce(job: Job, position: int) -> None:
            claimed_at_announce.append((position, queue.claim("w", timeout=0)))

        job, position = queue.submit(new_job("normal"), announce=announce)
        high = claimed_at_announce[0][1]
        assert position == 1 and claimed_at_announce[0][0] == 1
        assert high.params["tag"] == "high"  # not the job being announced
        assert queue.claim("w", timeout=0).id == job.id

    def test_higher_priority_is_claimed_first_and_fifo_within_a_level(self, make_queue):
        queue = make_queue()
        for tag, priority in [
            ("low1", Priority.LOW),
            ("norm1", Priority.NORMAL),
            ("high1", Priority.HIGH),
            ("norm2", Priority.NORMAL),
            ("high2", Priority.HIGH),
            ("low2", Priority.LOW),
        ]:
            put(queue, tag, priority)
        assert drain(queue) == ["high1", "high2", "norm1", "norm2", "low1", "low2"]

    def test_submit_rejects_when_full_and_a_claim_frees_a_slot(self, make_queue):
        queue = make_queue(capacity=2)
        put(queue)
        put(queue)
        with pytest.raises(QueueFullError):
            put(queue)
        assert queue.store.count_by_status()[JobStatus.QUEUED] == 2  # nothing half-written
        queue.claim("w", timeout=0)
        put(queue)  # running jobs do not count against the capacity

    def test_cancelled_job_is_never_claimed_and_frees_its_slot(self, make_queue):
        queue = make_queue(capacity=2)
        doomed = put(queue, "doomed")
        put(queue, "kept")
        assert queue.cancel(doomed.id).status is JobStatus.CANCELLED
        assert queue.cancel(doomed.id) is None
        put(queue, "late")
        assert drain(queue) == ["kept", "late"]

    def test_position_and_depth_count_what_starts_before(self, make_queue):
        queue = make_queue()
        n1 = put(queue, "n1")
        n2 = put(queue, "n2")
        h1 = put(queue, "h1", Priority.HIGH)
        assert [queue.position(job) for job in (h1, n1, n2)] == [0, 1, 2]
        assert len(queue) == 3
        assert queue.depth_by_priority() == {Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 0}
        queue.claim("w", timeout=0)
        assert queue.position(h1) is None
        assert queue.position(n2) == 1

    def test_claim_times_out_with_none_when_nothing_is_queued(self, make_queue):
        assert make_queue().claim("w", timeout=0.05) is None

    def test_a_waiting_claim_takes_a_job_submitted_meanwhile(self, make_queue):
        queue = make_queue()
        claimed = []
        waiter = threading.Thread(target=lambda: claimed.append(queue.claim("w", timeout=5)))
        waiter.start()
        put(queue, "late")
        waiter.join(5)
        assert [job.params["tag"] for job in claimed] == ["late"]

    def test_close_wakes_waiting_claims_and_refuses_submissions(self, make_queue):
        queue = make_queue()
        results = []
        waiter = threading.Thread(target=lambda: results.append(queue.claim("w")))
        waiter.start()
        queue.close()
        waiter.join(5)
        assert results == [None]
        with pytest.raises(ServiceStoppedError):
            put(queue)

    def test_concurrent_workers_claim_each_job_exactly_once(self, make_queue):
        queue = make_queue(capacity=100)
        submitted = {put(queue, str(n)).id for n in range(60)}
        claimed: list[str] = []
        lock = threading.Lock()

        def work() -> None:
            while (job := queue.claim(threading.current_thread().name, timeout=0)) is not None:
                with lock:
                    claimed.append(job.id)

        workers = [threading.Thread(target=work) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert sorted(claimed) == sorted(submitted)

    def test_an_expired_lease_is_taken_back_and_the_zombie_is_fenced_out(self, make_queue, clock):
        queue = make_queue()
        put(queue, "a")
        zombie = queue.claim("dead", timeout=0)
        clock.advance(LEASE + 1)
        taken = queue.store.reclaim(max_attempts=3, now=clock())
        assert [(job.id, job.status) for job in taken] == [(zombie.id, JobStatus.QUEUED)]
        queue.returned(taken)
        winner = queue.claim("alive", timeout=0)
        assert (winner.id, winner.attempts, winner.lease_epoch) == (zombie.id, 2, 2)
        assert queue.store.finish(zombie, JobStatus.SUCCEEDED, clock()) is None
        assert queue.store.record_progress(zombie, {"progress_percent": 50.0}) is None
        assert queue.store.finish(winner, JobStatus.SUCCEEDED, clock()).status is (
            JobStatus.SUCCEEDED
        )

    def test_a_renewed_lease_is_kept(self, make_queue, clock):
        queue = make_queue()
        put(queue)
        running = queue.claim("w", timeout=0)
        clock.advance(LEASE - 1)
        assert [job.id for job in queue.store.renew_leases([running], clock())] == [running.id]
        clock.advance(LEASE - 1)
        assert queue.store.reclaim(max_attempts=3, now=clock()) == []

    def test_a_lost_lease_is_not_renewed(self, make_queue, clock):
        queue = make_queue()
        put(queue)
        zombie = queue.claim("dead", timeout=0)
        clock.advance(LEASE + 1)
        queue.returned(queue.store.reclaim(max_attempts=3, now=clock()))
        queue.claim("alive", timeout=0)
        assert queue.store.renew_leases([zombie], clock()) == []

    def test_lease_expiry_fails_a_job_out_of_attempts(self, make_queue, clock):
        queue = make_queue()
        job = put(queue)
        for _ in range(2):
            queue.claim("dead", timeout=0)
            clock.advance(LEASE + 1)
            queue.returned(queue.store.reclaim(max_attempts=2, now=clock()))
        failed = queue.store.get(job.id)
        assert (failed.status, failed.attempts) == (JobStatus.FAILED, 2)
        assert "JOB_MAX_ATTEMPTS" in failed.error
        assert queue.claim("w", timeout=0) is None

    def test_lease_expiry_of_a_job_asked_to_cancel_cancels_it(self, make_queue, clock):
        queue = make_queue()
        job = put(queue)
        queue.claim("dead", timeout=0)
        queue.store.request_cancel(job.id)
        clock.advance(LEASE + 1)
        queue.returned(queue.store.reclaim(max_attempts=3, now=clock()))
        assert queue.store.get(job.id).status is JobStatus.CANCELLED


def test_memory_queue_recovers_every_running_job_at_start(tmp_path, clock):
    store = JobStore(sqlite_engine(tmp_path), lease_seconds=LEASE)
    crashed = MemoryQueue(store, 10, clock=clock)
    put(crashed, "left running")
    crashed.claim("dead", timeout=0)
    restarted = MemoryQueue(store, 10, clock=clock)
    assert [job.status for job in restarted.recover(max_attempts=3)] == [JobStatus.QUEUED]
    assert drain(restarted) == ["left running"]


def test_postgres_queue_leaves_live_leases_alone_at_start(pg_engine, clock):
    store = JobStore(pg_engine, lease_seconds=LEASE)
    busy = PostgresQueue(store, 10, NoListener(), clock=clock)
    put(busy, "running elsewhere")
    busy.claim("other-process", timeout=0)
    starting = PostgresQueue(store, 10, NoListener(), clock=clock)
    assert starting.recover(max_attempts=3) == []
    clock.advance(LEASE + 1)
    assert [job.status for job in starting.recover(max_attempts=3)] == [JobStatus.QUEUED]


def test_postgres_capacity_is_shared_by_every_process(pg_engine):
    store = JobStore(pg_engine)
    here, there = (PostgresQueue(store, 2, NoListener()) for _ in range(2))
    put(here)
    put(there)
    with pytest.raises(QueueFullError):
        put(here)
    assert len(there) == 2
