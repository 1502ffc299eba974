"""The queue contract (app/generation/queue/contract.py), run against every backend: the in-memory
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
from sqlalchemy.exc import StatementError

from app.generation import Job, JobStatus, Priority, QueueFullError, ServiceStoppedError
from app.generation.job import Progress
from app.generation.queue.contract import JobQueue, entry_of
from app.generation.queue.memory import MemoryQueue
from app.generation.queue.postgres import PostgresQueue
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore
from app.generation.store.listener import NoListener

LEASE = 30
AGING = 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def seconds(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def sqlite_engine(tmp_path: Path) -> Engine:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    schema.upgrade(engine)
    return engine


def build(backend: str, store: JobStore, capacity: int, clock: FakeClock) -> JobQueue:
    options = {"aging_seconds": AGING, "clock": clock.seconds}
    if backend == "memory":
        return MemoryQueue(capacity, store=store, **options)
    return PostgresQueue(store, capacity, NoListener(), **options)


@pytest.fixture(params=["memory", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, JobStore]]:
    if request.param == "memory":
        engine = sqlite_engine(tmp_path)
    else:
        engine = request.getfixturevalue("pg_engine")
    # Keys from the test's clock, not PostgreSQL's, so that tests can make time pass
    # (test_postgres_cluster.py checks the database clock).
    yield request.param, JobStore(engine, lease_seconds=LEASE, database_clock=False)


@pytest.fixture
def make_queue(backend, clock: FakeClock) -> Iterator[Callable[..., JobQueue]]:
    """Queues of the backend under test, all on one database, closed at the end."""
    name, store = backend
    built: list[JobQueue] = []

    def make(capacity: int = 10) -> JobQueue:
        built.append(build(name, store, capacity, clock))
        return built[-1]

    yield make
    for queue in built:
        queue.close()


@pytest.fixture
def store(backend) -> JobStore:
    return backend[1]


def put(
    queue: JobQueue,
    store: JobStore,
    tag: str = "",
    priority: Priority = Priority.NORMAL,
    owner: str = "anonymous",
    created_at: datetime | None = None,
    share: float = 0.0,
) -> Job:
    """Submit as the service does: admit (write the row), then index it."""
    new = Job(
        pk=0,
        id=uuid.uuid4().hex,
        owner=owner,
        generator="record",
        params={"tag": tag},
        priority=priority,
        status=JobStatus.QUEUED,
        created_at=created_at or datetime.fromtimestamp(queue._clock(), UTC),
    )
    job = queue.admit(new, share=share)
    queue.put(entry_of(job, lambda generator, params: 1.0))
    return job


def drain(queue: JobQueue) -> list[str]:
    tags = []
    while (job := queue.claim("w", timeout=0)) is not None:
        tags.append(job.params["tag"])
    return tags


class TestQueueContract:
    def test_admit_writes_the_row_and_claim_runs_it_under_a_lease(self, make_queue, store, clock):
        queue = make_queue()
        submitted = put(queue, store, "a")
        assert store.get(submitted.id).status is JobStatus.QUEUED
        assert submitted.id in queue and len(queue) == 1
        claimed = queue.claim("host:1/gen-worker-1", timeout=0)
        assert claimed.id == submitted.id
        assert claimed.status is JobStatus.RUNNING
        assert (claimed.attempts, claimed.lease_epoch) == (1, 1)
        assert claimed.worker == "host:1/gen-worker-1"
        assert claimed.lease_expires_at == clock.now + timedelta(seconds=LEASE)
        assert submitted.id not in queue and len(queue) == 0

    def test_higher_priority_is_claimed_first_and_fifo_within_a_level(self, make_queue, store):
        queue = make_queue()
        for tag, priority in [
            ("low1", Priority.LOW),
            ("norm1", Priority.NORMAL),
            ("high1", Priority.HIGH),
            ("norm2", Priority.NORMAL),
            ("high2", Priority.HIGH),
            ("low2", Priority.LOW),
        ]:
            put(queue, store, tag, priority)
        assert drain(queue) == ["high1", "high2", "norm1", "norm2", "low1", "low2"]

    def test_a_job_that_waited_long_enough_overtakes_a_higher_priority(
        self, make_queue, store, clock
    ):
        queue = make_queue()
        put(queue, store, "old-low", Priority.LOW, created_at=clock.now)
        clock.advance(2 * AGING)
        put(queue, store, "new-normal", Priority.NORMAL)
        assert drain(queue) == ["old-low", "new-normal"]

    def test_an_owners_flood_is_spread_out_and_another_owner_goes_in_between(
        self, make_queue, store
    ):
        queue = make_queue()
        for n in range(3):
            put(queue, store, f"flood{n}", owner="flooder", share=10.0)
        put(queue, store, "polite", owner="polite", share=10.0)
        assert drain(queue) == ["flood0", "polite", "flood1", "flood2"]

    def test_admit_rejects_when_full_and_a_claim_frees_a_slot(self, make_queue, store):
        queue = make_queue(capacity=2)
        put(queue, store)
        put(queue, store)
        with pytest.raises(QueueFullError):
            put(queue, store)
        with pytest.raises(QueueFullError):
            queue.check_room()
        assert store.count_by_status()[JobStatus.QUEUED] == 2  # nothing half-written
        queue.claim("w", timeout=0)
        put(queue, store)  # running jobs do not count against the capacity

    def test_a_failed_write_leaves_no_row_and_no_slot_taken(self, make_queue, store):
        queue = make_queue(capacity=1)
        unwritable = Job(
            pk=0,
            id=uuid.uuid4().hex,
            owner="anonymous",
            generator="record",
            params={"not json": object()},
            priority=Priority.NORMAL,
            status=JobStatus.QUEUED,
            created_at=datetime.fromtimestamp(queue._clock(), UTC),
        )
        with pytest.raises((StatementError, TypeError)):  # as each driver reports it
            queue.admit(unwritable, share=0.0)
        put(queue, store)

    def test_a_cancelled_job_is_never_claimed_and_frees_its_slot_at_once(
        self, make_queue, store, clock
    ):
        queue = make_queue(capacity=2)
        doomed = put(queue, store, "doomed")
        put(queue, store, "kept")
        assert store.cancel_queued(doomed.id, clock()).status is JobStatus.CANCELLED
        queue.remove(doomed.id)
        put(queue, store, "late")
        assert drain(queue) == ["kept", "late"]

    def test_depth_counts_queued_jobs_by_priority(self, make_queue, store):
        queue = make_queue()
        put(queue, store, "n1")
        put(queue, store, "n2")
        put(queue, store, "h1", Priority.HIGH)
        assert queue.depth_by_priority() == {Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 0}
        queue.claim("w", timeout=0)
        assert queue.depth_by_priority() == {Priority.HIGH: 0, Priority.NORMAL: 2, Priority.LOW: 0}

    def test_claim_times_out_with_none_when_nothing_is_queued(self, make_queue):
        assert make_queue().claim("w", timeout=0.05) is None

    def test_a_waiting_claim_takes_a_job_submitted_meanwhile(self, make_queue, store):
        queue = make_queue()
        claimed = []
        waiter = threading.Thread(target=lambda: claimed.append(queue.claim("w", timeout=5)))
        waiter.start()
        put(queue, store, "late")
        waiter.join(5)
        assert [job.params["tag"] for job in claimed] == ["late"]

    def test_close_wakes_waiting_claims_and_refuses_admissions(self, make_queue, store):
        queue = make_queue()
        results = []
        waiter = threading.Thread(target=lambda: results.append(queue.claim("w")))
        waiter.start()
        queue.close()
        waiter.join(5)
        assert results == [None]
        with pytest.raises(ServiceStoppedError):
            put(queue, store)

    def test_a_waiting_claim_whose_stop_condition_holds_returns_after_wake(self, make_queue):
        queue = make_queue()
        stop = threading.Event()
        results = []
        waiter = threading.Thread(target=lambda: results.append(queue.claim("w", stop=stop.is_set)))
        waiter.start()
        stop.set()
        queue.wake()
        waiter.join(5)
        assert results == [None] and not waiter.is_alive()

    def test_concurrent_workers_claim_each_job_exactly_once(self, make_queue, store):
        queue = make_queue(capacity=100)
        submitted = {put(queue, store, str(n)).id for n in range(60)}
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

    def test_a_job_taken_back_after_its_lease_expired_keeps_its_place(
        self, make_queue, store, clock
    ):
        queue = make_queue()
        put(queue, store, "old-low", Priority.LOW)  # keyed t + 120
        lost = queue.claim("dead", timeout=0)
        clock.advance(LEASE + 100)
        put(queue, store, "new-high", Priority.HIGH)  # keyed t + 131: after it
        put(queue, store, "new-normal")
        taken = store.reclaim(max_attempts=3, now=clock())
        assert [job.sort_key for job in taken] == [lost.sort_key]
        queue.returned(entry_of(job, lambda g, p: 1.0) for job in taken)
        assert drain(queue) == ["old-low", "new-high", "new-normal"]

    def test_a_job_requeued_by_a_drain_keeps_its_place(self, make_queue, store, clock):
        queue = make_queue()
        put(queue, store, "first")
        interrupted = queue.claim("draining", timeout=0)
        clock.advance(5)
        put(queue, store, "second")
        requeued = store.requeue(interrupted)
        queue.returned([entry_of(requeued, lambda g, p: 1.0)])
        assert drain(queue) == ["first", "second"]

    def test_an_expired_lease_is_taken_back_and_the_zombie_is_fenced_out(
        self, make_queue, store, clock
    ):
        queue = make_queue()
        put(queue, store, "a")
        zombie = queue.claim("dead", timeout=0)
        clock.advance(LEASE + 1)
        taken = store.reclaim(max_attempts=3, now=clock())
        assert [(job.id, job.status) for job in taken] == [(zombie.id, JobStatus.QUEUED)]
        queue.returned(entry_of(job, lambda g, p: 1.0) for job in taken)
        winner = queue.claim("alive", timeout=0)
        assert (winner.id, winner.attempts, winner.lease_epoch) == (zombie.id, 2, 2)
        assert store.finish(zombie, JobStatus.SUCCEEDED, clock()) is None
        assert store.record_progress(zombie, Progress(50.0)) is None
        assert store.requeue(zombie) is None
        assert store.finish(winner, JobStatus.SUCCEEDED, clock()).status is JobStatus.SUCCEEDED

    def test_a_renewed_lease_is_kept(self, make_queue, store, clock):
        queue = make_queue()
        put(queue, store)
        running = queue.claim("w", timeout=0)
        clock.advance(LEASE - 1)
        assert [job.id for job in store.renew_leases([running], clock())] == [running.id]
        clock.advance(LEASE - 1)
        assert store.reclaim(max_attempts=3, now=clock()) == []

    def test_a_lost_lease_is_not_renewed(self, make_queue, store, clock):
        queue = make_queue()
        put(queue, store)
        zombie = queue.claim("dead", timeout=0)
        clock.advance(LEASE + 1)
        taken = store.reclaim(max_attempts=3, now=clock())
        queue.returned(entry_of(job, lambda g, p: 1.0) for job in taken)
        queue.claim("alive", timeout=0)
        assert store.renew_leases([zombie], clock()) == []

    def test_lease_expiry_fails_a_job_out_of_attempts(self, make_queue, store, clock):
        queue = make_queue()
        job = put(queue, store)
        for _ in range(2):
            queue.claim("dead", timeout=0)
            clock.advance(LEASE + 1)
            taken = store.reclaim(max_attempts=2, now=clock())
            queue.returned(
                entry_of(j, lambda g, p: 1.0) for j in taken if j.status.value == "queued"
            )
        failed = store.get(job.id)
        assert (failed.status, failed.attempts) == (JobStatus.FAILED, 2)
        assert "JOB_MAX_ATTEMPTS" in failed.error
        assert queue.claim("w", timeout=0) is None

    def test_lease_expiry_of_a_job_asked_to_cancel_cancels_it(self, make_queue, store, clock):
        queue = make_queue()
        job = put(queue, store)
        queue.claim("dead", timeout=0)
        store.request_cancel(job.id)
        clock.advance(LEASE + 1)
        store.reclaim(max_attempts=3, now=clock())
        assert store.get(job.id).status is JobStatus.CANCELLED


def test_memory_queue_recovers_every_running_job_at_start(tmp_path, clock):
    store = JobStore(sqlite_engine(tmp_path), lease_seconds=LEASE)
    crashed = build("memory", store, 10, clock)
    put(crashed, store, "left running")
    crashed.claim("dead", timeout=0)
    restarted = build("memory", store, 10, clock)
    assert [job.status for job in restarted.recover(max_attempts=3)] == [JobStatus.QUEUED]
    assert drain(restarted) == ["left running"]


def test_postgres_queue_leaves_live_leases_alone_at_start(pg_engine, clock):
    store = JobStore(pg_engine, lease_seconds=LEASE)
    busy = build("postgres", store, 10, clock)
    put(busy, store, "running elsewhere")
    busy.claim("other-process", timeout=0)
    starting = build("postgres", store, 10, clock)
    assert starting.recover(max_attempts=3) == []
    clock.advance(LEASE + 1)
    assert [job.status for job in starting.recover(max_attempts=3)] == [JobStatus.QUEUED]


def test_postgres_capacity_is_shared_by_every_process(pg_engine, clock):
    store = JobStore(pg_engine)
    here, there = (build("postgres", store, 2, clock) for _ in range(2))
    put(here, store)
    put(there, store)
    with pytest.raises(QueueFullError):
        put(here, store)
    there.refresh(force=True)
    assert len(there) == 2  # its copy of the queue, for forecasts, holds both


def test_postgres_copy_of_the_queue_learns_of_claims_elsewhere_on_refresh(pg_engine, clock):
    store = JobStore(pg_engine)
    here, there = (build("postgres", store, 10, clock) for _ in range(2))
    job = put(here, store)
    there.refresh(force=True)
    assert job.id in there
    here.claim("w", timeout=0)
    there.refresh(force=True)
    assert job.id not in there and len(there) == 0


def test_postgres_re_read_that_finds_nothing_new_keeps_the_forecasts_plan(pg_engine, clock):
    store = JobStore(pg_engine, database_clock=False)
    here, there = (build("postgres", store, 10, clock) for _ in range(2))
    for n in range(3):
        put(here, store, f"mine{n}")
    version = here.version
    here.refresh(force=True)
    assert here.version == version  # nothing changed elsewhere: no replay
    theirs = put(there, store, "theirs")
    here.refresh(force=True)
    assert theirs.id in here and here.version > version
