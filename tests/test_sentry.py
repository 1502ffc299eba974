"""Sentry: envelopes from requests and from failing jobs reach a loopback ingest."""

import dataclasses
import time

import pytest
import sentry_sdk

from app import create_app
from app.sentry import init_sentry

from .conftest import wait_for
from .sentry_sink import PROJECT, EnvelopeSink

SECRET_PROMPT = "my very private prompt"


@pytest.fixture
def sink():
    sink = EnvelopeSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def sentry_app(config, service, sink):
    config = dataclasses.replace(
        config,
        sentry_dsn=sink.dsn,
        sentry_environment="test",
        sentry_release="gs@1.2.3",
        sentry_traces_sample_rate=1.0,
    )
    app = create_app(config, service=service)
    yield app
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


def flushed(sink):
    sentry_sdk.flush(timeout=5)
    assert sink.paths and set(sink.paths) == {f"/api/{PROJECT}/envelope/"}
    return sink


def test_without_a_dsn_sentry_stays_off(config, service):
    assert init_sentry(config, service) is False
    assert not sentry_sdk.get_client().is_active()


def test_a_request_is_traced_but_not_health_checks_and_scrapes(sentry_app, sink):
    client = sentry_app.test_client()
    for probe in ("/health", "/ready", "/metrics"):
        client.get(probe)
    client.get("/status")
    (transaction,) = flushed(sink).items("transaction")
    assert transaction["transaction"] == "/status"
    assert transaction["contexts"]["trace"]["op"] == "http.server"
    assert (transaction["environment"], transaction["release"]) == ("test", "gs@1.2.3")


def test_an_unexpected_error_in_a_request_is_reported_without_personal_data(sentry_app, sink):
    def explode():
        raise RuntimeError("view exploded")

    sentry_app.add_url_rule("/explode", "explode", explode, methods=["POST"])
    response = sentry_app.test_client().post(
        "/explode", json={"prompt": SECRET_PROMPT}, headers={"Cookie": "session=abc"}
    )
    assert response.status_code == 500
    (event,) = flushed(sink).items("event")
    assert event["exception"]["values"][-1]["value"] == "view exploded"
    assert event["request"]["url"].endswith("/explode")
    assert "data" not in event["request"] and "cookies" not in event["request"]
    assert "ip_address" not in event.get("user", {})
    assert all(SECRET_PROMPT.encode() not in body for body in sink.raw)


def test_a_failing_job_is_reported_with_its_tags_in_its_own_transaction(sentry_app, service, sink):
    job = service.submit("fail", {"prompt": SECRET_PROMPT})
    wait_for(service, job.id)
    flushed(sink)
    for _ in range(100):  # the run's transaction closes just after the row is written
        if sink.items("transaction"):
            break
        sentry_sdk.flush(timeout=0.1)
    (event,) = sink.items("event")
    (transaction,) = sink.items("transaction")
    expected_tags = {
        "job.id": job.id,
        "job.generator": "fail",
        "job.priority": "normal",
        "job.attempt": "1",
    }
    assert expected_tags.items() <= event["tags"].items()
    assert event["exception"]["values"][-1]["value"] == "the model exploded"
    assert event["contexts"]["trace"]["trace_id"] == transaction["contexts"]["trace"]["trace_id"]
    assert transaction["transaction"] == "generate fail"
    assert transaction["contexts"]["trace"]["op"] == "queue.process"
    assert transaction["contexts"]["trace"]["status"] == "internal_error"
    assert expected_tags.items() <= transaction["tags"].items()
    assert all(SECRET_PROMPT.encode() not in body for body in sink.raw)


def test_jobs_do_not_share_tags(sentry_app, service, sink):
    first = service.submit("fail", {})
    second = service.submit("fail", {})
    wait_for(service, first.id)
    wait_for(service, second.id)
    events = flushed(sink).items("event")
    assert sorted(event["tags"]["job.id"] for event in events) == sorted([first.id, second.id])


def test_failed_webhook_attempts_leave_breadcrumbs_on_the_dead_letter_event(
    sentry_app, service, sink
):
    from app.generation.notify.signing import new_secret
    from app.generation.settings import WebhookSettings

    from .webhook_receiver import receiving

    service.webhooks.settings = WebhookSettings(
        allow_http=True,
        allow_private=True,
        open_secrets=(new_secret(),),
        retry_delays=(0.1,),
        poll_interval=0.1,
    )
    with receiving() as receiver:
        receiver.answer = lambda message: 503
        job = service.submit("noop", {}, webhook=receiver.url)
        receiver.wait_for(2)
        for _ in range(100):
            if flushed(sink).items("event"):
                break
            time.sleep(0.05)
    (event,) = sink.items("event")
    assert event["level"] == "warning" and event["tags"]["job.id"] == job.id
    assert "failed after 2 attempts" in event["message"]
    crumbs = [c for c in event["breadcrumbs"]["values"] if c["category"] == "webhook"]
    assert [c["message"].split(": ", 1)[1] for c in crumbs] == ["HTTP 503: ok"] * 2
    assert len(event["breadcrumbs"]["values"]) == 2, "no one else's breadcrumbs"
    assert all("whsec_" not in body.decode(errors="replace") for body in sink.raw)
