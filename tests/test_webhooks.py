"""Webhooks end to end on SQLite: submit with a webhook, a loopback receiver gets signed
deliveries; retries, the dead-letter and its redrive; safe targets; a receiver that never
answers. (PostgreSQL: test_webhooks_postgres.py; crashes: test_webhooks_faults.py.)"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from standardwebhooks.webhooks import WebhookVerificationError

from app import create_app
from app.config import Config
from app.generation import GenerationService, JobStatus
from app.generation.intake.keys import Tier
from app.generation.notify.signing import new_secret
from app.generation.settings import WebhookSettings
from app.generation.store.deliveries import DELIVERED, FAILED, PENDING

from .conftest import TEST_SECRET_KEY, wait_for
from .servers import free_port
from .webhook_receiver import Receiver, receiving

SECRET = new_secret()
PUBLIC_URL = "https://gen.example.com"
# Loopback receivers need both; the production defaults refuse them (tested below).
LOOPBACK = WebhookSettings(
    allow_http=True,
    allow_private=True,
    open_secrets=(SECRET,),
    retry_delays=(0.3, 0.6, 1.2),
    poll_interval=0.1,
    connect_timeout=1.0,
    read_timeout=1.0,
)


@pytest.fixture
def hooks(
    make_service: Callable[..., GenerationService], config: Config
) -> Iterator[tuple[GenerationService, FlaskClient]]:
    service = make_service(webhooks=LOOPBACK)
    service.start()
    app = create_app(dataclasses.replace(config, public_url=PUBLIC_URL), service=service)
    app.config["TESTING"] = True
    yield service, app.test_client()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as receiver:
        yield receiver


def submit(client: FlaskClient, **body: object) -> dict:
    body = {"generator": "noop", "params": {}} | body
    response = client.post("/api/v1/jobs", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def deliveries(service: GenerationService, job_id: str) -> list:
    return service.deliveries.for_job(job_id)


def settle(service: GenerationService, job_id: str, status: str, timeout: float = 10) -> list:
    """The job's deliveries, once every one of them has `status`."""
    deadline = time.monotonic() + timeout
    while True:
        found = deliveries(service, job_id)
        if found and all(delivery.status == status for delivery in found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries still {[d.status for d in found]}")
        time.sleep(0.02)


def test_a_completed_job_is_posted_signed_with_the_document_get_answers(hooks, receiver):
    service, client = hooks
    job = submit(client, webhook=receiver.url)
    (message,) = receiver.wait_for(1)
    payload = message.verified(SECRET)
    assert payload["type"] == "job.completed"
    document = client.get(f"/api/v1/jobs/{job['id']}").get_json()
    data = payload["data"]
    assert data["id"] == job["id"] and data["status"] == "succeeded"
    assert data["links"]["self"] == PUBLIC_URL + document["links"]["self"]
    assert data["webhook"] == {"url": receiver.url, "events": ["completed"]}
    assert set(data) == set(document)
    (delivery,) = settle(service, job["id"], DELIVERED)
    assert message.id == delivery.id and delivery.last_status == 204
    assert message.headers["content-type"] == "application/json"


def test_each_asked_event_is_sent_and_an_output_names_its_file(hooks, receiver):
    service, client = hooks
    events = ["started", "output", "completed"]
    job = submit(
        client,
        generator="images",
        params={"prompt": "x", "count": 2, "width": 64, "height": 64},
        webhook=receiver.url,
        webhook_events=events,
    )
    messages = receiver.wait_for(4)
    types = sorted(message.verified(SECRET)["type"] for message in messages)
    assert types == ["job.completed", "job.output", "job.output", "job.started"]
    files = [m.verified(SECRET)["file"] for m in messages if "output" in m.verified(SECRET)["type"]]
    assert sorted(file["name"] for file in files) == ["image-01.png", "image-02.png"]
    assert all(file["url"].startswith(PUBLIC_URL + "/api/v1/jobs/") for file in files)
    assert len(set(receiver.ids())) == 4
    assert len(settle(service, job["id"], DELIVERED)) == 4


def test_a_job_without_a_webhook_and_a_filtered_event_send_nothing(hooks, receiver):
    service, client = hooks
    plain = submit(client)
    started_only = submit(
        client, generator="fail", webhook=receiver.url, webhook_events=["started"]
    )
    wait_for(service, started_only["id"])
    wait_for(service, plain["id"])
    (message,) = receiver.wait_for(1)
    assert message.verified(SECRET)["type"] == "job.started"
    time.sleep(0.3)
    assert len(receiver.messages) == 1
    assert deliveries(service, plain["id"]) == []


def test_a_receiver_that_is_down_gets_the_delivery_once_it_is_up(hooks):
    service, client = hooks
    port = free_port()
    job = submit(client, webhook=f"http://127.0.0.1:{port}/hooks")
    # Refused twice, with growing delays in between ...
    deadline = time.monotonic() + 10
    while (found := deliveries(service, job["id"])) == [] or found[0].attempts < 2:
        assert time.monotonic() < deadline, "no second attempt"
        time.sleep(0.02)
    first = found[0]
    assert first.status == PENDING and first.last_status is None
    assert "refused" in first.last_error
    assert first.next_attempt_at > first.last_attempt_at
    with receiving(port=port) as receiver:
        (message,) = receiver.wait_for(1)
        (delivered,) = settle(service, job["id"], DELIVERED)
    assert message.id == first.id == delivered.id
    assert delivered.attempts >= 3


def test_a_receiver_failing_forever_dead_letters_and_a_redrive_delivers(hooks, receiver):
    service, client = hooks
    receiver.answer = lambda message: 500
    job = submit(client, webhook=receiver.url)
    (failed,) = settle(service, job["id"], FAILED)
    assert failed.attempts == LOOPBACK.max_attempts == 4
    assert failed.last_status == 500 and failed.last_error.startswith("HTTP 500")
    assert len(receiver.messages) == 4 and len(set(receiver.ids())) == 1
    gaps = [b.at - a.at for a, b in zip(receiver.messages, receiver.messages[1:], strict=False)]
    # Each wait is at least its delay less the jitter (a loaded machine only adds to it),
    # and the last, four times the first, outlasts any noise the first could carry.
    assert all(
        gap >= delay * 0.8 - 0.02 for gap, delay in zip(gaps, LOOPBACK.retry_delays, strict=True)
    )
    assert gaps[-1] > gaps[0]
    listed = client.get("/api/v1/webhooks/deliveries?status=failed").get_json()
    assert [d["id"] for d in listed["deliveries"]] == [failed.id]
    receiver.answer = lambda message: 200
    retried = client.post(f"/api/v1/webhooks/deliveries/{failed.id}/retry")
    assert retried.status_code == 202 and retried.get_json()["status"] == "pending"
    (delivered,) = settle(service, job["id"], DELIVERED)
    assert receiver.wait_for(5)[-1].id == failed.id == delivered.id
    again = client.post(f"/api/v1/webhooks/deliveries/{failed.id}/retry")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "not_failed"
    assert client.post("/api/v1/webhooks/deliveries/msg_nope/retry").status_code == 404


def test_attempts_and_last_answer_show_on_the_job_and_in_status(hooks, receiver):
    service, client = hooks
    job = submit(client, webhook=receiver.url)
    settle(service, job["id"], DELIVERED)
    document = client.get(f"/api/v1/jobs/{job['id']}")
    (delivery,) = document.get_json()["webhook"]["deliveries"]
    assert delivery["attempts"] == 1 and delivery["last_status"] == 204
    assert client.get("/status").get_json()["generation_service"]["webhooks"] == {
        "pending": 0,
        "delivered": 1,
        "failed": 0,
    }
    counted = 'generation_webhook_attempts_total{event="completed",outcome="delivered"} 1.0'
    deadline = time.monotonic() + 5  # counted just after the outcome is recorded
    while counted not in (metrics := client.get("/metrics").get_data(as_text=True)):
        assert time.monotonic() < deadline, "the attempt was not counted"
        time.sleep(0.02)
    assert 'generation_webhook_deliveries{status="delivered"} 1.0' in metrics


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hooks", "loopback"),
        ("https://[::1]/hooks", "loopback"),
        ("https://10.1.2.3/hooks", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://localhost/hooks", "loopback"),
        ("http://example.com/hooks", "WEBHOOK_ALLOW_HTTP"),
        ("https://user:pw@example.com/hooks", "credentials"),
    ],
)
def test_unsafe_targets_are_refused_at_submit(client, url, reason):
    response = client.post("/api/v1/jobs", json={"generator": "noop", "params": {}, "webhook": url})
    assert response.status_code == 422
    assert reason in response.get_json()["error"]["fields"]["webhook"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"webhook": 7}, "webhook"),
        ({"webhook": "https://example.com/h", "webhook_events": ["done"]}, "webhook_events"),
        ({"webhook": "https://example.com/h", "webhook_events": []}, "webhook_events"),
        ({"webhook": "https://example.com/h", "webhook_events": "completed"}, "webhook_events"),
        ({"webhook_events": ["completed"]}, "webhook_events"),
    ],
)
def test_malformed_webhook_fields_are_field_errors(hooks, body, field):
    _, client = hooks
    for query in ("", "?dry_run=true"):  # a dry run validates as the submit does
        response = client.post(
            "/api/v1/jobs" + query, json={"generator": "noop", "params": {}} | body
        )
        assert response.status_code == 422, response.get_json()
        assert field in response.get_json()["error"]["fields"]


