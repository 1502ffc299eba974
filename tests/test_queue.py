"""The thread-safe queue: capacity, blocking, removal, waking. Order is test_scheduling's."""

import threading

import pytest

from app.generation import Priority, QueueFullError, ServiceStoppedError
from app.generation.queue.memory import MemoryQueue
from app.generation.scheduling.policy import DEFAULT_AGING_SECONDS, QueueEntry, offset


def make_queue(capacity: int) -> MemoryQueue:
    return MemoryQueue(capacity, clock=lambda: 0.0)


def entry(job_id: str, priority: Priority = Priority.NORMAL, order: int = 0) -> QueueEntry:
    """Keyed as admitted at t=0 (scheduling/policy.py)."""
    key = offset(priority, DEFAULT_AGING_SECONDS)
    return QueueEntry(job_id, priority, order, "anonymous", enqueued_at=0.0, key=key)


def fill(queue: MemoryQueue, *jobs: tuple[str, Priority]) -> None:
    for order, (job_id, priority) in enumerate(jobs, start=1):
        queue.reserve()
        queue.put(entry(job_id, priority, order))


def drain(queue: MemoryQueue) -> list[str]:
    out = []
    while (taken := queue.get(timeout=0)) is not None:
        out.append(taken.job_id)
    return out


def test_higher_priority_comes_out_first_and_fifo_within_a_level():
    queue = make_queue(10)
    fill(
        queue,
        ("low1", Priority.LOW),
        ("norm1", Priority.NORMAL),
        ("high1", Priority.HIGH),
        ("norm2", Priority.NORMAL),
        ("high2", Priority.HIGH),
        ("low2", Priority.LOW),
    )
    assert drain(queue) == ["high1", "high2", "norm1", "norm2", "low1", "low2"]


def test_reserve_rejects_when_full_and_release_frees_the_slot():
    queue = make_queue(2)
    fill(queue, ("a", Priority.NORMAL))
    queue.reserve()
    with pytest.raises(QueueFullError):
        queue.reserve()
    with pytest.raises(QueueFullError):
        queue.check_room()
    queue.release()
    queue.check_room()  # checking holds nothing
    queue.reserve()  # the released slot is available again


def test_removed_job_is_skipped_and_frees_capacity():
    queue = make_queue(2)
    fill(queue, ("a", Priority.NORMAL), ("b", Priority.NORMAL))
    assert queue.remove("a")
    assert not queue.remove("a")
    queue.reserve()
    assert drain(queue) == ["b"]


def test_depth_and_version_follow_every_change():
    queue = make_queue(10)
    fill(queue, ("n1", Priority.NORMAL), ("n2", Priority.NORMAL), ("h1", Priority.HIGH))
    assert queue.depth_by_priority() == {Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 0}
    before = queue.version
    queue.remove("n2")
    queue.get(timeout=0)
    assert queue.version == before + 2
    assert queue.depth_by_priority() == {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 0}
    assert "n1" in queue and "h1" not in queue and len(queue) == 1


def test_snapshot_is_a_private_copy():
    queue = make_queue(10)
    fill(queue, ("a", Priority.NORMAL))
    version, index = queue.snapshot()
    assert index.pop().job_id == "a"
    assert "a" in queue and version == queue.version


def test_close_wakes_waiting_getters_and_refuses_new_work():
    queue = make_queue(2)
    results = []
    waiter = threading.Thread(target=lambda: results.append(queue.get()))
    waiter.start()
    queue.close()
    waiter.join(2)
    assert results == [None]
    with pytest.raises(ServiceStoppedError):
        queue.reserve()


def test_wake_makes_a_waiter_whose_stop_condition_holds_return_none():
    queue = make_queue(2)
    stop = threading.Event()
    results = []
    waiter = threading.Thread(target=lambda: results.append(queue.get(stop=stop.is_set)))
    waiter.start()
    stop.set()
    queue.wake()
    waiter.join(2)
    assert results == [None] and not waiter.is_alive()


def test_get_times_out_with_none():
    assert make_queue(1).get(timeout=0.01) is None
