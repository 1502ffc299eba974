"""Logs: one JSON object per line, with the request id and job id where they apply."""

import io
import json
import logging
import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest

from app.access_log import access_fields
from app.logs import ContextFilter, json_formatter

from .conftest import wait_for


@pytest.fixture
def log_lines():
    """Records of the whole process as parsed JSON lines, as the entry points log them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)


def test_configured_entry_points_write_json_lines_to_stdout(tmp_path):
    script = (
        "import logging\n"
        "from app.logs import configure_logging\n"
        "configure_logging('INFO')\n"
        "logging.getLogger('gunicorn.error').info('from %s', 'gunicorn')\n"
        "logging.getLogger('app.x').warning('multi\\nline', extra={'job_id': 'j1'})\n"
        "logging.getLogger('app.x').debug('hidden')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd="."
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line["logger"], line["level"], line["message"]) for line in lines] == [
        ("gunicorn.error", "INFO", "from gunicorn"),
        ("app.x", "WARNING", "multi\nline"),
    ]
    assert lines[1]["job_id"] == "j1" and "time" in lines[1] and "thread" in lines[1]
    assert done.stderr == ""


def test_request_logs_carry_the_request_id_it_answers_with(app, client, log_lines):
    app.add_url_rule("/hello", "hello", lambda: logging.getLogger("app.test").info("hi") or "ok")
    response = client.get("/hello")
    (line,) = [line for line in log_lines() if line["message"] == "hi"]
    assert line["request_id"] == response.headers["X-Request-Id"]
    assert len(line["request_id"]) == 32


def test_request_id_comes_from_fly_when_given_and_is_checked(client):
    assert (
        client.get("/health", headers={"Fly-Request-Id": "01J-abc"}).headers["X-Request-Id"]
        == "01J-abc"
    )
    forged = client.get("/health", headers={"X-Request-Id": "<script> id"})
    assert forged.headers["X-Request-Id"] != "<script> id"


def test_no_request_id_is_left_behind_for_the_next_log_line(client, log_lines):
    client.get("/health")
    logging.getLogger("app.test").info("after the request")
    (line,) = [line for line in log_lines() if line["message"] == "after the request"]
    assert "request_id" not in line


def test_job_logs_carry_the_job_id(app, service, log_lines):
    job = service.submit("fail", {})
    wait_for(service, job.id)
    failures = [line for line in log_lines() if line["logger"] == "app.generation.execution.runner"]
    assert failures and failures[0]["job_id"] == job.id
    assert "RuntimeError: the model exploded" in failures[0]["exc_info"]


def test_access_log_fields_use_flys_client_ip_header():
    response = SimpleNamespace(status="202 ACCEPTED", headers=[("X-Request-Id", "r1")], sent=120)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/jobs",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "172.16.0.2",
        "HTTP_FLY_CLIENT_IP": "203.0.113.9",
        "HTTP_USER_AGENT": "curl/8",
    }
    fields = access_fields(response, environ, timedelta(milliseconds=12.34))
    assert fields == {
        "method": "POST",
        "path": "/api/v1/jobs",
        "query": None,
        "status": 202,
        "bytes": 120,
        "duration_ms": 12.3,
        "client_ip": "203.0.113.9",
        "user_agent": "curl/8",
        "request_id": "r1",
    }
    del environ["HTTP_FLY_CLIENT_IP"]
    assert access_fields(response, environ, timedelta(0))["client_ip"] == "172.16.0.2"


def test_error_answers_and_their_logs_carry_the_request_id(app, client, log_lines):
    def boom():
        raise RuntimeError("a bug")

    app.add_url_rule("/boom", "boom", boom)
    response = client.get("/boom")
    assert response.status_code == 500 and response.json["error"]["code"] == "internal_error"
    (line,) = [line for line in log_lines() if line["message"] == "unhandled error"]
    assert line["request_id"] == response.headers["X-Request-Id"]
    missing = client.get("/no/such/route")
    assert missing.status_code == 404 and len(missing.headers["X-Request-Id"]) == 32
    assert missing.headers.getlist("X-Request-Id") == [missing.headers["X-Request-Id"]]


def test_flys_request_id_comes_first_and_a_bad_one_is_replaced_not_skipped(client):
    both = {"Fly-Request-Id": "fly-1", "X-Request-Id": "mine-1"}
    assert client.get("/health", headers=both).headers["X-Request-Id"] == "fly-1"
    bad_fly = {"Fly-Request-Id": "bad id", "X-Request-Id": "mine-1"}
    made_up = client.get("/health", headers=bad_fly).headers["X-Request-Id"]
    assert made_up not in ("bad id", "mine-1") and len(made_up) == 32
    assert client.get("/health", headers={"X-Request-Id": "mine-1"}).headers["X-Request-Id"] == (
        "mine-1"
    )


def test_the_access_log_keeps_no_signed_links_signature():
    response = SimpleNamespace(status="200 OK", headers=[], sent=10)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/v1/jobs/x/files/a.png",
        "QUERY_STRING": "expires=1796417396&signature=BrYn9TQsWiS6N1r7QJI",
    }
    fields = access_fields(response, environ, timedelta(0))
    assert fields["query"] == "expires=1796417396&signature=[redacted]"


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        ("token=eyJrZXkiOiIxMjMifQ.Z3.sig", "token=[redacted]"),
        ("since=4&token=abc", "since=4&token=[redacted]"),
        ("%74oken=abc&TOKEN=def&x=1", "%74oken=[redacted]&TOKEN=[redacted]&x=1"),
        ("api_key=gsk_x_y&limit=20", "api_key=[redacted]&limit=20"),
        ("tokens=1&token", "tokens=1&token"),  # other names, and a name without a value
        ("status=queued,running&cursor=cGs6MTI", "status=queued,running&cursor=cGs6MTI"),
    ],
)
def test_the_access_log_never_shows_a_credential_in_a_query(query, logged):
    response = SimpleNamespace(status="101 Switching Protocols", headers=[], sent=0)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/v1/events", "QUERY_STRING": query}
    assert access_fields(response, environ, timedelta(0))["query"] == logged