def test_open_mode_without_a_signing_secret_says_how_to_get_one(make_service, config, receiver):
    service = make_service(webhooks=dataclasses.replace(LOOPBACK, open_secrets=()))
    service.start()
    client = create_app(config, service=service).test_client()
    response = client.post(
        "/api/v1/jobs", json={"generator": "noop", "params": {}, "webhook": receiver.url}
    )
    assert response.status_code == 422
    assert "WEBHOOK_SECRET" in response.get_json()["error"]["fields"]["webhook"]


def test_a_redirect_is_not_followed(hooks, receiver):
    service, client = hooks
    with receiving() as elsewhere:
        receiver.answer = lambda message: (302, {"Location": elsewhere.url})
        job = submit(client, webhook=receiver.url)
        deadline = time.monotonic() + 10
        while not (found := deliveries(service, job["id"])) or found[0].attempts < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "redirect not followed" in found[0].last_error
        assert elsewhere.messages == []


def test_the_target_is_checked_again_when_sending(hooks, receiver):
    service, client = hooks
    job = submit(client, generator="gate", webhook=receiver.url)
    # Between the submit and the delivery the rules (as a DNS answer could) change.
    service.webhooks.settings = dataclasses.replace(LOOPBACK, allow_private=False)
    service.generators.get("gate").release()
    deadline = time.monotonic() + 10
    while not (found := deliveries(service, job["id"])) or found[0].attempts < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert found[0].last_error.startswith("not sent:") and "loopback" in found[0].last_error
    assert receiver.messages == []


