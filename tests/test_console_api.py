"""The operators' actions and picture (/api/v1/admin): retry a failed job, change a queued
job's priority, drain a machine, and the console's snapshot and stream; on SQLite and on
PostgreSQL with several services; refused to keys that are not an admin's."""

from __future__ import annotations

import json
import time

import pytest
from simple_websocket import Client

from app import create_app
from app.generation import Job, JobStatus, MachineNotFoundError, Priority
from app.generation.events.observers import JobObserver
from app.generation.store.processes import ProcessRecord
from app.wiring import get_service

from .conftest import hold_worker, wait_for
from .test_queue_pause import bearer, keyed, until  # noqa: F401 - `keyed` is a fixture

# -- retry --------------------------------------------------------------------------------


def test_a_failed_job_is_retried_as_a_new_attempt_of_the_same_job(service, call, caplog):
    caplog.set_level("INFO", logger="app.web.admin")
    failed = wait_for(service, service.submit("fail", {}).id)
    assert failed.status is JobStatus.FAILED and failed.attempts == 1
    answer = call("POST", f"/api/v1/admin/jobs/{failed.id}/retry")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["id"] == failed.id and body["status"] == "queued"
    assert body["error"] is None and body["attempts"] == 0
    again = wait_for(service, failed.id)
    assert again.status is JobStatus.FAILED and again.attempts == 1
    assert again.lease_epoch == failed.lease_epoch + 1  # a new run, under a new epoch
    kinds = [event.type.value for event in service.bus.history(failed.id)]
    retried_at = kinds.index("failed") + 1  # the first attempt's end, then the retry's life
    assert kinds[retried_at] == "queued" and kinds[-1] == "failed"
    assert "started" in kinds[retried_at:]
    assert [r.job_id for r in caplog.records if getattr(r, "action", "") == "retry"] == [failed.id]
    metrics = call("GET", "/metrics").get_data(as_text=True)
    assert 'generation_admin_actions_total{action="retry"} 1.0' in metrics


def test_only_a_failed_job_can_be_retried(service, call, gate):
    done = wait_for(service, service.submit("record", {}).id)
    refused = call("POST", f"/api/v1/admin/jobs/{done.id}/retry")
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_failed"
    running = hold_worker(service, gate)
    assert call("POST", f"/api/v1/admin/jobs/{running.id}/retry").status_code == 409
    missing = call("POST", f"/api/v1/admin/jobs/{'0' * 32}/retry")
    assert missing.status_code == 404
    gate.release()


def test_a_retried_job_waits_behind_its_owners_queued_jobs(service, gate, recorder):
    failed = wait_for(service, service.submit("fail", {}).id)
    hold_worker(service, gate)
    first = service.submit("record", {"tag": "queued before the retry"})
    service.ops.steering.retry(failed.id)
    gate.release()
    assert wait_for(service, first.id).started_at <= wait_for(service, failed.id).started_at


# -- priority -----------------------------------------------------------------------------


def test_a_new_priority_reorders_the_queue(service, call, gate, recorder):
    hold_worker(service, gate)
    # Three owners, so fair share spaces none of them out (docs/scheduling.md).
    jobs = [service.submit("record", {"tag": tag}, owner=tag) for tag in ("a", "b", "c")]
    answer = call("POST", f"/api/v1/admin/jobs/{jobs[2].id}/priority", json={"priority": "high"})
    assert answer.status_code == 200 and answer.get_json()["priority"] == "high"
    assert answer.get_json()["position"] == 0  # next to start
    lowered = call("POST", f"/api/v1/admin/jobs/{jobs[0].id}/priority", json={"priority": "low"})
    assert lowered.get_json()["priority"] == "low"
    gate.release()
    for job in jobs:
        wait_for(service, job.id)
    assert recorder.ran == ["c", "b", "a"]


