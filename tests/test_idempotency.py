"""Idempotency-Key: a repeated submit returns the first job, durably, and only to its owner."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.generation import IdempotencyKeyReusedError, Priority, QueueFullError
from app.generation.intake.admission import Admission
from app.generation.queue.memory import MemoryQueue

from .conftest import wait_for
from .test_service import hold_worker


def test_a_repeat_returns_the_same_job(service):
    first = service.submit("record", {"tag": 1}, idempotency_key="k-1")
    again = service.submit("record", {"tag": 1}, idempotency_key="k-1")
    assert again.id == first.id and again.replayed and not first.replayed
    assert service.stats()["total_requests"] == 1


def test_a_different_request_under_the_same_key_is_refused(service):
    first = service.submit("record", {"tag": 1}, idempotency_key="k-1")
    for generator, params, priority in [
        ("record", {"tag": 2}, Priority.NORMAL),
        ("record", {"tag": 1}, Priority.LOW),
        ("gate", {"tag": 1}, Priority.NORMAL),
    ]:
        with pytest.raises(IdempotencyKeyReusedError) as reused:
            service.submit(generator, params, priority=priority, idempotency_key="k-1")
        assert reused.value.job_id == first.id


def test_keys_belong_to_their_owner(service):
    alices = service.submit("record", {}, owner="alice", idempotency_key="same")
    bobs = service.submit("record", {"other": True}, owner="bob", idempotency_key="same")
    assert alices.id != bobs.id and not bobs.replayed


def test_the_fingerprint_is_the_request_as_sent_not_its_filled_in_defaults(service):
    # The images generator draws a random seed when none is given: a retry must not
    # count as a different request, and must get the first job's seed.
    params = {"prompt": "a cat", "count": 1, "width": 64, "height": 64}
    first = service.submit("images", params, idempotency_key="img")
    again = service.submit("images", params, idempotency_key="img")
    assert again.id == first.id and again.params["seed"] == first.params["seed"]


def test_a_replay_survives_a_restart(make_service):
    before = make_service()
    before.start()
    job = before.submit("record", {"tag": "durable"}, owner="alice", idempotency_key="k")
    wait_for(before, job.id)
    before.shutdown()
    after = make_service()
    after.start()
    again = after.submit("record", {"tag": "durable"}, owner="alice", idempotency_key="k")
    assert again.id == job.id and again.replayed
    with pytest.raises(IdempotencyKeyReusedError):
        after.submit("record", {"tag": "changed"}, owner="alice", idempotency_key="k")


def test_a_replay_is_answered_even_when_the_queue_is_full(make_service, gate):
    service = make_service(queue_size=1)
    service.start()
    hold_worker(service, gate)
    job = service.submit("record", {}, idempotency_key="k")
    with pytest.raises(QueueFullError):
        service.submit("record", {"tag": "new"})
    assert service.submit("record", {}, idempotency_key="k").id == job.id


def test_concurrent_repeats_create_one_job(make_service, gate):
    service = make_service(queue_size=100)
    service.start()
    hold_worker(service, gate)
    barrier = threading.Barrier(8)

    def attempt(_: int) -> str:
        barrier.wait()
        return service.submit("record", {"tag": "race"}, idempotency_key="race").id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(attempt, range(8)))
    assert len(ids) == 1
    assert service.stats()["queue_size"] == 1  # the losers gave their slots back


def test_a_duplicate_that_loses_the_insert_race_gets_the_winners_job(service):
    # Both passed the lookup before either wrote its row; the unique index decides.
    winner = service.submit("record", {"tag": 1}, idempotency_key="race")
    queue = MemoryQueue(capacity=1, store=service.store)
    admission = Admission(service.store, queue, retry_after=lambda: 1)
    loser = dataclasses.replace(winner, pk=0, id=uuid.uuid4().hex, position=None)
    admitted = admission.admit(loser)
    assert admitted.id == winner.id and admitted.replayed
    different = dataclasses.replace(loser, request_hash="0" * 64)
    with pytest.raises(IdempotencyKeyReusedError):
        admission.admit(different)
    assert len(queue) == 0
    queue.reserve()  # the only slot, which both losers held in turn, was given back


def post(client, key, body, headers=None):
    return client.post(
        "/api/v1/jobs", json=body, headers={"Idempotency-Key": key} | (headers or {})
    )


def test_http_replay_is_200_with_the_same_job(client):
    body = {"generator": "record", "params": {"tag": 1}}
    first = post(client, "order-42", body)
    again = post(client, "order-42", body)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json["id"] == first.json["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]


def test_http_reuse_with_another_body_is_422(client):
    post(client, "order-42", {"generator": "record", "params": {"tag": 1}})
    reused = post(client, "order-42", {"generator": "record", "params": {"tag": 2}})
    assert reused.status_code == 422
    assert reused.json["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there", "nul\x00"])
def test_http_rejects_malformed_idempotency_keys(client, key):
    response = client.post(
        "/api/v1/jobs",
        json={"generator": "record"},
        environ_base={"HTTP_IDEMPOTENCY_KEY": key},
    )
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_header"
    assert client.get("/api/v1/jobs").json["jobs"] == []


def test_http_keys_are_per_owner(keyed_client, issue_key):
    body = {"generator": "record"}
    alice, bob = issue_key("alice"), issue_key("bob")
    first = post(keyed_client, "shared", body, alice)
    theirs = post(keyed_client, "shared", body, bob)
    assert theirs.status_code == 202 and theirs.json["id"] != first.json["id"]