def test_a_receiver_that_never_answers_delays_no_job_and_no_other_receiver(
    make_service, config, receiver
):
    settings = dataclasses.replace(LOOPBACK, concurrency=2, per_host=1, read_timeout=5.0)
    service = make_service(webhooks=settings, workers=2)
    service.start()
    app = create_app(config, service=service)
    client = app.test_client()
    receiver.hang = True
    stuck = [submit(client, webhook=receiver.url) for _ in range(20)]
    receiver.wait_for(1)  # one attempt hangs, holding the host's only slot
    for job in stuck:  # a backlog of the hung host's deliveries is due behind it
        wait_for(service, job["id"])
    started = time.monotonic()
    with receiving(host="127.0.0.2") as other:
        quick = submit(client, webhook=other.url)
        other.wait_for(1, timeout=2)
    for job in [*stuck, quick]:
        assert wait_for(service, job["id"], timeout=2).status is JobStatus.SUCCEEDED
    assert client.get("/api/v1/jobs").status_code == 200
    assert time.monotonic() - started < 2
    assert len(receiver.messages) == 1, "the host's one slot is taken: the rest wait"
    receiver.release()


@pytest.fixture
def keyed_hooks(make_service, config, clock) -> tuple[GenerationService, FlaskClient]:
    service = make_service(webhooks=LOOPBACK, clock=clock)
    service.start()
    keyed = dataclasses.replace(
        config, auth_mode="keys", secret_key=TEST_SECRET_KEY, rate_limit="1000/second"
    )
    app = create_app(keyed, service=service)
    app.config["TESTING"] = True
    return service, app.test_client()


