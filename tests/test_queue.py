import threading

import pytest

from app.generation import Priority, QueueFullError, ServiceStoppedError
from app.generation.queue import JobQueue


def fill(queue: JobQueue, *jobs: tuple[str, Priority]) -> None:
    for order, (job_id, priority) in enumerate(jobs, start=1):
        queue.reserve()
        queue.put(job_id, priority, order)


def drain(queue: JobQueue) -> list[str]:
    out = []
    while (ticket := queue.get(timeout=0)) is not None:
        out.append(ticket.job_id)
    return out


def test_higher_priority_comes_out_first_and_fifo_within_a_level():
    queue = JobQueue(10)
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
    queue = JobQueue(2)
    fill(queue, ("a", Priority.NORMAL))
    queue.reserve()
    with pytest.raises(QueueFullError):
        queue.reserve()
    queue.release()
    queue.reserve()  # the released slot is available again


def test_removed_job_is_skipped_and_frees_capacity():
    queue = JobQueue(2)
    fill(queue, ("a", Priority.NORMAL), ("b", Priority.NORMAL))
    assert queue.remove("a")
    assert not queue.remove("a")
    queue.reserve()
    assert drain(queue) == ["b"]


def test_position_counts_jobs_that_start_before():
    queue = JobQueue(10)
    fill(queue, ("n1", Priority.NORMAL), ("n2", Priority.NORMAL), ("h1", Priority.HIGH))
    assert queue.position("h1") == 0
    assert queue.position("n1") == 1
    assert queue.position("n2") == 2
    assert queue.position("missing") is None
    assert queue.depth_by_priority() == {Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 0}


def test_close_wakes_waiting_getters_and_refuses_new_work():
    queue = JobQueue(2)
    results = []
    waiter = threading.Thread(target=lambda: results.append(queue.get()))
    waiter.start()
    queue.close()
    waiter.join(2)
    assert results == [None]
    with pytest.raises(ServiceStoppedError):
        queue.reserve()


def test_get_times_out_with_none():
    assert JobQueue(1).get(timeout=0.01) is None


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        JobQueue(0)
