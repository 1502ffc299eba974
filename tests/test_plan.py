"""A plan that follows the queue answers as a fresh simulation of the same queue would."""

import random

import pytest

from app.generation import Priority
from app.generation.forecast import forecaster as forecast
from app.generation.forecast.forecaster import Forecaster, simulate
from app.generation.forecast.plan import Plan, Slot
from app.generation.forecast.run_times import RunTimeEstimator
from app.generation.queue.contract import JOURNAL_SIZE
from app.generation.queue.memory import MemoryQueue
from app.generation.scheduling.policy import QueueEntry, SchedulingIndex, offset

AGING = 60.0
OWNERS = ("alice", "bob", "carol")


def by_cost(entry: QueueEntry) -> float:
    return entry.cost


def entry(n: int, rng: random.Random, at: float) -> QueueEntry:
    priority = rng.choice(list(Priority))
    owner, cost = rng.choice(OWNERS), rng.choice((5, 30, 90))
    return QueueEntry(f"j{n}", priority, n, owner, at, "g", cost, at + offset(priority, AGING))


def fresh(entries, now, busy_until, workers, expected=()):
    index = SchedulingIndex(AGING)
    for queued in entries:
        index.add(queued)
    return simulate(index, now, busy_until, workers, by_cost, expected=expected)


def expected_stream(rng: random.Random, now: float):
    return [
        QueueEntry(
            f"~expected-{n}", Priority.HIGH, 2**62 + n, "dave", now + 40 * n, "g", 20, now + 40 * n
        )
        for n in range(1, 30)
    ]


def test_added_jobs_get_the_slot_a_fresh_simulation_gives_them():
    rng = random.Random(8)
    outcomes = []
    for _ in range(40):
        now, busy, workers = 500.0, [rng.uniform(500, 560)], rng.choice((1, 2, 3))
        expected = expected_stream(rng, now) if rng.random() < 0.5 else []
        times = sorted(rng.uniform(0, now) for _ in range(rng.randint(0, 12)))
        queued = [entry(n, rng, at) for n, at in enumerate(times)]  # enqueued_at rises with order
        index = SchedulingIndex(AGING)
        for queued_entry in queued:
            index.add(queued_entry)
        plan = Plan(index, now, busy, workers, by_cost, expected=expected)
        for n in range(len(queued), len(queued) + 8):
            new = entry(n, rng, now)
            truth = fresh([*queued, new], now, busy, workers, expected)
            assert plan.quote(new, now) == truth[new.job_id]
            queued.append(new)
            plan.add(new, now)
            outcomes.append(plan.broken)
            if plan.broken:  # it overtook someone: the forecaster replays from here
                index = SchedulingIndex(AGING)
                for queued_entry in queued:
                    index.add(queued_entry)
                plan = Plan(index, now, busy, workers, by_cost, expected=expected)
            assert plan.slots() == truth
    assert 0.2 < sum(outcomes) / len(outcomes) < 0.8  # both ways were taken, many times


def test_a_flood_from_one_owner_never_breaks_the_plan():
    index = SchedulingIndex(AGING)
    plan = Plan(index, 0.0, [100.0], 1, by_cost)
    for n in range(50):
        new = QueueEntry(f"j{n}", Priority.NORMAL, n, "alice", 0.0, "g", 10)
        assert plan.quote(new, 0.0).position == n
        plan.add(new, 0.0)
    assert not plan.broken
    assert plan.slot("j49") == Slot(49, 100.0 + 49 * 10, 100.0 + 50 * 10)


def alices_plan(count: int, workers: int, prefix: str = "j") -> tuple[list[QueueEntry], Plan]:
    """`count` NORMAL jobs of one owner, all admitted at 0, planned for `workers`."""
    queued = [
        QueueEntry(f"{prefix}{n}", Priority.NORMAL, n, "alice", 0.0, "g", 10) for n in range(count)
    ]
    index = SchedulingIndex(AGING)
    for queued_entry in queued:
        index.add(queued_entry)
    return queued, Plan(index, 0.0, [], workers, by_cost)


def test_a_high_job_overtakes_and_breaks_the_plan_but_is_quoted_exactly():
    normals, plan = alices_plan(5, 1, prefix="n")
    high = QueueEntry("h", Priority.HIGH, 9, "bob", 0.0, "g", 10, -60.0)
    assert plan.quote(high, 0.0) == fresh([*normals, high], 0.0, [], 1)["h"]
    plan.add(high, 0.0)
    assert plan.broken


def test_taking_the_first_pick_moves_everyone_up_and_anything_else_breaks():
    _, plan = alices_plan(3, 1)
    plan.take("j0")
    assert {k: s.position for k, s in plan.slots().items()} == {"j1": 0, "j2": 1}
    assert plan.next_start == 10.0
    plan.take("j2")
    assert plan.broken


