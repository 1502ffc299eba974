"""`/metrics`: Prometheus text that parses, and moves when jobs run."""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.generation import Priority

from .conftest import wait_for
from .test_observers import Journal


def scrape(client):
    """{(sample name, frozen labels): value} of one scrape, parsed by prometheus-client."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def journal(service):
    journal = Journal()
    service.observers.add(journal)
    return journal


def test_metrics_parse_and_describe_an_idle_service(client):
    samples = scrape(client)
    assert value(samples, "generation_workers") == 1
    assert value(samples, "generation_queue_capacity") == 10
    assert value(samples, "generation_accepting_jobs") == 1
    for priority in ("high", "normal", "low"):
        assert ("generation_queue_depth", frozenset({("priority", priority)})) in samples


def test_job_counters_and_histograms_move_when_jobs_run(client, service, journal):
    ran = [service.submit("record", {}), service.submit("fail", {})]
    for job in ran:
        journal.wait_ran(job.id)
    samples = scrape(client)
    assert value(samples, "generation_jobs_submitted_total", priority="normal") == 2
    finished = "generation_jobs_finished_total"
    assert value(samples, finished, generator="record", outcome="succeeded") == 1
    assert value(samples, finished, generator="fail", outcome="failed") == 1
    assert value(samples, "generation_job_run_seconds_count", generator="record") == 1
    assert value(samples, "generation_job_wait_seconds_count", priority="normal") == 2
    assert value(samples, "generation_results_stored") == 1
    assert value(samples, "generation_results_stored_bytes") > 0


def test_queue_depth_and_active_workers_are_read_at_scrape_time(client, service, gate):
    service.submit("gate", {})
    assert gate.started.wait(5)
    service.submit("record", {}, priority=Priority.HIGH)
    service.submit("record", {}, priority=Priority.LOW)
    busy = scrape(client)
    assert value(busy, "generation_active_workers") == 1
    assert value(busy, "generation_queue_depth", priority="high") == 1
    assert value(busy, "generation_queue_depth", priority="low") == 1
    gate.release()
    wait_for(service, service.list(limit=1)[0].id)
    idle = scrape(client)
    assert value(idle, "generation_queue_depth", priority="high") == 0


def test_rejections_are_counted_by_reason(client):
    client.post("/api/v1/jobs", json={"generator": "nope"})
    client.post("/api/v1/jobs", json={"generator": "images", "params": {"prompt": ""}})
    samples = scrape(client)
    rejected = "generation_submissions_rejected_total"
    assert value(samples, rejected, reason="invalid_params") == 2


def test_websocket_gauge_counts_the_open_sockets(app, client):
    sockets = app.extensions["sockets"]
    for waker in (lambda: None, lambda: None):
        assert sockets.admit(waker)
    assert value(scrape(client), "generation_websockets_open") == 2


def test_requests_in_flight_include_the_scrape_itself(client):
    assert value(scrape(client), "http_requests_in_flight") == 1


def test_submissions_are_counted_by_priority_and_unused_priorities_have_no_series(client):
    for priority in ("low", "low", "normal"):  # open mode's ceiling is normal
        job = {"generator": "noop", "params": {}, "priority": priority}
        assert client.post("/api/v1/jobs", json=job).status_code == 202
    samples = scrape(client)
    submitted = "generation_jobs_submitted_total"
    assert value(samples, submitted, priority="low") == 2
    assert value(samples, submitted, priority="normal") == 1
    assert (submitted, frozenset({("priority", "high")})) not in samples


def test_idle_seconds_follow_the_idle_stop_and_stay_zero_without_one(config, make_service):
    from app import create_app

    without = create_app(config, service=make_service()).test_client()
    assert value(scrape(without), "generation_idle_seconds") == 0

    service = make_service(idle_stop_seconds=600)
    client = create_app(config, service=service).test_client()
    idle = service.ops.idle
    stopped: list[str] = []
    idle.on_idle = stopped.append  # as app/idle.py arms it; 600 s will not pass here
    assert value(scrape(client), "generation_idle_seconds") == 0  # not looked yet: not idle
    assert idle.check() is False  # nothing queued, running or open: idle from now
    time.sleep(0.05)
    seen = value(scrape(client), "generation_idle_seconds")
    assert 0.05 <= seen <= idle.idle_for() and stopped == []
