"""The event bus, without HTTP: buffers, drops, history and resume."""

import json
import threading
import time

import pytest

from app.generation import JobStatus
from app.generation.events.bus import EventBus, EventType
from app.generation.execution.relay import EVENTS_CHANNEL, EventRelay
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore
from app.generation.store.listener import NoListener

from .conftest import wait_for


def drain(subscription):
    events = []
    while (event := subscription.get(timeout=0)) is not None:
        events.append(event)
    return events


def test_a_waiting_update_is_replaced_by_a_newer_one_of_the_same_job():
    bus = EventBus()
    subscription = bus.subscribe(["a", "b"])
    bus.publish("a", "started")
    for percent in (10, 20, 30):
        bus.publish("a", "progress", percent=percent)
        bus.publish("b", "queued", position=3 - percent // 10)
    bus.publish("a", "succeeded")
    kept = [(e.job_id, e.type, e.seq, e.data) for e in drain(subscription)]
    assert kept == [
        ("a", "started", 1, {}),
        ("a", "progress", 4, {"percent": 30}),
        ("b", "queued", 3, {"position": 0}),
        ("a", "succeeded", 5, {}),
    ]
    assert subscription.dropped == 4


def test_an_update_behind_a_lifecycle_event_is_not_replaced():
    bus = EventBus()
    subscription = bus.subscribe(["job"])
    bus.publish("job", "progress", percent=90)
    bus.publish("job", "queued", requeued=True)
    bus.publish("job", "started")
    bus.publish("job", "progress", percent=5)
    assert [event.seq for event in drain(subscription)] == [1, 2, 3, 4]


def test_a_full_buffer_drops_the_oldest_update_and_keeps_every_lifecycle_event():
    bus = EventBus()
    subscription = bus.subscribe(["a", "b", "c"], capacity=3)
    bus.publish("a", "progress", percent=10)
    bus.publish("b", "started")
    bus.publish("b", "succeeded")
    bus.publish("c", "progress", percent=50)
    kept = [(event.job_id, event.type) for event in drain(subscription)]
    assert kept == [("b", "started"), ("b", "succeeded"), ("c", "progress")]
    assert subscription.dropped == 1


def test_lifecycle_events_exceed_capacity_rather_than_being_dropped():
    bus = EventBus()
    subscription = bus.subscribe(["a", "b"], capacity=1)
    for job in ("a", "b"):
        bus.publish(job, "started")
        bus.publish(job, "cancelled")
    bus.publish("a", "progress", percent=5)
    assert [event.type for event in drain(subscription)] == ["started", "cancelled"] * 2
    assert subscription.dropped == 1


def test_wake_returns_a_waiting_get_with_nothing():
    subscription = EventBus().subscribe([])
    returned = []
    waiter = threading.Thread(target=lambda: returned.append(subscription.get(timeout=10)))
    waiter.start()
    subscription.wake()
    waiter.join(5)
    assert returned == [None] and not waiter.is_alive()


def test_follow_and_unfollow_change_what_a_subscription_receives():
    bus = EventBus()
    subscription = bus.subscribe([])
    bus.publish("job", "queued")
    bus.follow(subscription, "job")
    bus.publish("job", "started")
    bus.unfollow(subscription, "job")
    bus.publish("job", "succeeded")
    assert [event.type for event in drain(subscription)] == ["started"]


def test_missed_returns_every_event_after_since():
    bus = EventBus()
    for kind in ("queued", "started", "progress", "succeeded"):
        bus.publish("job", kind)
    assert [event.seq for event in bus.missed("job", 2)] == [3, 4]
    assert bus.missed("job", 4) == []


@pytest.mark.parametrize("since", [1, 99], ids=["forgotten", "from-another-life"])
def test_missed_is_none_when_the_history_cannot_tell(since):
    bus = EventBus(history_per_job=2)
    for _ in range(5):
        bus.publish("job", "progress")
    assert bus.missed("job", since) is None


def test_seq_keeps_counting_for_a_live_job_the_history_forgot():
    bus = EventBus(jobs_remembered=1)
    bus.publish("old", "started")
    bus.publish("new", "queued")
    assert bus.history("old") == []
    assert bus.publish("old", "progress").seq == 2


def test_held_updates_wait_for_their_time_unless_an_outcome_follows():
    bus = EventBus()
    subscription = bus.subscribe(["job"])
    later = time.monotonic() + 60
    bus.publish("job", "progress", percent=10)
    assert subscription.get(0, updates_from=later) is None  # held back
    bus.publish("job", "progress", percent=20)
    bus.publish("job", "succeeded")
    taken = [subscription.get(0, updates_from=later) for _ in range(2)]
    assert [(event.type, event.data) for event in taken] == [
        ("progress", {"percent": 20}),
        ("succeeded", {}),
    ]


def test_a_held_update_is_released_when_its_time_comes():
    bus = EventBus()
    subscription = bus.subscribe(["job"])
    bus.publish("job", "progress", percent=10)
    event = subscription.get(5, updates_from=time.monotonic() + 0.05)
    assert event is not None and event.data == {"percent": 10}


def test_an_update_offered_during_a_hold_goes_out_when_the_hold_ends():
    bus = EventBus()
    subscription = bus.subscribe(["job"])
    taken = []
    reader = threading.Thread(
        target=lambda: taken.append(
            subscription.get(timeout=30, updates_from=time.monotonic() + 0.1)
        )
    )
    reader.start()
    bus.publish("job", "progress", percent=10)  # does not wake the reader...
    reader.join(10)  # ...which looks again when its hold ends, well before its timeout
    assert not reader.is_alive() and taken[0].data == {"percent": 10}


def test_every_event_has_a_type_of_the_vocabulary():
    bus = EventBus()
    subscription = bus.subscribe(["a"])
    bus.receive("a", "started", {})  # as relayed: a plain string
    [event] = drain(subscription)
    assert event.type is EventType.STARTED
    assert event.message()["type"] == "started"
    with pytest.raises(ValueError):
        bus.publish("a", "startd")


class CapturingListener(NoListener):
    def __init__(self):
        self.handlers = {}

    def on(self, channel, handler):
        self.handlers[channel] = handler


def test_the_relay_passes_on_known_events_and_ignores_kinds_it_does_not_know(tmp_path):
    """Mid rolling deploy a newer release may send a kind of event this one lacks."""
    engine = create_database_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    bus, listener = EventBus(), CapturingListener()
    EventRelay(engine, JobStore(engine), bus, listener)
    subscription = bus.subscribe(["a"])
    hear = listener.handlers[EVENTS_CHANNEL]
    hear(json.dumps({"o": "elsewhere", "j": "a", "t": "a-new-kind", "d": {}, "n": 1}))
    hear(json.dumps({"o": "elsewhere", "j": "a", "t": "started", "d": {}, "n": 2}))
    assert [event.type for event in drain(subscription)] == [EventType.STARTED]


def test_an_event_sent_by_reference_arrives_as_the_rows_own_event(service):
    """An event too large for a notification is sent without its data; the receiver
    rebuilds the job's state from its row, as the event that state is (an `output`
    rebuilt as if it were one would lack its file's name)."""
    job = service.submit("record", {"tag": 1})
    assert wait_for(service, job.id).status is JobStatus.SUCCEEDED
    bus, listener = EventBus(), CapturingListener()
    EventRelay(service.store.engine, service.store, bus, listener)
    subscription = bus.subscribe([job.id])
    hear = listener.handlers[EVENTS_CHANNEL]
    hear(json.dumps({"o": "elsewhere", "j": job.id, "t": "output", "n": 1}))  # no "d"
    hear(json.dumps({"o": "elsewhere", "j": "0" * 32, "t": "failed", "n": 2}))  # no such job
    [event] = drain(subscription)
    assert event.type is EventType.SUCCEEDED
    assert event.data["result"]["files"] and event.data["result"]["bytes"] > 0
