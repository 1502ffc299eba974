"""Positions and ETAs: the policy played forward, run times measured and scaled by size."""

import pytest

from app.generation import Priority
from app.generation.forecast.forecaster import ArrivalHistory, Forecaster, simulate
from app.generation.forecast.run_times import (
    DEFAULT_COST_SECONDS,
    EtaAccuracy,
    RunTimeEstimator,
    job_cost,
)
from app.generation.generators.images import ImagesGenerator
from app.generation.queue.memory import MemoryQueue
from app.generation.scheduling.policy import QueueEntry, SchedulingIndex, offset

NORMAL, LOW = Priority.NORMAL, Priority.LOW


def index_of(*entries: QueueEntry, aging: float = 60.0) -> SchedulingIndex:
    index = SchedulingIndex(aging)
    for entry in entries:
        index.add(entry)
    return index


def job(job_id, order, cost=10.0, priority=NORMAL, owner="anonymous", at=0.0):
    """Keyed as admitted at `at` with nothing of its owner queued before it."""
    key = at + offset(priority, 60.0)
    return QueueEntry(job_id, priority, order, owner, at, "g", cost, key)


def by_cost(entry: QueueEntry) -> float:
    return entry.cost


def test_one_worker_runs_the_queue_after_the_running_job_ends():
    index = index_of(job("a", 1, cost=10), job("b", 2, cost=20), job("c", 3, cost=5))
    slots = simulate(index, now=0.0, busy_until=[4.0], workers=1, run_seconds=by_cost)
    assert [(s.position, s.start, s.finish) for s in slots.values()] == [
        (0, 4.0, 14.0),
        (1, 14.0, 34.0),
        (2, 34.0, 39.0),
    ]


def test_two_workers_share_the_queue_and_an_overdue_run_is_treated_as_ending_now():
    index = index_of(job("a", 1), job("b", 2), job("c", 3))
    slots = simulate(index, now=100.0, busy_until=[90.0], workers=2, run_seconds=by_cost)
    assert {k: (s.start, s.finish) for k, s in slots.items()} == {
        "a": (100.0, 110.0),
        "b": (100.0, 110.0),
        "c": (110.0, 120.0),
    }


def test_position_follows_the_keys_an_older_low_job_goes_before_younger_normal_ones():
    # A LOW job admitted at t=0 (key 120), NORMAL jobs of 20 s admitted at t=50 (key
    # 110) and at t=70 (key 130), one worker, 60 s aging: the LOW job is between them.
    low = job("low", 1, cost=20, priority=LOW, at=0.0)
    early = [job(f"e{i}", i, cost=20, at=50.0) for i in range(2, 5)]
    late = [job(f"l{i}", i, cost=20, at=70.0) for i in range(5, 8)]
    slots = simulate(index_of(low, *early, *late), 70.0, [], 1, by_cost)
    assert (slots["low"].position, slots["low"].start) == (3, 130.0)
    assert slots["l5"].position == 4


def test_simulation_can_stop_at_one_job():
    index = index_of(job("a", 1), job("b", 2), job("c", 3))
    slots = simulate(index, 0.0, [], 1, by_cost, until="b")
    assert list(slots) == ["a", "b"]


def test_estimator_scales_the_measured_rate_by_the_job_size():
    estimator = RunTimeEstimator()
    assert estimator.predict("images", 2.0) == 2.0  # unmeasured: trust the generator
    for seconds in (3.0, 3.2, 50.0):  # one outlier does not move the median
        estimator.record("images", 1.0, seconds)
    assert estimator.rate("images") == 3.2
    assert estimator.predict("images", 10.0) == pytest.approx(32.0)
    assert estimator.rates() == {"images": 3.2}


def test_job_cost_is_the_generators_estimate_or_a_default():
    images = ImagesGenerator()
    small = job_cost(images, {"count": 1, "width": 256, "height": 256})
    large = job_cost(images, {"count": 4, "width": 512, "height": 512})
    assert large == pytest.approx(16 * small)
    assert job_cost(None, {}) == DEFAULT_COST_SECONDS


