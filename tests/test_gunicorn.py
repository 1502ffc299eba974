"""Drain and logs under a real gunicorn, configured as the container runs it."""

import json
import math
import signal
import time

import requests

from app.drain import longest_drain
from app.generation import JobStatus
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore

from .servers import gunicorn

DRAIN_TIMEOUT = 1
# gunicorn.conf.py's graceful_timeout for this drain: the worker is killed after it.
GRACEFUL_TIMEOUT = math.ceil(longest_drain(DRAIN_TIMEOUT)) + 5
ENV = {
    "GENERATION_WORKERS": "1",
    "WEB_THREADS": "4",
    "DRAIN_TIMEOUT_SECONDS": str(DRAIN_TIMEOUT),
    "LOG_LEVEL": "INFO",
    "SENTRY_DSN": "",
}
APP = "tests.wsgi_with_test_generators:app"


def submit(server, generator, params):
    response = requests.post(
        server.url + "/api/v1/jobs", json={"generator": generator, "params": params}, timeout=5
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_status(server, job_id, statuses, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{server.url}/api/v1/jobs/{job_id}", timeout=5).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")


def terminate(server):
    """SIGTERM, as Fly sends it; returns the exit code, failing if the drain overruns."""
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=GRACEFUL_TIMEOUT)


def log_records(server):
    """Every line the server wrote, each parsed as JSON (a line that is not fails)."""
    return [json.loads(line) for line in server.log().splitlines()]


def test_sigterm_drains_in_time_and_the_next_server_finishes_every_job(tmp_path):
    with gunicorn(tmp_path, ENV, app=APP) as first:
        long_job = submit(first, "sleep", {"seconds": DRAIN_TIMEOUT + 3})
        wait_status(first, long_job, {"running"})
        queued = [submit(first, "sleep", {"seconds": 0.05}) for _ in range(3)]
        assert terminate(first) == 0
        assert any(r["message"].startswith("drain deadline passed") for r in log_records(first))

    store = JobStore(create_database_engine(f"sqlite:///{tmp_path / 'jobs.db'}"))
    interrupted = store.get(long_job)
    assert (interrupted.status, interrupted.attempts) == (JobStatus.QUEUED, 1)
    assert [store.get(job).status for job in queued] == [JobStatus.QUEUED] * 3

    with gunicorn(tmp_path, ENV, app=APP) as second:
        for job_id in [long_job, *queued]:
            assert wait_status(second, job_id, {"succeeded", "failed"})["status"] == "succeeded"
    assert store.get(long_job).attempts == 2


def test_server_logs_are_json_lines_with_request_and_job_ids(tmp_path):
    with gunicorn(tmp_path, ENV, app=APP) as server:
        answer = requests.get(
            server.url + "/health", headers={"Fly-Client-IP": "203.0.113.7"}, timeout=5
        )
        failing = submit(server, "fail", {})
        wait_status(server, failing, {"failed"})
        assert terminate(server) == 0

    records = log_records(server)
    (access,) = [r for r in records if r["logger"] == "gunicorn.access" and r["path"] == "/health"]
    assert access["client_ip"] == "203.0.113.7"
    assert access["request_id"] == answer.headers["X-Request-Id"]
    assert (access["method"], access["status"]) == ("GET", 200)
    failure = next(r for r in records if r["logger"] == "app.generation.execution.runner")
    assert failure["job_id"] == failing and failure["level"] == "ERROR"


def test_what_gunicorn_refuses_itself_is_a_documented_json_error(tmp_path):
    """A request line or header too long never reaches the app: gunicorn answers it, and
    app/parser_errors.py makes that answer the API's JSON error, as the document says."""
    from jsonschema import Draft202012Validator

    from app.web.docs import openapi_document

    schema = openapi_document()["components"]["schemas"]["Error"]
    responses = openapi_document()["paths"]["/api/v1/jobs"]["get"]["responses"]
    with gunicorn(tmp_path, ENV, app=APP) as server:
        long_line = requests.get(server.url + "/api/v1/jobs?status=" + "q" * 5000, timeout=5)
        long_header = requests.get(
            server.url + "/api/v1/jobs", headers={"X-Long": "h" * 9000}, timeout=5
        )
    for answer, code in (
        (long_line, "uri_too_long"),
        (long_header, "request_header_fields_too_large"),
    ):
        assert str(answer.status_code) in responses
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json()["error"]["code"] == code
        Draft202012Validator(schema).validate(answer.json())
    assert (long_line.status_code, long_header.status_code) == (414, 431)
