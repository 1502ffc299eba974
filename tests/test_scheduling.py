"""The scheduling policy, pure: aging priority, fair turns between owners, FIFO."""

import random

import pytest

from app.generation import Priority
from app.generation.scheduling import QueueEntry, SchedulingIndex, effective_priority

HIGH, NORMAL, LOW = Priority.HIGH, Priority.NORMAL, Priority.LOW
AGING = 60.0


class Jobs:
    """Builds entries with increasing `order`, as rows get increasing primary keys."""

    def __init__(self, index: SchedulingIndex) -> None:
        self.index = index
        self.order = 0

    def add(self, job_id, priority=NORMAL, owner="anonymous", at=0.0):
        self.order += 1
        self.index.add(QueueEntry(job_id, priority, self.order, owner, at), at)


def drain(index: SchedulingIndex, at: float = 0.0) -> list[str]:
    out = []
    while (entry := index.pop(at)) is not None:
        out.append(entry.job_id)
    return out


@pytest.mark.parametrize(
    ("priority", "waited", "expected"),
    [
        (LOW, 0, 3),
        (LOW, 59.9, 3),
        (LOW, 60, 2),
        (LOW, 119.9, 2),
        (LOW, 120, 1),
        (LOW, 10_000, 1),
        (NORMAL, 60, 1),
        (HIGH, 10_000, 1),
        (NORMAL, -5, 2),  # a clock that ran back never demotes
    ],
)
def test_effective_priority_rises_one_level_per_aging_period_up_to_high(priority, waited, expected):
    assert effective_priority(priority, waited, AGING) == expected


def test_mixed_priorities_run_high_then_normal_then_low_fifo_within_a_level():
    jobs = Jobs(SchedulingIndex(AGING))
    for job_id, priority in [("l1", LOW), ("n1", NORMAL), ("h1", HIGH), ("n2", NORMAL)]:
        jobs.add(job_id, priority)
    jobs.add("h2", HIGH)
    assert drain(jobs.index) == ["h1", "h2", "n1", "n2", "l1"]


def test_a_waiting_low_job_overtakes_younger_normal_jobs_after_one_period():
    jobs = Jobs(SchedulingIndex(AGING))
    jobs.add("low", LOW, at=0)
    jobs.add("normal", NORMAL, at=30)
    assert jobs.index.copy().pop(59).job_id == "normal"
    assert jobs.index.pop(60).job_id == "low"  # both at NORMAL now; the older goes first


def test_aging_bound_low_job_starts_after_two_periods_despite_a_stream_of_high_jobs():
    jobs = Jobs(SchedulingIndex(AGING))
    jobs.add("low", LOW, at=0)
    started_at = None
    for second in range(1, 300):  # one HIGH arrives and one job starts every second
        jobs.add(f"h{second}", HIGH, at=second)
        if jobs.index.pop(second).job_id == "low":
            started_at = second
            break
    assert started_at == 2 * AGING


def test_owners_take_turns_within_a_level_fifo_within_an_owner():
    jobs = Jobs(SchedulingIndex(AGING))
    for n in range(1, 6):
        jobs.add(f"a{n}", owner="alice")
    jobs.add("b1", owner="bob")
    jobs.add("b2", owner="bob")
    jobs.add("c1", owner="carol")
    assert drain(jobs.index) == ["a1", "b1", "c1", "a2", "b2", "a3", "a4", "a5"]


def test_a_single_job_is_not_stuck_behind_another_owners_flood():
    jobs = Jobs(SchedulingIndex(AGING))
    for n in range(100):
        jobs.add(f"flood{n}", owner="flooder")
    assert jobs.index.pop(0).job_id == "flood0"
    jobs.add("single", owner="someone")
    assert jobs.index.pop(0).job_id == "single"


def test_priority_outranks_fair_turns():
    jobs = Jobs(SchedulingIndex(AGING))
    jobs.add("a-high-1", HIGH, owner="alice")
    jobs.add("a-high-2", HIGH, owner="alice")
    jobs.add("b-normal", NORMAL, owner="bob")
    assert drain(jobs.index) == ["a-high-1", "a-high-2", "b-normal"]


def test_removed_jobs_never_come_out_and_the_next_in_line_moves_up():
    jobs = Jobs(SchedulingIndex(AGING))
    for job_id in ("a", "b", "c"):
        jobs.add(job_id)
    assert jobs.index.remove("a").job_id == "a"
    assert jobs.index.remove("c").job_id == "c"
    assert jobs.index.remove("a") is None
    assert drain(jobs.index) == ["b"] and len(jobs.index) == 0


def test_a_job_put_back_keeps_its_place():
    jobs = Jobs(SchedulingIndex(AGING))
    jobs.add("first")
    jobs.add("second")
    taken = jobs.index.pop(0)
    jobs.index.add(taken, 0)  # e.g. its claim failed and it is retried
    assert drain(jobs.index) == ["first", "second"]


def test_a_copy_is_independent():
    jobs = Jobs(SchedulingIndex(AGING))
    jobs.add("a", owner="alice")
    jobs.add("b", owner="bob")
    twin = jobs.index.copy()
    assert drain(twin) == ["a", "b"]
    assert len(jobs.index) == 2 and jobs.index.last_served("alice") == 0


def reference_order(operations, aging):
    """The policy written the obvious way: sort everything at every pick."""
    queued: dict[str, QueueEntry] = {}
    served: dict[str, int] = {}
    turns = 0
    out = []
    for op, value, at in operations:
        if op == "add":
            queued[value.job_id] = value
        elif op == "remove":
            queued.pop(value, None)
        elif queued:
            best = min(
                queued.values(),
                key=lambda e: (
                    effective_priority(e.priority, at - e.enqueued_at, aging),
                    served.get(e.owner, 0),
                    e.order,
                ),
            )
            del queued[best.job_id]
            turns += 1
            served[best.owner] = turns
            out.append(best.job_id)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_index_agrees_with_a_brute_force_reading_of_the_policy(seed):
    rng = random.Random(seed)
    operations, ids, now = [], [], -100  # the first jobs are recovered rows, already aged
    for order in range(1, 3000):
        now += rng.choice((0, 1, 2, 5)) if order > 50 else 2
        roll = rng.random()
        if roll < 0.5:
            entry = QueueEntry(
                f"j{order}",
                rng.choice(list(Priority)),
                order,
                rng.choice(("alice", "bob", "carol", "dave")),
                now,  # rises with `order`, as created_at does with the primary key
            )
            ids.append(entry.job_id)
            operations.append(("add", entry, max(now, 0)))
        elif roll < 0.6 and ids:
            operations.append(("remove", rng.choice(ids), max(now, 0)))
        else:
            operations.append(("pop", None, max(now, 0)))
    index = SchedulingIndex(10.0)
    out = []
    for op, value, at in operations:
        if op == "add":
            index.add(value, at)
        elif op == "remove":
            index.remove(value)
        elif (entry := index.pop(at)) is not None:
            out.append(entry.job_id)
    assert out == reference_order(operations, 10.0)
    assert len(index._levels[1]) + len(index._timers) < 20 * (len(index) + 16)  # compacted


def test_aging_seconds_must_be_positive():
    with pytest.raises(ValueError, match="aging_seconds"):
        SchedulingIndex(0)