def key_headers(service: GenerationService, name: str, **options: object) -> dict[str, str]:
    _, key = service.keys.create(name, Tier.PREMIUM, **options)
    return {"Authorization": f"Bearer {key}"}


def test_deliveries_are_listed_and_redriven_by_their_owner_only(keyed_hooks, receiver):
    service, client = keyed_hooks
    alice, bob = key_headers(service, "alice"), key_headers(service, "bob")
    receiver.answer = lambda message: 500
    # One attempt only: this service's clock is a test's, which retries would wait for.
    service.webhooks.settings = dataclasses.replace(LOOPBACK, retry_delays=())
    body = {"generator": "noop", "params": {}, "webhook": receiver.url}
    job = client.post("/api/v1/jobs", json=body, headers=alice).get_json()
    (failed,) = settle(service, job["id"], FAILED)
    mine = client.get("/api/v1/webhooks/deliveries?status=failed", headers=alice).get_json()
    assert [d["id"] for d in mine["deliveries"]] == [failed.id]
    theirs = client.get("/api/v1/webhooks/deliveries", headers=bob).get_json()
    assert theirs == {"deliveries": [], "next_cursor": None}
    retry = f"/api/v1/webhooks/deliveries/{failed.id}/retry"
    assert client.post(retry, headers=bob).status_code == 404
    assert client.get("/api/v1/webhooks/deliveries").status_code == 401
    bad = client.get("/api/v1/webhooks/deliveries?status=lost", headers=alice)
    assert bad.status_code == 400 and "status" in bad.get_json()["error"]["fields"]


def test_a_key_signs_with_its_own_secret_and_both_sign_during_a_rotation(
    keyed_hooks, receiver, clock
):
    service, client = keyed_hooks
    headers = key_headers(service, "alice", webhook_url=receiver.url)
    key_id = service.keys.all()[0].key_id
    (old,) = service.keys.webhook_secrets(key_id)
    body = {"generator": "noop", "params": {}}
    first = client.post("/api/v1/jobs", json=body, headers=headers)
    assert first.status_code == 202, first.get_json()
    assert first.get_json()["webhook"]["url"] == receiver.url  # the key's default target
    receiver.wait_for(1)[0].verified(old)
    new = service.keys.rotate_webhook_secret(key_id, overlap=timedelta(hours=1))
    client.post("/api/v1/jobs", json=body, headers=headers)
    during = receiver.wait_for(2)[1]
    assert during.verified(old) and during.verified(new)
    with pytest.raises(WebhookVerificationError):
        during.verified(SECRET)
    clock.advance(hours=2)
    assert service.keys.webhook_secrets(key_id) == [new]


def test_ended_deliveries_go_with_result_retention_and_pending_ones_stay(
    make_service, config, clock, receiver
):
    settings = dataclasses.replace(LOOPBACK, retry_delays=(3600.0,))
    service = make_service(webhooks=settings, clock=clock, result_ttl=timedelta(hours=1))
    service.start()
    delivered = service.submit("noop", {}, webhook=receiver.url)
    waiting = service.submit("noop", {}, webhook=f"http://127.0.0.1:{free_port()}/down")
    settle(service, delivered.id, DELIVERED)
    deadline = time.monotonic() + 10
    while not (found := deliveries(service, waiting.id)) or found[0].attempts < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    clock.advance(hours=2)
    service.sweeper.sweep()
    assert deliveries(service, delivered.id) == []
    assert [d.status for d in deliveries(service, waiting.id)] == [PENDING]
