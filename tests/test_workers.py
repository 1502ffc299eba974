"""Dynamic workers: the pure scaling rule, then the pool growing and shrinking for real."""

import threading
import time
from datetime import datetime

import pytest

from app.generation import Job, JobStatus, Priority
from app.generation.execution.workers import WorkerPool, WorkerScaler
from app.generation.queue.memory import MemoryQueue
from app.generation.scheduling.policy import QueueEntry

from .clock import FakeClock
from .conftest import wait_for


def scaler(**overrides) -> WorkerScaler:
    options = {"minimum": 1, "maximum": 3, "scale_up_after": 5.0, "idle_after": 30.0}
    return WorkerScaler(**(options | overrides))


def test_scaler_adds_a_worker_once_a_backlog_lasted_long_enough():
    rule = scaler()
    assert rule.decide(100.0, workers=1, queued=2, oldest_idle=None) == 0
    assert rule.decide(104.9, workers=1, queued=2, oldest_idle=None) == 0
    assert rule.decide(105.0, workers=1, queued=2, oldest_idle=None) == 1
    assert rule.decide(106.0, workers=2, queued=2, oldest_idle=None) == 0  # a new period
    assert rule.decide(110.0, workers=2, queued=2, oldest_idle=None) == 1
    assert rule.decide(200.0, workers=3, queued=9, oldest_idle=None) == 0  # at maximum


def test_scaler_forgets_a_backlog_that_cleared():
    rule = scaler()
    rule.decide(100.0, workers=1, queued=2, oldest_idle=None)
    rule.decide(103.0, workers=1, queued=0, oldest_idle=103.0)
    assert rule.decide(106.0, workers=1, queued=2, oldest_idle=None) == 0


def test_scaler_retires_an_extra_worker_idle_long_enough_never_below_minimum():
    rule = scaler()
    assert rule.decide(100.0, workers=2, queued=0, oldest_idle=80.0) == 0
    assert rule.decide(110.0, workers=2, queued=0, oldest_idle=80.0) == -1
    assert rule.decide(500.0, workers=1, queued=0, oldest_idle=80.0) == 0


def test_scaler_rejects_a_maximum_below_the_minimum():
    with pytest.raises(ValueError):
        scaler(minimum=2, maximum=1)


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_pool_grows_while_the_queue_stays_deep_and_shrinks_when_idle(make_service, gate):
    clock = FakeClock()
    service = make_service(
        workers=1, workers_max=2, scale_up_seconds=5, idle_worker_seconds=30, clock=clock
    )
    service.start()
    first = service.submit("gate", {})
    assert gate.started.wait(5)
    waiting = service.submit("gate", {})
    service.tick()  # the backlog is noticed now...
    assert service.worker_count == 1
    clock.advance(5)
    service.tick()  # ...and has lasted long enough
    assert service.worker_count == 2 and service.stats()["workers"] == 2
    wait_for(service, waiting.id, {JobStatus.RUNNING})  # the new worker took it
    gate.release()
    wait_for(service, first.id), wait_for(service, waiting.id)
    wait_until(lambda: service.active_workers == 0)
    clock.advance(30)
    service.tick()
    assert service.worker_count == 1
    wait_until(lambda: len(service._execution.pool.threads()) == 1)
    follower = service.submit("record", {})
    assert wait_for(service, follower.id).status is JobStatus.SUCCEEDED


def test_a_draining_pool_does_not_grow(make_service, gate):
    clock = FakeClock()
    service = make_service(workers=1, workers_max=3, scale_up_seconds=1, clock=clock)
    service.start()
    service.submit("gate", {})
    assert gate.started.wait(5)
    service.submit("record", {})
    service.stop_accepting()
    service.tick()
    clock.advance(10)
    service.tick()
    assert len(service._execution.pool.threads()) <= 1


class FakeHelper:
    """A helper process that is due to retire when `due` is set (idle long enough)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = threading.Event()
        self.due = False
        self.retired = threading.Event()

    def retire_in(self) -> float | None:
        return 0.0 if self.due else None

    def retire_if_idle(self) -> bool:
        if not self.due:
            return False
        self.due = False
        self.retired.set()
        return True

    def close(self) -> None:
        self.closed.set()


def test_an_idle_thread_retires_its_helper_process_when_due_and_goes_on_taking_jobs():
    queue = MemoryQueue(10, store=ClaimEverything())
    helper = FakeHelper("gen-process-1")
    helper.due = True
    ran: list[str] = []

    def process(job, own_helper):
        ran.append(job.id)

    pool = WorkerPool(queue, process, scaler(), time.monotonic, helper=lambda _: helper)
    pool.start()
    assert helper.retired.wait(5)  # while waiting for a job, not after one
    assert ran == [] and not helper.closed.is_set()
    queue.reserve()
    queue.put(QueueEntry("next", Priority.NORMAL, 1, "anonymous", 0.0))
    wait_until(lambda: ran == ["next"])
    queue.close()
    assert pool.join(5)
    assert helper.closed.is_set()


class ClaimEverything:
    """A job store whose every queued job is still there to claim."""

    def claim(self, job_id: str, worker: str, now: datetime) -> Job:
        return Job(0, job_id, "anonymous", "g", {}, Priority.NORMAL, JobStatus.RUNNING, now)


def test_each_thread_gets_its_own_helper_process_closed_when_it_retires():
    now = [0.0]
    queue = MemoryQueue(10, store=ClaimEverything(), clock=lambda: now[0])
    helpers: list[FakeHelper] = []
    release = threading.Event()
    ran: list[tuple[str, str]] = []

    def helper(name: str) -> FakeHelper:
        helpers.append(FakeHelper(name.replace("worker", "process")))
        return helpers[-1]

    def process(job, own_helper):
        ran.append((job.id, own_helper.name))
        release.wait(5)

    pool = WorkerPool(queue, process, scaler(maximum=2), lambda: now[0], helper=helper)
    pool.start()
    for order, job_id in enumerate(("held", "waiting"), start=1):
        queue.reserve()
        queue.put(QueueEntry(job_id, Priority.NORMAL, order, "anonymous", 0.0))
    wait_until(lambda: len(queue) == 1)
    pool.rebalance()
    now[0] = 5.0
    assert pool.rebalance() == 1
    wait_until(lambda: len(ran) == 2)
    assert sorted(ran) == [("held", "gen-process-1"), ("waiting", "gen-process-2")]
    release.set()
    wait_until(lambda: pool.idle == 2)
    now[0] = 100.0
    assert pool.rebalance() == -1
    wait_until(lambda: sum(h.closed.is_set() for h in helpers) == 1)
    assert pool.count == 1
    queue.close()
    assert pool.join(5) and all(h.closed.is_set() for h in helpers)
