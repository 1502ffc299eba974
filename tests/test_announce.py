"""Pushing changed positions: only what moved, only to jobs someone watches."""

from app.generation.events.bus import EventBus
from app.generation.forecast.announce import PositionAnnouncer
from app.generation.forecast.forecaster import Forecast, Slot


def forecast_of(**slots: Slot):
    return lambda: Forecast(made_at=0.0, version=1, slots=slots)


def messages(subscription):
    out = []
    while (event := subscription.get(timeout=0)) is not None:
        out.append((event.data["position"], event.data["eta_seconds"]))
    return out


def test_nothing_is_forecast_or_sent_while_nobody_watches():
    announcer = PositionAnnouncer(EventBus(), lambda job_id: True)

    def never():
        raise AssertionError("forecast computed for nobody")

    assert announcer.announce(never, now=0.0) == 0


def test_a_watched_job_hears_of_moves_but_not_of_small_drifts():
    bus = EventBus()
    announcer = PositionAnnouncer(bus, lambda job_id: True)
    watching = bus.subscribe(["a"])
    announcer.sent("a", Slot(3, 40.0, 60.0))
    assert announcer.announce(forecast_of(a=Slot(3, 41.0, 61.0)), now=0.0) == 0  # 1 s < 6 s
    assert announcer.announce(forecast_of(a=Slot(2, 20.0, 40.0)), now=0.0) == 1
    assert announcer.announce(forecast_of(a=Slot(2, 28.0, 48.0)), now=0.0) == 1  # 8 s >= 4 s
    announcer.announce(forecast_of(a=Slot(2, 28.0, 48.0), b=Slot(3, 48.0, 60.0)), now=10.0)
    published = [(event.data["position"], event.data["eta_seconds"]) for event in bus.history("a")]
    assert published == [(2, 40.0), (2, 48.0)] and bus.history("b") == []  # b is not watched
    assert messages(watching) == [(2, 48.0)]  # a subscriber that fell behind gets the newest


def test_a_job_taken_off_the_queue_is_never_announced_again():
    bus = EventBus()
    queued = {"a"}
    announcer = PositionAnnouncer(bus, queued.__contains__)
    watching = bus.subscribe(["a"])
    announcer.sent("a", Slot(3, 40.0, 60.0))
    queued.discard("a")  # a worker took it; its forecast slot is stale
    announcer.withdraw("a")
    assert announcer.announce(forecast_of(a=Slot(0, 0.0, 20.0)), now=0.0) == 0
    assert messages(watching) == []
