"""An operator's pause (/api/v1/admin/queue): admissions refused with 503 `paused`, no
job started, running jobs finishing; held across a restart and across services on one
PostgreSQL database; only for admin keys."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import UTC, datetime

import pytest

from app import create_app
from app.generation import Job, JobStatus, Priority, QueuePausedError
from app.generation.intake.keys import Tier
from app.wiring import get_service

from .conftest import TEST_SECRET_KEY, hold_worker, wait_for


def test_a_pause_refuses_submissions_and_starts_nothing_until_resumed(service, call, gate):
    running = hold_worker(service, gate)
    waiting = service.submit("record", {})
    paused = call("POST", "/api/v1/admin/queue/pause")
    assert paused.status_code == 200
    body = paused.get_json()
    assert body["paused"] is True and body["paused_by"] == "open" and body["paused_at"]
    refused = call("POST", "/api/v1/jobs", json={"generator": "noop", "params": {}})
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "paused"
    assert int(refused.headers["Retry-After"]) > 0
    dry = call("POST", "/api/v1/jobs?dry_run=true", json={"generator": "noop", "params": {}})
    assert dry.status_code == 503
    gate.release()  # the running job finishes ...
    assert wait_for(service, running.id).status is JobStatus.SUCCEEDED
    time.sleep(0.3)  # ... and the queued one does not start
    assert service.get(waiting.id).status is JobStatus.QUEUED
    assert call("GET", "/api/v1/admin/queue").get_json()["paused"] is True
    resumed = call("POST", "/api/v1/admin/queue/resume")
    assert resumed.get_json() == {"paused": False, "paused_at": None, "paused_by": None}
    assert wait_for(service, waiting.id).status is JobStatus.SUCCEEDED
    assert call("POST", "/api/v1/jobs", json={"generator": "noop", "params": {}}).status_code == 202


def test_a_pause_outlives_a_restart(make_service, gate):
    first = make_service()
    first.start()
    first.pause_queue(by="cli")
    first.shutdown()
    second = make_service()
    second.start()
    with pytest.raises(QueuePausedError):
        second.submit("noop", {})
    assert second.pause.state().by == "cli"
    assert second.resume_queue() is True
    assert wait_for(second, second.submit("noop", {}).id).status is JobStatus.SUCCEEDED


def test_pause_and_resume_are_counted_and_logged(client, caplog):
    caplog.set_level("INFO", logger="app.web.admin")
    client.post("/api/v1/admin/queue/pause")
    client.post("/api/v1/admin/queue/resume")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'generation_admin_actions_total{action="pause"} 1.0' in metrics
    assert "generation_queue_paused 0.0" in metrics
    assert [r.action for r in caplog.records if hasattr(r, "action")] == ["pause", "resume"]
    assert all(r.key_id == "open" for r in caplog.records if hasattr(r, "action"))


@pytest.fixture
def keyed(config, service):
    keyed = dataclasses.replace(
        config, auth_mode="keys", secret_key=TEST_SECRET_KEY, rate_limit="1000/second"
    )
    app = create_app(keyed, service=service)
    app.config["TESTING"] = True
    return app.test_client()


def bearer(service, name: str, **options: object) -> dict[str, str]:
    _, key = service.keys.create(name, Tier.STANDARD, **options)
    return {"Authorization": f"Bearer {key}"}


def test_only_an_admin_key_may_pause(keyed, service):
    user, ops = bearer(service, "alice"), bearer(service, "ops", admin=True)
    for method, path in (
        ("GET", "/api/v1/admin/queue"),
        ("POST", "/api/v1/admin/queue/pause"),
        ("POST", "/api/v1/admin/queue/resume"),
    ):
        refused = keyed.open(path, method=method, headers=user)
        assert refused.status_code == 403, path
        assert set(refused.get_json()) == {"error"} and "paused" not in refused.get_data(
            as_text=True
        )
        assert keyed.open(path, method=method).status_code == 401
    assert service.pause.state() is None
    assert keyed.get("/api/v1/me", headers=ops).get_json()["admin"] is True
    assert keyed.get("/api/v1/me", headers=user).get_json()["admin"] is False
    paused = keyed.post("/api/v1/admin/queue/pause", headers=ops).get_json()
    (ops_key,) = [key for key in service.keys.all() if key.admin]
    assert paused["paused"] is True and paused["paused_by"] == ops_key.key_id
    refused = keyed.post("/api/v1/jobs", json={"generator": "noop", "params": {}}, headers=user)
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "paused"


def until(condition, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_pause_holds_on_every_service_of_the_database(make_pg_service):
    one, two = make_pg_service("one"), make_pg_service("two")
    one.pause_queue(by="ops")
    admitted = []  # before two read the switch again: they wait for the resume

    def refused_on_two() -> bool:
        try:
            admitted.append(two.submit("noop", {}))
        except QueuePausedError:
            return True
        return False

    until(refused_on_two, timeout=3)  # two reads the switch within about a second
    one.resume_queue()
    until(lambda: two.pause.state() is None, timeout=3)  # and sees the resume as soon
    queued = two.submit("noop", {})
    for job in [*admitted, queued]:
        assert wait_for(two, job.id).status is JobStatus.SUCCEEDED
    # Paused from the other side, with a job queued meanwhile (written straight to the
    # table, as an admission that read the switch just before it flipped would): no
    # service starts it until the resume.
    two.pause_queue(by="ops")
    until(lambda: one.pause.paused, timeout=3)
    waiting = one.store.insert(
        Job(
            pk=0,
            id=uuid.uuid4().hex,
            owner="anonymous",
            generator="noop",
            params={"ms": 0},
            priority=Priority.NORMAL,
            status=JobStatus.QUEUED,
            created_at=datetime.now(UTC),
        )
    )
    time.sleep(1.5)  # longer than a service takes to read the switch
    assert one.get(waiting.id).status is JobStatus.QUEUED
    two.resume_queue()
    assert wait_for(one, waiting.id, timeout=10).status is JobStatus.SUCCEEDED


def test_the_cli_pauses_and_resumes_and_makes_admin_keys(config, make_service):
    app = create_app(config, service=make_service())
    runner = app.test_cli_runner()
    paused = runner.invoke(args=["queue", "pause"])
    assert paused.exit_code == 0 and "by cli" in paused.output
    assert get_service(app).pause.state().by == "cli"
    assert runner.invoke(args=["queue", "resume"]).output.strip() == "Queue resumed."
    assert runner.invoke(args=["queue", "resume"]).output.strip() == "The queue was not paused."
    created = runner.invoke(args=["keys", "create", "ops", "--admin"])
    assert created.exit_code == 0 and "admin" in created.output
    assert get_service(app).keys.all()[0].admin
    assert ", admin" in runner.invoke(args=["keys", "list"]).output


def test_an_admin_cancels_any_owners_job_and_others_cannot(keyed, service, gate, caplog):
    caplog.set_level("INFO", logger="app.web.admin")
    user, ops = bearer(service, "alice"), bearer(service, "ops", admin=True)
    hold_worker(service, gate)
    body = {"generator": "noop", "params": {}}
    job = keyed.post("/api/v1/jobs", json=body, headers=user).get_json()
    path = f"/api/v1/admin/jobs/{job['id']}/cancel"
    assert keyed.post(path, headers=user).status_code == 403
    assert keyed.post(path).status_code == 401
    cancelled = keyed.post(path, headers=ops)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    again = keyed.post(path, headers=ops)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_finished"
    assert keyed.post("/api/v1/admin/jobs/nope/cancel", headers=ops).status_code == 404
    (record,) = [r for r in caplog.records if getattr(r, "action", None) == "cancel"]
    assert (record.job_id, record.owner) == (job["id"], "alice")
    gate.release()