def test_workers_claiming_at_once_may_report_their_takes_in_either_order():
    _, plan = alices_plan(4, 2)
    plan.take("j1")  # the second worker's claim reported first
    assert not plan.broken
    assert {k: s.position for k, s in plan.slots().items()} == {"j0": 0, "j2": 1, "j3": 2}
    plan.take("j0")
    assert {k: s.position for k, s in plan.slots().items()} == {"j2": 0, "j3": 1}
    plan.take("j3")  # two picks ahead with two workers: still plausible
    assert not plan.broken and plan.slot("j2").position == 0
    plan.take("j2")
    assert not plan.broken and plan.slots() == {}


class Now:
    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


def one_worker_forecaster() -> tuple[MemoryQueue, Forecaster]:
    """A forecaster of a memory queue, one worker busy until t=50, time standing at 0."""
    now = Now()
    queue = MemoryQueue(1000, clock=now)
    return queue, Forecaster(queue, RunTimeEstimator(), lambda: ([50.0], 1), now)


def test_the_forecaster_follows_submits_and_starts_without_replaying():
    queue, forecaster = one_worker_forecaster()
    for n in range(200):
        new = QueueEntry(f"j{n}", Priority.NORMAL, n, "alice", 0.0, "g", 10)
        assert forecaster.quote(new).position == n
        queue.reserve()
        queue.put(new)
    queue.get()
    assert forecaster.slot("j1").position == 0
    assert forecaster.replays == 1
    queue.remove("j5")  # a cancellation: replayed on next use
    assert forecaster.slot("j6").position == 4
    assert forecaster.replays == 2


def test_an_admitted_job_is_planned_once_and_its_put_is_no_news():
    queue, forecaster = one_worker_forecaster()
    for n in range(50):
        new = QueueEntry(f"j{n}", Priority.NORMAL, n, "alice", 0.0, "g", 10)
        quoted = forecaster.quote(new)
        assert forecaster.admit(new) == quoted  # what a quote says is what it gets
        queue.reserve()
        queue.put(new)
        assert forecaster.slot(new.job_id) == quoted
    high = QueueEntry("high", Priority.HIGH, 99, "bob", 0.0, "g", 10, -60.0)
    assert forecaster.admit(high).position == 0  # it overtakes: quoted exactly all the same
    queue.reserve()
    queue.put(high)
    assert forecaster.slot("high").position == 0 and forecaster.slot("j0").position == 1
    assert forecaster.replays == 2  # the first plan, and the one after the overtaking


def test_the_queue_journal_lists_changes_since_a_version_while_it_reaches_back():
    queue = MemoryQueue(JOURNAL_SIZE + 10)
    for n in range(3):
        queue.reserve()
        queue.put(QueueEntry(f"j{n}", Priority.NORMAL, n, "alice", 0.0))
    assert [(v, kind, e.job_id) for v, kind, e in queue.changes_since(1)] == [
        (2, "put", "j1"),
        (3, "put", "j2"),
    ]
    assert queue.get().job_id == "j0"
    assert [kind for _, kind, _ in queue.changes_since(3)] == ["get"]
    assert queue.changes_since(queue.version) == []
    for n in range(3, JOURNAL_SIZE + 3):
        queue.put(QueueEntry(f"j{n}", Priority.NORMAL, n, "alice", 0.0), reserved=False)
    assert queue.changes_since(1) is None  # forgotten: a forecast replays instead
    assert len(queue.changes_since(queue.version - JOURNAL_SIZE + 1)) == JOURNAL_SIZE - 1


class Stopwatch:
    """perf_counter for the forecaster: every replay appears to take `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.value = seconds, 0.0

    def perf_counter(self) -> float:
        self.value += self.seconds  # read at a replay's start and end: they differ by this
        return self.value


@pytest.mark.parametrize(
    ("replay_seconds", "stands_for"), [(0.01, forecast.MAX_AGE_SECONDS), (0.2, 4.0)]
)
def test_a_dear_replay_is_repeated_less_often(monkeypatch, replay_seconds, stands_for):
    monkeypatch.setattr(forecast, "time", Stopwatch(replay_seconds))
    now = Now()
    queue = MemoryQueue(10, clock=now)
    queue.reserve()
    queue.put(QueueEntry("j0", Priority.NORMAL, 0, "alice", 0.0, "g", 10))
    forecaster = Forecaster(queue, RunTimeEstimator(), lambda: ([], 1), now)
    forecaster.slot("j0")
    now.value = stands_for - 0.01
    forecaster.slot("j0")
    assert forecaster.replays == 1  # the plan still stands
    now.value = stands_for
    forecaster.slot("j0")
    assert forecaster.replays == 2