def test_a_job_keeps_the_wait_it_has_done_when_its_priority_changes(service, gate):
    hold_worker(service, gate)
    early = service.submit("record", {}, priority=Priority.LOW)
    later = service.submit("record", {}, priority=Priority.HIGH)
    moved = service.ops.steering.reprioritize(early.id, Priority.HIGH)
    aging = service.settings.aging_seconds
    assert moved.sort_key == pytest.approx(early.sort_key - 2 * aging)
    assert moved.sort_key <= later.sort_key  # admitted first, now at the same level
    gate.release()


def test_priority_changes_are_checked(service, call, gate):
    running = hold_worker(service, gate)
    queued = service.submit("record", {})
    url = f"/api/v1/admin/jobs/{queued.id}/priority"
    for body, field in (
        ({}, "priority"),
        ({"priority": "urgent"}, "priority"),
        ({"priority": "high", "x": 1}, "x"),
        ({"priority": 1}, "priority"),
    ):
        refused = call("POST", url, json=body)
        assert refused.status_code == 422, body
        assert field in refused.get_json()["error"]["fields"]
    assert call("POST", url, data="[", content_type="application/json").status_code == 400
    not_queued = call("POST", f"/api/v1/admin/jobs/{running.id}/priority", json={"priority": "low"})
    assert not_queued.status_code == 409
    assert not_queued.get_json()["error"]["code"] == "not_queued"
    gate.release()


# -- drain --------------------------------------------------------------------------------


def test_a_drained_machine_finishes_its_job_and_claims_no_more(service, call, gate):
    running = hold_worker(service, gate)
    machine = service.machine
    drained = call("POST", f"/api/v1/admin/machines/{machine}/drain")
    assert drained.status_code == 200
    assert drained.get_json()["draining"] is True and drained.get_json()["draining_by"] == "open"
    waiting = call("POST", "/api/v1/jobs", json={"generator": "record", "params": {}})
    assert waiting.status_code == 202  # a drain is not a pause: others may run it
    gate.release()
    assert wait_for(service, running.id).status is JobStatus.SUCCEEDED
    time.sleep(0.5)
    assert service.get(waiting.get_json()["id"]).status is JobStatus.QUEUED
    listed = call("GET", "/api/v1/admin/machines").get_json()["machines"]
    assert {"machine": machine, "draining": True}.items() <= listed[0].items()
    assert call("POST", f"/api/v1/admin/machines/{machine}/undrain").status_code == 200
    assert wait_for(service, waiting.get_json()["id"]).status is JobStatus.SUCCEEDED
    unknown = call("POST", "/api/v1/admin/machines/no-such-machine/drain")
    assert unknown.status_code == 404


def test_a_drain_outlives_a_restart_of_its_machine(make_service):
    first = make_service(machine="box-1")
    first.start()
    first.ops.steering.drain("box-1", by="ops")
    first.shutdown()
    second = make_service(machine="box-1")
    second.start()
    job = second.submit("record", {})
    time.sleep(1.0)
    assert second.get(job.id).status is JobStatus.QUEUED
    assert second.ops.steering.undrain("box-1") is True
    assert wait_for(second, job.id).status is JobStatus.SUCCEEDED


