"""Per-key limits: queued jobs per owner (MAX_QUEUED_PER_KEY) and request rate (RATE_LIMIT)."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app import create_app
from app.generation import TooManyJobsError
from app.generation.intake.keys import Tier

from .conftest import TEST_SECRET_KEY, wait_for
from .test_observers import Journal
from .test_service import hold_worker


def limited_app(config, service, **settings):
    keyed = dataclasses.replace(config, auth_mode="keys", secret_key=TEST_SECRET_KEY, **settings)
    app = create_app(keyed, service=service)
    app.config["TESTING"] = True
    return app


def headers_for(app, name):
    _, key = app.extensions["keys"].create(name, Tier.STANDARD)
    return {"Authorization": f"Bearer {key}"}


def submit(client, headers):
    return client.post("/api/v1/jobs", json={"generator": "record"}, headers=headers)


def keyed_service(make_service, quota):
    """The quota is the service's admission policy (MAX_QUEUED_PER_KEY in its settings)."""
    service = make_service(max_queued_per_key=quota)
    service.start()
    return service


def test_a_key_with_too_many_queued_jobs_gets_429(config, make_service, gate):
    service = keyed_service(make_service, 2)
    app = limited_app(config, service)
    client = app.test_client()
    alice, bob = headers_for(app, "alice"), headers_for(app, "bob")
    hold_worker(service, gate)
    assert [submit(client, alice).status_code for _ in range(2)] == [202, 202]
    refused = submit(client, alice)
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "too_many_jobs"
    assert int(refused.headers["Retry-After"]) >= 1
    assert submit(client, bob).status_code == 202  # a quota is per owner
    assert service.store.count_queued("alice") == 2


def test_quota_refusals_are_reported_to_observers(service, gate):
    journal = Journal()
    service.observers.add(journal)
    hold_worker(service, gate)
    service.submit("record", {}, owner="alice", max_queued=1)
    with pytest.raises(TooManyJobsError):
        service.submit("record", {}, owner="alice", max_queued=1)
    assert ("rejected", "too_many_jobs") in journal.calls


def test_the_quota_frees_up_as_jobs_leave_the_queue(config, make_service, gate):
    service = keyed_service(make_service, 1)
    app = limited_app(config, service)
    client = app.test_client()
    alice = headers_for(app, "alice")
    hold_worker(service, gate)
    first = submit(client, alice).json["id"]
    assert submit(client, alice).status_code == 429
    assert client.post(f"/api/v1/jobs/{first}/cancel", headers=alice).status_code == 200
    assert submit(client, alice).status_code == 202


def test_open_mode_has_no_per_key_quota(client, service, gate):
    hold_worker(service, gate)
    statuses = [submit(client, {}).status_code for _ in range(9)]
    assert statuses == [202] * 9  # MAX_QUEUED_PER_KEY defaults to 20, but only binds keys


def test_concurrent_submits_never_overshoot_the_quota(make_service, gate):
    service = make_service(queue_size=100)
    service.start()
    hold_worker(service, gate)
    barrier = threading.Barrier(12)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            service.submit("record", {}, owner="alice", max_queued=5)
        except TooManyJobsError:
            return "refused"
        return "accepted"

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(attempt, range(12)))
    assert outcomes.count("accepted") == 5 and outcomes.count("refused") == 7
    assert service.store.count_queued("alice") == 5
    assert service.stats()["queue_size"] == 5


def test_the_request_rate_is_limited_per_key(config, service):
    app = limited_app(config, service, rate_limit="3/minute")
    client = app.test_client()
    alice, bob = headers_for(app, "alice"), headers_for(app, "bob")
    assert [client.get("/api/v1/jobs", headers=alice).status_code for _ in range(3)] == [200] * 3
    limited = client.get("/api/v1/jobs", headers=alice)
    assert limited.status_code == 429
    assert limited.json["error"]["code"] == "rate_limited"
    assert "3 per 1 minute" in limited.json["error"]["message"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert client.get("/api/v1/jobs", headers=bob).status_code == 200


def test_a_rotated_key_shares_its_owners_window(config, service):
    app = limited_app(config, service, rate_limit="2/minute")
    client = app.test_client()
    old, new = headers_for(app, "alice"), headers_for(app, "alice")
    assert client.get("/api/v1/jobs", headers=old).status_code == 200
    assert client.get("/api/v1/jobs", headers=new).status_code == 200
    assert client.get("/api/v1/jobs", headers=new).status_code == 429


def test_open_endpoints_and_open_mode_are_not_rate_limited(config, service, client):
    app = limited_app(config, service, rate_limit="1/minute")
    keyed = app.test_client()
    assert {keyed.get("/health").status_code for _ in range(5)} == {200}
    assert {client.get("/api/v1/jobs").status_code for _ in range(5)} == {200}


def test_images_opened_through_signed_links_do_not_count_against_the_rate_limit(
    config, service, paced
):
    app = limited_app(config, service, rate_limit="30/minute")
    client = app.test_client()
    alice = headers_for(app, "alice")
    answer = client.post(
        "/api/v1/jobs", json={"generator": "paced", "params": {"count": 1}}, headers=alice
    )
    job_id = answer.json["id"]
    wait_for(service, job_id)
    [file] = client.get(f"/api/v1/jobs/{job_id}/files", headers=alice).json["files"]
    for _ in range(10):  # a page's thumbnails, reloaded
        with client.get(file["url"]) as image:
            assert image.status_code == 200
    # The same file asked with the key is the first counted request of its route.
    with client.get(file["url"].split("?")[0], headers=alice) as keyed:
        assert (keyed.status_code, keyed.headers["X-RateLimit-Remaining"]) == (200, "29")
