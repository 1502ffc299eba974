"""Result retention: results older than RESULT_TTL_HOURS are deleted, the job stays."""

import threading
import time
from datetime import timedelta

import pytest

from app import create_app
from app.config import Config, ConfigError
from app.generation import JobStatus
from app.generation.events.bus import EventType
from app.generation.results import retention

from .conftest import wait_for
from .test_result_links import next_event

TTL = timedelta(hours=24)


@pytest.fixture
def retained(make_service, clock):
    """A started service that keeps results for TTL, on the fake clock; its sweeper
    thread waits a minute before its first sweep, so only the test sweeps."""
    service = make_service(clock=clock, result_ttl=TTL)
    service.start()
    return service


def finished(service, generator="record"):
    return wait_for(service, service.submit(generator, {}).id)


def test_sweep_deletes_results_older_than_the_ttl(retained, clock):
    job = finished(retained)
    clock.advance(hours=24, seconds=1)
    assert retained.sweeper.sweep() == 1
    expired = retained.get(job.id)
    assert (expired.status, expired.expired_at) == (JobStatus.SUCCEEDED, clock.now)
    with pytest.raises(FileNotFoundError):
        retained.results.open(job.id, job.lease_epoch)


def test_sweep_keeps_results_younger_than_the_ttl(retained, clock):
    job = finished(retained)
    clock.advance(hours=23, minutes=59)
    assert retained.sweeper.sweep() == 0
    assert retained.get(job.id).expired_at is None
    assert retained.results.size(job.id, job.lease_epoch) > 0


def test_sweep_leaves_jobs_without_results_alone(retained, clock):
    failed = finished(retained, "fail")
    clock.advance(days=3)
    assert retained.sweeper.sweep() == 0
    assert retained.get(failed.id).expired_at is None


def test_sweep_marks_a_job_whose_file_was_deleted_before_a_crash(retained, clock):
    job = finished(retained)
    retained.results.delete(job.id, job.lease_epoch)  # the sweep died right after this
    clock.advance(days=2)
    assert retained.sweeper.sweep() == 1
    assert retained.get(job.id).expired_at == clock.now


def test_sweeping_twice_expires_each_result_once(retained, clock):
    finished(retained)
    clock.advance(days=2)
    assert retained.sweeper.sweep() == 1
    assert retained.sweeper.sweep() == 0


def test_sweep_works_through_more_than_one_batch(retained, clock, monkeypatch):
    monkeypatch.setattr(retention, "SWEEP_BATCH", 2)
    jobs = [finished(retained) for _ in range(5)]
    clock.advance(days=2)
    assert retained.sweeper.sweep() == 5
    assert all(retained.get(job.id).expired_at for job in jobs)


def test_sweeper_thread_sweeps_every_interval(make_service, clock):
    service = make_service(clock=clock, result_ttl=TTL, sweep_interval=0.02)
    service.start()
    job = finished(service)
    clock.advance(days=2)
    for _ in range(500):
        if service.get(job.id).expired_at is not None:
            break
        time.sleep(0.01)
    assert service.get(job.id).expired_at == clock.now


def test_shutdown_stops_the_sweeper_thread(retained):
    assert "gen-sweeper" in {thread.name for thread in threading.enumerate()}
    retained.shutdown()
    assert "gen-sweeper" not in {thread.name for thread in threading.enumerate()}


def test_expired_job_reports_no_result_and_its_download_is_gone(config, retained, clock):
    client = create_app(config, service=retained).test_client()
    job = finished(retained)
    with client.get(f"/api/v1/jobs/{job.id}/result") as download:
        assert download.status_code == 200
    clock.advance(days=2)
    retained.sweeper.sweep()
    body = client.get(f"/api/v1/jobs/{job.id}").get_json()
    assert (body["status"], body["result"]) == ("succeeded", None)
    assert body["expired_at"] == clock.now.isoformat().replace("+00:00", "Z")
    gone = client.get(f"/api/v1/jobs/{job.id}/result")
    assert gone.status_code == 410
    assert gone.get_json()["error"]["code"] == "expired"


def test_status_reports_the_space_results_use(config, retained, clock):
    client = create_app(config, service=retained).test_client()
    job = finished(retained)
    results = client.get("/status").get_json()["generation_service"]["results"]
    assert results == {"stored": 1, "bytes": job.result_bytes, "ttl_hours": 24.0}
    clock.advance(days=2)
    retained.sweeper.sweep()
    results = client.get("/status").get_json()["generation_service"]["results"]
    assert (results["stored"], results["bytes"]) == (0, 0)


def test_result_ttl_comes_from_the_environment_and_zero_keeps_results():
    assert Config.from_env({}, dotenv=False).result_ttl == timedelta(hours=24)
    assert Config.from_env({"RESULT_TTL_HOURS": "6"}, dotenv=False).result_ttl == timedelta(hours=6)
    assert Config.from_env({"RESULT_TTL_HOURS": "0"}, dotenv=False).result_ttl is None
    with pytest.raises(ConfigError, match="RESULT_TTL_HOURS"):
        Config.from_env({"RESULT_TTL_HOURS": "-1"}, dotenv=False)


def test_a_service_without_ttl_has_no_sweeper(make_service):
    assert make_service().sweeper is None


def test_the_sweep_deletes_a_results_files_with_it(config, retained, clock, paced):
    client = create_app(config, service=retained).test_client()
    subscription = retained.bus.subscribe()
    job = retained.submit("paced", {"count": 2})
    next_event(subscription, EventType.OUTPUT)  # image 2 waits: the run goes on...
    stored = retained.results.files
    epoch = retained.get(job.id).lease_epoch
    assert [f.name for f in stored.list(job.id, epoch)] == ["image-01.png"]  # ...stored
    paced.advance(1)
    job = wait_for(retained, job.id)
    url = f"/api/v1/jobs/{job.id}/files/image-01.png"
    with client.get(url) as served:
        assert served.status_code == 200
    clock.advance(days=2)
    retained.sweeper.sweep()
    assert stored.list(job.id, epoch) == []  # no stored copy outlives the result
    gone = client.get(url)
    assert (gone.status_code, gone.get_json()["error"]["code"]) == (410, "expired")
    assert client.get(f"/api/v1/jobs/{job.id}/files").status_code == 410