class Ran(JobObserver):
    """The jobs one service ran."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def finished(self, job: Job, outcome: str, run_seconds: float) -> None:
        self.ids.append(job.id)


def test_a_drain_leaves_the_other_machines_running(make_pg_service):
    one = make_pg_service("one", machine="m-one")
    two = make_pg_service("two", machine="m-two")
    ran_on_one, ran_on_two = Ran(), Ran()
    one.observers.add(ran_on_one)
    two.observers.add(ran_on_two)
    with pytest.raises(MachineNotFoundError):
        one.ops.steering.drain("m-three", by="ops")
    two.ops.steering.drain("m-one", by="ops")  # drained from another machine
    time.sleep(1.2)  # `one` reads its drain within a second
    jobs = [one.submit("noop", {"ms": 20}) for _ in range(6)]
    finished = [wait_for(two, job.id, timeout=10) for job in jobs]
    assert {job.status for job in finished} == {JobStatus.SUCCEEDED}
    assert ran_on_one.ids == [] and sorted(ran_on_two.ids) == sorted(job.id for job in jobs)
    one.ops.steering.undrain("m-one")
    two.ops.steering.drain("m-two", by="ops")
    time.sleep(1.2)
    later = two.submit("noop", {})
    assert wait_for(one, later.id, timeout=10).status is JobStatus.SUCCEEDED
    assert ran_on_one.ids == [later.id]
    two.ops.steering.undrain("m-two")


# -- the same actions on PostgreSQL ---------------------------------------------------------


def drain_all(*services) -> None:
    """Hold every service's workers (a drain of each machine) so the queue keeps still."""
    for service in services:
        service.ops.steering.drain(service.machine, by="test")
    for service in services:
        until(lambda service=service: service.pause.claims_held, timeout=3)


def test_cancel_retry_and_priority_on_postgres(make_pg_service, recorder):
    one = make_pg_service("one", machine="m-one")
    two = make_pg_service("two", machine="m-two")
    failed = wait_for(one, one.submit("fail", {}).id, timeout=10)
    drain_all(one, two)
    tags = [one.submit("record", {"tag": tag}) for tag in ("a", "b")]
    doomed = one.submit("record", {"tag": "cancelled"})
    assert two.cancel(doomed.id).status is JobStatus.CANCELLED  # an admin's cancel, elsewhere
    retried = two.ops.steering.retry(failed.id)  # on the other service than the failure's
    assert retried.status is JobStatus.QUEUED and retried.attempts == 0
    two.ops.steering.reprioritize(tags[1].id, Priority.HIGH)
    # One service runs them, so the order it starts them in is the queue's.
    one.ops.steering.undrain("m-one")
    for job in [*tags, retried]:
        wait_for(one, job.id, timeout=10)
    assert recorder.ran[:2] == ["b", "a"]
    assert one.get(failed.id).status is JobStatus.FAILED
    assert one.get(failed.id).lease_epoch == failed.lease_epoch + 1


# -- the console's picture ----------------------------------------------------------------


def test_the_console_sees_every_service_and_job_of_the_cluster(make_pg_service, gate):
    one, two = make_pg_service("one", machine="m-one"), make_pg_service("two", machine="m-two")
    drain_all(one, two)
    waiting = two.submit("record", {})
    snapshot = one.ops.console.snapshot()
    assert {p["name"]: p["machine"] for p in snapshot["processes"]} == {
        "one": "m-one",
        "two": "m-two",
    }
    assert [p["this"] for p in snapshot["processes"]] == [True, False]
    time.sleep(1.1)  # past the shared snapshot's second
    snapshot = one.ops.console.snapshot()
    assert snapshot["shared"] is True and snapshot["queue"]["paused"] is False
    assert all(p["draining"] and p["draining_by"] == "test" for p in snapshot["processes"])
    assert [job["id"] for job in snapshot["next"]] == [waiting.id]
    assert snapshot["queue"]["depth"] == {"high": 0, "normal": 1, "low": 0}
    assert snapshot["queue"]["oldest"][0]["job_id"] == waiting.id
    assert "params" not in snapshot["next"][0]
    one.ops.steering.undrain("m-one")
    wait_for(one, waiting.id, timeout=10)
    two.shutdown()  # a clean stop leaves the registry
    time.sleep(1.1)
    assert [p["name"] for p in one.ops.console.snapshot()["processes"]] == ["one"]


def test_a_silent_service_is_shown_as_such_and_pruned_after_an_hour(service, clock):
    processes = service.ops.registry._store
    since = service.ops.registry._clock()
    processes.report(ProcessRecord("gone:1", "gone", since, since.replace(year=2000), 2))
    time.sleep(1.1)
    shown = {p["name"]: p for p in service.ops.console.snapshot()["processes"]}
    assert shown["gone:1"]["silent"] is True and shown[service.name]["silent"] is False
    service.ops.registry.report()
    assert "gone" not in processes.machines()


