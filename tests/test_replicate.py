"""The `replicate` generator against a loopback server speaking the predictions protocol."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
import zipfile
from collections.abc import Iterator
from http import HTTPStatus

import pytest

from app.generation import JobStatus
from app.generation.generators import GeneratorRegistry
from app.generation.generators.replicate import ReplicateGenerator
from app.generation.generators.replicate_api import RetryPolicy

from .conftest import wait_for
from .fake_replicate import FakeClock, FakeReplicate

ATTEMPTS = 3
READ_TIMEOUT = 0.3
WAIT = 1  # Prefer: wait, which lengthens the create call's read timeout by as much
TQDM = " 50%|█████     | 5/10 [00:02<00:02,  2.00it/s]"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> Iterator[FakeReplicate]:
    server = FakeReplicate(clock).start()
    yield server
    server.stop()


@pytest.fixture
def registry(fake: FakeReplicate, clock: FakeClock) -> GeneratorRegistry:
    generator = ReplicateGenerator(
        fake.token,
        fake.base_url,
        timeout_seconds=READ_TIMEOUT,
        connect_timeout_seconds=READ_TIMEOUT,
        poll_seconds=0.5,
        wait_seconds=WAIT,
        max_seconds=60,
        retry=RetryPolicy(attempts=ATTEMPTS, backoff_seconds=1.0, max_delay_seconds=30),
        sleep=clock.sleep,
        clock=clock.now,
    )
    return GeneratorRegistry([generator])


def run_job(service, params: dict) -> object:
    return wait_for(service, service.submit("replicate", params).id)


def zip_of(service, job) -> zipfile.ZipFile:
    with service.results.open(job.id, job.lease_epoch) as stream:
        return zipfile.ZipFile(io.BytesIO(stream.read()))


def test_success_with_several_outputs_stores_every_file(service, fake):
    fake.files.update({"a.png": b"\x89PNG first", "b.webp": b"RIFF second"})
    fake.then(status="processing", logs="loading weights\n" + TQDM)
    fake.then(
        status="succeeded",
        logs=TQDM + "\n100%|██████████| 10/10",
        output=[f"{fake.root}/files/a.png", f"{fake.root}/files/b.webp"],
        metrics={"predict_time": 4.2},
    )
    job = run_job(service, {"model": "acme/painter", "input": {"prompt": "a fox"}})

    assert job.status is JobStatus.SUCCEEDED, job.error
    archive = zip_of(service, job)
    assert archive.read("output-01.png") == b"\x89PNG first"
    assert archive.read("output-02.webp") == b"RIFF second"
    summary = json.loads(archive.read("prediction.json"))
    assert (summary["id"], summary["status"], summary["metrics"]) == (
        "p1",
        "succeeded",
        {"predict_time": 4.2},
    )
    [create] = fake.seen("create")
    assert create.path == "/v1/models/acme/painter/predictions"
    assert create.body == {"input": {"prompt": "a fox"}}
    assert create.headers["Authorization"] == f"Bearer {fake.token}"
    assert create.headers["Prefer"] == f"wait={WAIT}"
    assert all("Authorization" not in r.headers for r in fake.seen("file"))
    progress = [e.data for e in service.bus.history(job.id) if e.type == "progress"]
    processing = next(p for p in progress if p["stage"] == "processing")
    assert (processing["percent"], processing["step"], processing["total"]) == (45.0, 5, 10)
    assert processing["message"] == TQDM.strip()
    assert progress[-1]["percent"] == 100


def test_a_version_and_data_uri_outputs_are_supported(service, fake):
    png = b"\x89PNG inline"
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    fake.then(status="succeeded", output=uri)
    job = run_job(
        service, {"version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"}
    )
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert zip_of(service, job).read("output-01.png") == png
    [create] = fake.seen("create")
    assert create.path == "/v1/predictions"
    assert create.body["version"].startswith("5c7d5dc6")


def test_429_then_success_honours_retry_after(service, fake):
    fake.fail("create", status=429, headers={"Retry-After": "7"})
    fake.then(status="succeeded", output="plain text, no files")
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.SUCCEEDED, job.error
    first, second = fake.seen("create")
    assert second.at - first.at >= 7
    assert zip_of(service, job).namelist() == ["prediction.json", "manifest.json"]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_until_giving_up_fails_the_job_and_cancels_the_prediction(service, fake, status):
    fake.fail("get", times=10, status=status)
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.FAILED
    phrase = HTTPStatus(status).phrase
    assert job.error == f"provider answered {status} {phrase}: injected {status}"
    assert len(fake.seen("get")) == ATTEMPTS
    gets = fake.seen("get")
    assert gets[1].at - gets[0].at >= 1.0 and gets[2].at - gets[1].at >= 2.0  # backoff
    assert [r.path for r in fake.seen("cancel")] == ["/v1/predictions/p1/cancel"]


def test_a_failed_prediction_surfaces_the_provider_error(service, fake):
    fake.then(status="processing").then(status="failed", error="CUDA out of memory")
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.FAILED
    assert job.error == "prediction p1 failed: CUDA out of memory"
    assert fake.seen("cancel") == []  # it has ended: nothing to cancel


def test_a_4xx_surfaces_the_provider_detail_without_retrying(service, fake):
    body = json.dumps({"title": "Invalid input", "detail": "prompt is required"}).encode()
    fake.fail("create", status=422, body=body)
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.FAILED
    assert job.error == "provider answered 422 Unprocessable Entity: prompt is required"
    assert len(fake.seen("create")) == 1


def test_a_rejected_token_fails_the_job_and_is_never_logged(service, fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.fail("get", times=ATTEMPTS, status=500)
    run_job(service, {"model": "acme/painter"})
    fake.token = "r8_the-server-now-expects-another-token"
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.FAILED
    assert job.error == "provider answered 401 Unauthorized: Invalid token."
    assert caplog.records, "the runs above log their retries and failures"
    assert "r8_test-secret" not in caplog.text
    assert all("r8_test-secret" not in (j.error or "") for j in service.list())


@pytest.mark.parametrize(
    ("route", "body", "expected"),
    [
        ("create", b"<html>bad gateway page</html>", "not JSON"),
        ("create", b'{"detail": "no id here"}', "not a prediction"),
        ("get", b'["a", "list"]', "not a prediction"),
        ("get", b'{"id": "p1", "status": "exploding"}', "status 'exploding'"),
    ],
)
def test_malformed_answers_fail_the_job(service, fake, route, body, expected):
    fake.fail(route, status=200, body=body)
    fake.then(status="processing")
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.FAILED
    assert job.error.startswith("malformed answer from the provider") and expected in job.error


def test_a_malformed_data_uri_fails_the_job(service, fake):
    fake.then(status="succeeded", output=["data:image/png;base64,%%%not-base64"])
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.FAILED
    assert "bad base64" in job.error


def test_a_slow_create_times_out_and_is_not_repeated(service, fake):
    fake.fail("create", delay=READ_TIMEOUT + WAIT + 0.5)
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.FAILED
    assert "did not answer in time" in job.error and "not retried" in job.error
    assert len(fake.seen("create")) == 1  # a second prediction could have been billed


def test_a_slow_poll_times_out_and_is_retried(service, fake):
    fake.fail("get", delay=READ_TIMEOUT * 3)
    fake.then(status="succeeded", output=None)
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert len(fake.seen("get")) == 2


def test_polls_that_time_out_every_time_fail_the_job(service, fake):
    fake.fail("get", times=ATTEMPTS, delay=READ_TIMEOUT * 3)
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.FAILED
    assert job.error.startswith("provider did not answer in time for GET")


def test_a_dropped_connection_is_retried(service, fake):
    fake.fail("get", drop=True)
    fake.fail("file", drop=True)
    fake.files["x.png"] = b"png"
    fake.then(status="succeeded", output=[f"{fake.root}/files/x.png"])
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert zip_of(service, job).read("output-01.png") == b"png"


def test_cancelling_the_job_cancels_the_prediction(service, fake):
    for _ in range(10_000):
        fake.then(status="processing", logs=TQDM)
    job = service.submit("replicate", {"model": "acme/painter"})
    wait_for(service, job.id, {JobStatus.RUNNING})
    while not fake.seen("get"):
        time.sleep(0.005)
    service.cancel(job.id)
    assert wait_for(service, job.id).status is JobStatus.CANCELLED
    [cancel] = fake.seen("cancel")
    assert cancel.path == "/v1/predictions/p1/cancel"
    assert cancel.headers["Authorization"] == f"Bearer {fake.token}"


def test_a_prediction_past_the_deadline_is_cancelled(service, fake):
    for _ in range(10_000):
        fake.then(status="processing")
    job = run_job(service, {"model": "acme/painter"})
    assert job.status is JobStatus.FAILED
    assert job.error == "prediction p1 did not finish within 60s; cancelled it"
    assert len(fake.seen("cancel")) == 1


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({}, {"model"}),
        ({"model": "a/b", "version": "v"}, {"model"}),
        ({"model": "no-slash"}, {"model"}),
        ({"model": "../../etc"}, {"model"}),
        ({"version": "has space"}, {"version"}),
        ({"model": "a/b", "input": ["not", "an", "object"]}, {"input"}),
        ({"model": "a/b", "webhook": "https://evil.example"}, {"webhook"}),
    ],
)
def test_params_are_validated(registry, params, fields):
    clean, errors = registry.get("replicate").validate(params)
    assert set(errors) == fields


def test_valid_params_are_normalised(registry):
    clean, errors = registry.get("replicate").validate({"model": "acme/painter"})
    assert (clean, errors) == ({"model": "acme/painter", "input": {}}, {})


def test_the_token_is_not_in_the_generators_repr(registry, fake):
    assert fake.token not in repr(registry.get("replicate"))


def test_a_streaming_models_outputs_become_previews_before_it_finishes(service, fake):
    fake.files.update({"a.png": b"\x89PNG first", "b.png": b"\x89PNG second"})
    first, second = f"{fake.root}/files/a.png", f"{fake.root}/files/b.png"
    fake.then(status="processing", output=[first])
    fake.then(status="processing", output=[first, second])
    fake.then(status="succeeded", output=[first, second])
    job = run_job(service, {"model": "acme/streamer", "input": {}})

    assert job.status is JobStatus.SUCCEEDED, job.error
    previews = [e.data for e in service.bus.history(job.id) if e.type == "preview"]
    assert previews and all(p["content_type"] == "image/png" for p in previews)
    assert "preview" not in zip_of(service, job).namelist()
    with pytest.raises(FileNotFoundError):  # gone with the run
        service.results.files.open_preview(job.id, job.lease_epoch)
