"""The service schedules fairly and predicts honestly: aging, turns, pushes, quotes."""

import threading
import time

import pytest

from app.generation import (
    InvalidParamsError,
    JobStatus,
    Priority,
    QueueFullError,
    TooManyJobsError,
)

from .clock import FakeClock
from .conftest import hold_worker, wait_for


def run_all(service, gate, jobs):
    gate.release()
    for job in jobs:
        wait_for(service, job.id)


def queued_events(subscription):
    events = []
    while (event := subscription.get(timeout=0)) is not None:
        events.append(event)
    return [(e.data["position"], e.data["eta_seconds"]) for e in events if e.type == "queued"]


def test_a_waiting_low_job_runs_before_normal_work_submitted_an_aging_period_later(
    make_service, gate, recorder
):
    clock = FakeClock()
    service = make_service(clock=clock, aging_seconds=60)
    service.start()
    hold_worker(service, gate)
    low = service.submit("record", {"tag": "low"}, priority=Priority.LOW)
    clock.advance(30)
    early = service.submit("record", {"tag": "early"})  # keyed 90: ahead of the LOW job
    clock.advance(31)
    late = service.submit("record", {"tag": "late"})  # keyed 121: behind it (120)
    assert [service.get(job.id).position for job in (early, low, late)] == [0, 1, 2]
    run_all(service, gate, [low, early, late])
    assert recorder.ran == ["early", "low", "late"]


def test_owners_take_turns(service, gate, recorder):
    hold_worker(service, gate)
    jobs = [service.submit("record", {"tag": f"flood{n}"}, owner="flooder") for n in range(3)]
    jobs.append(service.submit("record", {"tag": "single"}, owner="someone"))
    assert service.get(jobs[-1].id).position == 1
    run_all(service, gate, jobs)
    assert recorder.ran == ["flood0", "single", "flood1", "flood2"]


def test_positions_are_pushed_when_a_job_ahead_is_cancelled_or_overtaken(service, gate):
    hold_worker(service, gate)
    first, second, third = (service.submit("record", {}) for _ in range(3))
    watching = service.bus.subscribe([third.id])
    service.tick()
    assert queued_events(watching) == []  # nothing changed since the submit said 2
    service.cancel(first.id)
    service.tick()
    assert [position for position, _ in queued_events(watching)] == [1]
    service.submit("record", {}, priority=Priority.HIGH)
    service.tick()
    assert [position for position, _ in queued_events(watching)] == [2]
    assert service.get(second.id).position == 1


def test_position_is_pushed_when_the_job_ahead_starts(make_service, gate):
    clock = FakeClock()
    service = make_service(workers=1, workers_max=2, scale_up_seconds=1, clock=clock)
    service.start()
    hold_worker(service, gate)
    ahead = service.submit("gate", {})
    mine = service.submit("record", {})
    watching = service.bus.subscribe([mine.id])
    service.tick()
    clock.advance(1)
    service.tick()  # a second worker starts and takes `ahead`
    wait_for(service, ahead.id, {JobStatus.RUNNING})
    service.tick()
    assert [position for position, _ in queued_events(watching)] == [0]


def test_eta_comes_from_the_predicted_run_times_and_workers(make_service, gate):
    clock = FakeClock()
    service = make_service(clock=clock)
    service.start()
    running = hold_worker(service, gate)
    first = service.submit("record", {})
    second = service.submit("record", {})
    # The test generators give no estimate: 5 s each until measured.
    assert service.get(running.id).eta_seconds == 5.0
    assert (first.eta_seconds, second.eta_seconds) == (10.0, 15.0)
    clock.advance(3)
    assert service.get(second.id).eta_seconds == 12.0


def test_eta_accuracy_is_scored_and_run_times_are_learned(make_service, gate):
    clock = FakeClock()
    service = make_service(clock=clock)
    service.start()
    job = service.submit("gate", {})
    assert job.eta_seconds == 5.0
    assert gate.started.wait(5)
    clock.advance(10)
    gate.release()
    wait_for(service, job.id)
    # The worker scores the ETA just after it records the outcome that wait_for sees.
    deadline = time.monotonic() + 10
    while service.stats()["eta_error"]["samples"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.stats()["eta_error"] == {"median": 0.5, "p90": 0.5, "samples": 1}
    assert service.quote("gate", {}).eta_seconds == 10.0  # measured: 2x the estimate


def test_retry_after_is_when_the_running_job_should_free_a_slot(make_service, gate):
    clock = FakeClock()
    service = make_service(queue_size=1, clock=clock)
    service.start()
    hold_worker(service, gate)
    service.submit("record", {})
    with pytest.raises(QueueFullError) as full:
        service.submit("record", {})
    assert full.value.retry_after == 5
    clock.advance(2)
    with pytest.raises(QueueFullError) as full:
        service.submit("record", {})
    assert full.value.retry_after == 3


def test_quote_answers_like_submit_without_queueing(make_service, gate):
    service = make_service(queue_size=3, clock=FakeClock())
    service.start()
    hold_worker(service, gate)
    service.submit("record", {})
    service.submit("record", {})
    quote = service.quote("record", {"tag": "x"}, priority=Priority.LOW)
    assert (quote.position, quote.eta_seconds, quote.params) == (2, 20.0, {"tag": "x"})
    assert service.store.count_by_status()[JobStatus.QUEUED] == 2
    assert service.quote("record", {}, priority=Priority.HIGH).position == 0
    service.submit("record", {})
    with pytest.raises(QueueFullError) as full:
        service.quote("record", {})
    assert full.value.retry_after >= 1
    with pytest.raises(InvalidParamsError):
        service.quote("nope", {})


def test_a_failing_forecast_still_queues_and_runs_the_stored_job(service, monkeypatch, recorder):
    def broken(job):
        raise RuntimeError("forecast bug")

    monkeypatch.setattr(service.outlook, "admit", broken)
    job = service.submit("record", {"tag": "kept"})
    assert (job.status, job.position, job.eta_seconds) == (JobStatus.QUEUED, None, None)
    assert wait_for(service, job.id).status is JobStatus.SUCCEEDED
    assert recorder.ran == ["kept"]


def test_no_queued_event_ever_follows_a_jobs_start(make_service):
    service = make_service(workers=2, queue_size=100)
    service.start()
    everything = service.bus.subscribe(None, capacity=10_000)
    done = threading.Event()

    def keep_announcing():
        while not done.is_set():
            service.tick()

    announcer = threading.Thread(target=keep_announcing)
    announcer.start()
    try:
        jobs = [service.submit("record", {}, priority=Priority(1 + n % 3)) for n in range(60)]
        for job in jobs:
            wait_for(service, job.id)
    finally:
        done.set()
        announcer.join(5)
    service.bus.unsubscribe(everything)
    for job in jobs:
        types = [event.type for event in service.bus.history(job.id)]
        assert types[0] == "queued" and "started" in types
        assert "queued" not in types[types.index("started") :], types


def test_quote_refuses_like_submit_when_the_owners_quota_is_used(service, gate):
    hold_worker(service, gate)
    service.submit("record", {}, owner="alice", max_queued=1)
    with pytest.raises(TooManyJobsError):
        service.quote("record", {}, owner="alice", max_queued=1)
    assert service.quote("record", {}, owner="bob", max_queued=1).position == 1
