"""HTTP face of scheduling: dry-run quotes, computed Retry-After, /status figures."""

import pytest

from app import create_app

from .clock import FakeClock
from .openapi_check import assert_conforms


@pytest.fixture
def held(service, gate):
    """The single worker is busy until the test ends."""
    service.submit("gate", {})
    assert gate.started.wait(5)
    return service


def test_dry_run_quotes_position_and_eta_without_queueing(call, held):
    call("POST", "/api/v1/jobs", json={"generator": "record", "params": {}})
    response = call(
        "POST",
        "/api/v1/jobs?dry_run=true",
        json={"generator": "record", "params": {"tag": 1}, "priority": "low"},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["dry_run"] is True and body["position"] == 1 and body["eta_seconds"] > 0
    assert (body["priority"], body["params"]) == ("low", {"tag": 1})
    assert held.stats()["queue_size"] == 1


def test_dry_run_returns_the_rejection_a_submit_would_get(call):
    response = call("POST", "/api/v1/jobs?dry_run=1", json={"generator": "nope"})
    assert response.status_code == 422
    assert "generator" in response.get_json()["error"]["fields"]


def test_dry_run_flag_must_be_a_boolean(call):
    response = call("POST", "/api/v1/jobs?dry_run=maybe", json={"generator": "record"})
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == {"dry_run": "true or false"}


def test_queue_full_retry_after_is_computed_from_the_running_job(config, make_service, gate):
    clock = FakeClock()
    service = make_service(queue_size=1, clock=clock)
    service.start()
    app = create_app(config, service=service)
    client = app.test_client()
    service.submit("gate", {})
    assert gate.started.wait(5)
    service.submit("record", {})
    clock.advance(1)
    for query in ("", "?dry_run=true"):
        url = f"/api/v1/jobs{query}"
        response = client.post(url, json={"generator": "record"})
        assert_conforms(app, "POST", url, response)
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "queue_full"
        assert response.headers["Retry-After"] == "4"  # a 5 s run, 1 s in


def test_status_reports_workers_aging_and_eta_error(call):
    stats = call("GET", "/status").get_json()["generation_service"]
    assert (stats["workers"], stats["workers_min"], stats["workers_max"]) == (1, 1, 1)
    assert stats["priority_aging_seconds"] == 60
    assert stats["eta_error"] == {"median": None, "p90": None, "samples": 0}
