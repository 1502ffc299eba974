"""The drain that SIGTERM starts (app/drain.py), without a server around it."""

import pytest

from app.drain import Drain
from app.generation import JobStatus

from .conftest import wait_for


@pytest.fixture
def drain_of(service):
    def make(timeout):
        drain = Drain(service, timeout)
        drain.arm()
        return drain

    return make


def test_a_drain_turns_readiness_off_and_refuses_jobs_at_once(client, service, gate, drain_of):
    service.submit("gate", {})
    assert gate.started.wait(5)
    drain_of(30).begin()
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["service"] == "not accepting jobs"
    refused = client.post("/api/v1/jobs", json={"generator": "record"})
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "unavailable"
    assert int(refused.headers["Retry-After"]) > 0


def test_running_jobs_may_finish_before_the_deadline(service, gate, drain_of):
    running = service.submit("gate", {})
    assert gate.started.wait(5)
    queued = service.submit("record", {})
    drain = drain_of(30)
    drain.begin()
    gate.release()
    drain.finish()
    assert service.get(running.id).status is JobStatus.SUCCEEDED
    assert service.get(queued.id).status is JobStatus.QUEUED


def test_jobs_still_running_at_the_deadline_go_back_to_the_queue(
    make_service, service, gate, drain_of
):
    running = service.submit("gate", {})
    assert gate.started.wait(5)
    drain = drain_of(0.1)
    drain.begin()
    drain.finish()
    requeued = service.store.get(running.id)
    assert (requeued.status, requeued.attempts, requeued.error) == (JobStatus.QUEUED, 1, None)
    gate.release()
    successor = make_service()
    successor.start()
    assert wait_for(successor, running.id).status is JobStatus.SUCCEEDED


def test_finishing_without_a_drain_requeues_running_jobs_at_once(service, gate, drain_of):
    running = service.submit("gate", {})
    assert gate.started.wait(5)
    drain_of(30).finish()  # SIGINT/SIGQUIT: gunicorn's quick exit
    assert service.store.get(running.id).status is JobStatus.QUEUED
