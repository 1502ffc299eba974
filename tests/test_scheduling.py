"""The scheduling policy, pure: a key fixed at admission (aging offset, fair share), FIFO."""

import dataclasses
import random

import pytest

from app.generation import Priority
from app.generation.scheduling.policy import QueueEntry, SchedulingIndex, admission_key, offset

HIGH, NORMAL, LOW = Priority.HIGH, Priority.NORMAL, Priority.LOW
AGING = 60.0


class Jobs:
    """Admits entries as the INSERT does: keyed after the owner's queued tail, with
    increasing `order`, as rows get increasing primary keys."""

    def __init__(self, index: SchedulingIndex) -> None:
        self.index = index
        self.order = 0

    def add(self, job_id, priority=NORMAL, owner="anonymous", at=0.0, share=0.0):
        self.order += 1
        key = self.index.key_for(owner, int(priority), at, share)
        entry = QueueEntry(job_id, priority, self.order, owner, at, key=key)
        self.index.add(entry)
        return entry


def drain(index: SchedulingIndex) -> list[str]:
    out = []
    while (entry := index.pop()) is not None:
        out.append(entry.job_id)
    return out


@pytest.mark.parametrize(
    ("priority", "tail", "share", "expected"),
    [
        (HIGH, None, 5.0, 1000.0),  # nothing queued of its kind: keyed at now
        (NORMAL, None, 5.0, 1060.0),  # one aging period later than HIGH
        (LOW, None, 5.0, 1120.0),  # two
        (NORMAL, 1070.0, 5.0, 1075.0),  # behind its owner's queued tail by its share
        (NORMAL, 1030.0, 5.0, 1060.0),  # a tail far behind now does not hold it back
        (LOW, 1200.0, 0.0, 1200.0),  # a zero share ties with the tail: FIFO by order
    ],
)
def test_admission_key_is_now_plus_the_priority_offset_or_after_the_owners_tail(
    priority, tail, share, expected
):
    assert admission_key(1000.0, priority, AGING, tail, share) == expected
    assert offset(priority, AGING) == (priority - 1) * AGING


def test_mixed_priorities_admitted_together_run_high_then_normal_then_low_fifo_within():
    jobs = Jobs(SchedulingIndex(AGING))
    for job_id, priority in [("l1", LOW), ("n1", NORMAL), ("h1", HIGH), ("n2", NORMAL)]:
        jobs.add(job_id, priority)
    jobs.add("h2", HIGH)
    assert drain(jobs.index) == ["h1", "h2", "n1", "n2", "l1"]


def test_a_waiting_low_job_goes_before_normal_jobs_admitted_an_aging_period_later():
    jobs = Jobs(SchedulingIndex(AGING))
    jobs.add("low", LOW, at=0)
    jobs.add("n-early", NORMAL, at=59)
    jobs.add("n-late", NORMAL, at=61)
    assert drain(jobs.index) == ["n-early", "low", "n-late"]


def test_aging_bound_nothing_admitted_two_periods_after_a_low_job_starts_before_it():
    jobs = Jobs(SchedulingIndex(AGING))
    jobs.add("low", LOW, owner="patient", at=0)
    for second in range(0, 200):
        jobs.add(f"h{second}", HIGH, owner=f"busy{second % 3}", at=second)
    order = drain(jobs.index)
    ahead = order[: order.index("low")]
    assert ahead == [f"h{second}" for second in range(0, 120)]  # HIGH admitted before t=120


def test_one_owners_flood_is_spread_by_its_shares_and_another_owner_goes_in_between():
    jobs = Jobs(SchedulingIndex(AGING))
    flood = [jobs.add(f"a{n}", owner="alice", at=0, share=10.0) for n in range(5)]
    assert [entry.key for entry in flood] == [60.0, 70.0, 80.0, 90.0, 100.0]
    jobs.add("b1", owner="bob", at=15, share=10.0)  # keyed at 75: between a1 and a2
    assert drain(jobs.index) == ["a0", "a1", "b1", "a2", "a3", "a4"]


def test_an_owner_whose_queue_emptied_starts_afresh_at_now():
    jobs = Jobs(SchedulingIndex(AGING))
    for n in range(3):
        jobs.add(f"a{n}", owner="alice", at=0, share=100.0)
    drain(jobs.index)  # served early, on idle capacity: not held against alice
    assert jobs.add("a3", owner="alice", at=5, share=100.0).key == 65.0


def test_fair_share_is_per_priority_so_an_owners_high_job_is_not_behind_its_normal_flood():
    jobs = Jobs(SchedulingIndex(AGING))
    for n in range(50):
        jobs.add(f"n{n}", NORMAL, at=0, share=10.0)
    jobs.add("urgent", HIGH, at=1, share=10.0)
    assert drain(jobs.index)[0] == "urgent"