def test_eta_accuracy_reports_median_and_p90_of_relative_errors():
    accuracy = EtaAccuracy()
    assert accuracy.summary() == {"median": None, "p90": None, "samples": 0}
    for n, predicted in enumerate([10, 10, 10, 10, 10, 10, 10, 10, 10, 30]):
        accuracy.promise(f"j{n}", predicted)
    for n, actual in enumerate([10, 10, 10, 10, 10, 8, 8, 8, 8, 10]):
        accuracy.observe(f"j{n}", actual)
    assert accuracy.summary() == {"median": 0.125, "p90": 2.0, "samples": 10}
    accuracy.promise("cancelled", 5)
    accuracy.forget("cancelled")
    assert accuracy.observe("cancelled", 5) is None
    assert accuracy.observe("never-promised", 5) is None


class Now:
    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


def test_forecaster_caches_until_the_queue_changes_or_the_forecast_ages():
    now = Now()
    queue = MemoryQueue(10, clock=now)
    queue.reserve()
    queue.put(job("a", 1))
    forecaster = Forecaster(queue, RunTimeEstimator(), lambda: ([], 1), now)
    first = forecaster.current()
    assert forecaster.current() is first
    now.value = 0.5
    assert forecaster.current() is first
    now.value = 1.5
    aged = forecaster.current()
    assert aged is not first
    queue.reserve()
    queue.put(job("b", 2))
    assert forecaster.current().slots["b"].position == 1
    quote = forecaster.quote(job("c", 3))
    assert (quote.position, quote.finish) == (2, 1.5 + 30)
    assert len(queue) == 2  # quoting queues nothing


def test_an_expensive_forecast_is_shared_for_a_moment_unless_exactness_is_asked(monkeypatch):
    monkeypatch.setattr(
        "app.generation.forecast.forecaster.CHEAP_SECONDS", -1.0
    )  # all are expensive
    now = Now()
    queue = MemoryQueue(10, clock=now)
    queue.reserve()
    queue.put(job("a", 1))
    forecaster = Forecaster(queue, RunTimeEstimator(), lambda: ([], 1), now)
    first = forecaster.current()
    queue.reserve()
    queue.put(job("b", 2))
    assert forecaster.current() is first
    assert "b" in forecaster.current(exact=True).slots
    now.value = 1.0
    queue.remove("a")
    assert list(forecaster.current().slots) == ["b"]  # too old to share


def test_expected_arrivals_delay_a_job_without_counting_in_its_position():
    low = job("low", 1, cost=10, priority=LOW)
    expected = [
        job(f"~expected-{n}", 100 + n, cost=10, at=5.0 + 10 * n, priority=Priority.HIGH)
        for n in range(5)
    ]
    slots = simulate(index_of(low), 0.0, [2.0], 1, by_cost, expected=expected)
    # The worker frees at 2 and takes LOW (nothing else yet): HIGH arrivals come too late.
    assert (slots["low"].position, slots["low"].start) == (0, 2.0)
    slots = simulate(index_of(low), 0.0, [6.0], 1, by_cost, expected=expected)
    # Busy until 6: each expected HIGH job arrives while the one before it runs, so all
    # five go first; LOW starts at 56 yet is still at position 0 (only queued jobs count).
    assert (slots["low"].position, slots["low"].start) == (0, 56.0)
    assert list(slots) == ["low"]


def test_expected_arrivals_are_turned_away_by_a_full_queue():
    expected = [job("~expected-1", 100, cost=10, at=1.0, priority=Priority.HIGH)]
    index = index_of(job("low", 1, cost=10, priority=LOW))
    slots = simulate(index, 0.0, [6.0], 1, by_cost, expected=expected, capacity=1)
    assert slots["low"].start == 6.0


def test_arrival_history_replays_the_recent_window_once_it_says_enough():
    history = ArrivalHistory()
    history.record(job("a", 1, at=100.0))
    assert list(history.expected(105.0)) == []  # 5 s of traffic is no rate yet
    history.record(job("b", 2, at=108.0))
    replay = history.expected(120.0)  # a 20 s window, replayed every 20 s
    first = [next(replay) for _ in range(4)]
    assert [e.enqueued_at for e in first] == [120.0, 128.0, 140.0, 148.0]
    assert all(e.job_id.startswith("~expected") and e.order > 2**62 for e in first)
    assert [e.key - e.enqueued_at for e in first] == [60.0] * 4  # keyed as they were
    assert list(history.expected(200.0)) == []  # older than the window: forgotten


def test_a_pool_without_workers_is_forecast_as_one_worker():
    slots = simulate(index_of(job("a", 1), job("b", 2)), 0.0, [], 0, by_cost)
    assert [(s.start, s.finish) for s in slots.values()] == [(0.0, 10.0), (10.0, 20.0)]