def test_the_console_lists_failures_and_owners(service, call):
    failed = wait_for(service, service.submit("fail", {}).id)
    snapshot = call("GET", "/api/v1/admin/console").get_json()
    assert snapshot["failures"][0]["id"] == failed.id
    assert snapshot["failures"][0]["error"] and snapshot["failures"][0]["attempts"] == 1
    assert snapshot["webhooks"] == {"pending": 0, "delivered": 0, "failed": 0}
    assert snapshot["results"]["stored"] == 0


def test_the_stream_pushes_the_console_with_its_charts(service, live_server, gate):
    socket = Client.connect(f"ws://{live_server}/api/v1/admin/stream")
    try:
        first = json.loads(socket.receive(timeout=5))
        assert first["type"] == "console" and "history" not in first
        assert set(first["charts"]) == {"depth", "latency", "throughput"}
        assert all(svg.startswith("<svg") for svg in first["charts"].values())
        hold_worker(service, gate)
        queued = service.submit("record", {})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # pushed within a couple of seconds
            message = json.loads(socket.receive(timeout=5))
            if [job["id"] for job in message["next"]] == [queued.id]:
                break
        else:
            pytest.fail("the queued job never reached the stream")
    finally:
        socket.close()
        gate.release()


# -- who may ------------------------------------------------------------------------------

ADMIN_CALLS = (
    ("GET", "/api/v1/admin/console", None),
    ("GET", "/api/v1/admin/machines", None),
    ("POST", "/api/v1/admin/machines/{machine}/drain", None),
    ("POST", "/api/v1/admin/machines/{machine}/undrain", None),
    ("POST", "/api/v1/admin/jobs/{job}/retry", None),
    ("POST", "/api/v1/admin/jobs/{job}/priority", {"priority": "high"}),
)


def test_keys_that_are_not_an_admins_get_nothing(keyed, service):  # noqa: F811
    user, ops = bearer(service, "alice"), bearer(service, "ops", admin=True)
    job = keyed.post(
        "/api/v1/jobs", json={"generator": "fail", "params": {}}, headers=user
    ).get_json()
    wait_for(service, job["id"])
    for method, template, body in ADMIN_CALLS:
        path = template.format(machine=service.machine, job=job["id"])
        refused = keyed.open(path, method=method, json=body, headers=user)
        assert refused.status_code == 403, path
        assert set(refused.get_json()) == {"error"}
        assert job["id"] not in refused.get_data(as_text=True)
        assert keyed.open(path, method=method, json=body).status_code == 401, path
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", **user}
    assert keyed.get("/api/v1/admin/stream", headers=upgrade).status_code == 403
    assert service.get(job["id"]).status is JobStatus.FAILED  # nothing was done
    assert keyed.post(f"/api/v1/admin/jobs/{job['id']}/retry", headers=ops).status_code == 200
    snapshot = keyed.get("/api/v1/admin/console", headers=ops)
    assert snapshot.status_code == 200 and snapshot.get_json()["processes"]


def test_the_cli_drains_and_undrains_this_machine(config, make_service):
    service = make_service(machine="box-7")
    service.start()
    runner = create_app(config, service=service).test_cli_runner()
    drained = runner.invoke(args=["queue", "drain"])
    assert drained.exit_code == 0 and "Machine box-7 drained" in drained.output
    assert set(get_service(runner.app).ops.steering.drains()) == {"box-7"}
    unknown = runner.invoke(args=["queue", "drain", "box-8"])
    assert unknown.exit_code != 0 and "no running service" in unknown.output
    assert runner.invoke(args=["queue", "undrain"]).output.strip() == "Machine box-7 undrained."
    assert runner.invoke(args=["queue", "undrain", "box-7"]).output.strip() == (
        "Machine box-7 was not drained."
    )