def test_removed_jobs_never_come_out_and_a_removed_tail_frees_its_place():
    jobs = Jobs(SchedulingIndex(AGING))
    jobs.add("a", owner="alice", share=10.0)
    jobs.add("b", owner="alice", share=10.0)
    assert jobs.index.remove("b").job_id == "b"
    assert jobs.index.remove("b") is None
    assert jobs.index.tail_key("alice", NORMAL) == 60.0
    assert jobs.add("c", owner="alice", share=10.0).key == 70.0  # where b was
    assert drain(jobs.index) == ["a", "c"]
    assert jobs.index.tail_key("alice", NORMAL) is None


def test_a_job_put_back_keeps_its_place():
    jobs = Jobs(SchedulingIndex(AGING))
    first = jobs.add("first", LOW, at=0)
    for n in range(3):
        jobs.add(f"later{n}", NORMAL, at=100)
    assert jobs.index.pop() == first  # taken, then its run was interrupted
    jobs.index.add(first)
    assert drain(jobs.index) == ["first", "later0", "later1", "later2"]


def test_a_copy_is_independent():
    jobs = Jobs(SchedulingIndex(AGING))
    jobs.add("a", owner="alice")
    jobs.add("b", owner="bob")
    twin = jobs.index.copy()
    assert drain(twin) == ["a", "b"]
    assert len(jobs.index) == 2 and jobs.index.tail_key("alice", NORMAL) == 60.0


def reference(operations):
    """The policy written the obvious way: key from a scan of the queued jobs, and the
    smallest (key, order) at every pick."""
    queued: dict[str, QueueEntry] = {}
    out, keys = [], []
    for op, value in operations:
        if op == "add":
            job_id, priority, order, owner, at, share = value
            tails = [e.key for e in queued.values() if (e.owner, e.priority) == (owner, priority)]
            key = admission_key(at, priority, 10.0, max(tails, default=None), share)
            keys.append(key)
            queued[job_id] = QueueEntry(job_id, priority, order, owner, at, key=key)
        elif op == "remove":
            queued.pop(value, None)
        elif queued:
            best = min(queued.values(), key=lambda e: e.rank)
            del queued[best.job_id]
            out.append(best.job_id)
    return out, keys


@pytest.mark.parametrize("seed", range(5))
def test_index_agrees_with_a_brute_force_reading_of_the_policy(seed):
    rng = random.Random(seed)
    operations, ids, now = [], [], 0.0
    for order in range(1, 3000):
        now += rng.choice((0, 0.5, 1, 2, 5))
        roll = rng.random()
        if roll < 0.5:
            owner = rng.choice(("alice", "bob", "carol", "dave"))
            share = rng.choice((0.0, 0.5, 3.0, 20.0))
            job = (f"j{order}", rng.choice(list(Priority)), order, owner, now, share)
            ids.append(job[0])
            operations.append(("add", job))
        elif roll < 0.6 and ids:
            operations.append(("remove", rng.choice(ids)))
        else:
            operations.append(("pop", None))
    index = SchedulingIndex(10.0)
    out, keys = [], []
    for op, value in operations:
        if op == "add":
            job_id, priority, order, owner, at, share = value
            key = index.key_for(owner, int(priority), at, share)
            keys.append(key)
            index.add(QueueEntry(job_id, priority, order, owner, at, key=key))
        elif op == "remove":
            index.remove(value)
        elif (entry := index.pop()) is not None:
            out.append(entry.job_id)
    assert (out, keys) == reference(operations)
    assert len(index._heap) < 5 * (len(index) + 16)  # compacted


def test_aging_seconds_must_be_positive():
    with pytest.raises(ValueError, match="aging_seconds"):
        SchedulingIndex(0)


def test_a_job_removed_and_added_again_under_a_new_key_is_ordered_by_the_new_key():
    """An operator's new priority (ops/steering.py) re-keys a queued job: the heap entry of
    its old key must not bring it back at its old place, nor count as its owner's tail."""
    index = SchedulingIndex(AGING)
    jobs = Jobs(index)
    first, second = jobs.add("first", owner="x"), jobs.add("second", owner="y")
    index.remove("first")
    index.add(dataclasses.replace(first, priority=LOW, key=first.key + AGING))
    assert index.tail_key("x", int(NORMAL)) is None
    assert index.tail_key("x", int(LOW)) == first.key + AGING
    assert drain(index) == ["second", "first"]
    assert second.key < first.key + AGING
