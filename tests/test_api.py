"""HTTP API v1 through the Flask test client; every answer is checked against openapi.json."""

from __future__ import annotations

import io
import json
import zipfile

import flask
import pytest

from app.generation import JobStatus

from .conftest import hold_worker, wait_for


def submit(call, **body):
    body = {
        "generator": "images",
        "params": {"prompt": "p", "count": 1, "width": 64, "height": 64},
    } | body
    return call("POST", "/api/v1/jobs", json=body)


def test_submit_returns_202_with_position_and_eta(call, service, gate):
    hold_worker(service, gate)
    response = submit(call, priority="low", params={"prompt": "big", "width": 1024})
    assert response.status_code == 202
    job = response.get_json()
    assert (job["status"], job["position"], job["priority"]) == ("queued", 0, "low")
    assert job["eta_seconds"] > 0
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"


def test_job_runs_to_a_downloadable_zip(call, service):
    job = submit(
        call, params={"prompt": "sea", "count": 2, "width": 64, "height": 64, "seed": 3}
    ).get_json()
    wait_for(service, job["id"])
    done = call("GET", f"/api/v1/jobs/{job['id']}").get_json()
    assert done["status"] == "succeeded"
    assert done["result"]["files"] == ["image-01.png", "image-02.png"]
    response = call("GET", done["result"]["url"])
    assert response.status_code == 200
    assert response.mimetype == "application/zip"
    assert "attachment" in response.headers["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    response.close()
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["seed"] == 3 and manifest["params"]["prompt"] == "sea"
    assert [f["name"] for f in manifest["files"]] == ["image-01.png", "image-02.png"]
    assert len(response.data) == done["result"]["bytes"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"generator": "nope"}, "generator"),
        ({"generator": "images", "params": {"prompt": ""}}, "params.prompt"),
        ({"generator": "images", "params": {"prompt": "x", "count": 17}}, "params.count"),
        ({"generator": "images", "params": {"prompt": "x", "width": "big"}}, "params.width"),
        ({"generator": "images", "params": {"prompt": "x", "seed": -1}}, "params.seed"),
        ({"generator": "images", "params": {"prompt": "x", "colour": 1}}, "params.colour"),
        ({"generator": "images", "params": [], "priority": "low"}, "params"),
        ({"generator": "images", "params": {"prompt": "x"}, "priority": "urgent"}, "priority"),
        ({"generator": "images", "params": {"prompt": "x"}, "priority": 1}, "priority"),
        ({"generator": 5}, "generator"),
        ({"generator": "images", "extra": True}, "extra"),
    ],
)
def test_invalid_fields_are_422_with_fields(call, body, field):
    response = call("POST", "/api/v1/jobs", json=body)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_params" and field in error["fields"]


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b"\xff\xfe", b"NaN", b"", b"[" * 50_000])
def test_malformed_body_is_400(call, data):
    response = call("POST", "/api/v1/jobs", data=data, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "malformed_json"


def test_body_over_max_content_length_is_413(call, app):
    size = app.config["MAX_CONTENT_LENGTH"] + 1
    response = call("POST", "/api/v1/jobs", data=b"x" * size, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_full_queue_is_503_with_retry_after(call, service, gate, config):
    hold_worker(service, gate)
    for _ in range(config.generation_queue_size):
        assert submit(call).status_code == 202
    response = submit(call)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "queue_full"
    assert int(response.headers["Retry-After"]) >= 1


def test_unknown_job_is_404_everywhere(call):
    for method, url in [
        ("GET", "/api/v1/jobs/nope"),
        ("POST", "/api/v1/jobs/nope/cancel"),
        ("GET", "/api/v1/jobs/nope/result"),
    ]:
        response = call(method, url)
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"


def test_unknown_route_and_method_are_json(client):
    missing = client.get("/no/such/route")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    wrong = client.delete("/api/v1/jobs")
    assert wrong.status_code == 405 and "error" in wrong.get_json()


def test_cancel_queued_then_finished_is_409(call, service, gate):
    hold_worker(service, gate)
    job = submit(call).get_json()
    cancelled = call("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    again = call("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "already_finished"


def test_cancel_running_job_flags_it(call, service, gate):
    blocker = service.submit("gate", {})
    assert gate.started.wait(5)
    response = call("POST", f"/api/v1/jobs/{blocker.id}/cancel")
    assert response.status_code == 200
    assert response.get_json()["cancel_requested"] is True
    assert wait_for(service, blocker.id).status is JobStatus.CANCELLED


def test_result_not_ready_is_409_then_no_result_after_cancel(call, service, gate):
    hold_worker(service, gate)
    job = submit(call).get_json()
    not_ready = call("GET", f"/api/v1/jobs/{job['id']}/result")
    assert not_ready.status_code == 409
    assert not_ready.get_json()["error"]["code"] == "not_ready"
    call("POST", f"/api/v1/jobs/{job['id']}/cancel")
    no_result = call("GET", f"/api/v1/jobs/{job['id']}/result")
    assert no_result.get_json()["error"]["code"] == "no_result"


def test_missing_result_file_is_410(call, service):
    job = submit(call).get_json()
    done = wait_for(service, job["id"])
    service.results.delete(done.id, done.lease_epoch)
    response = call("GET", f"/api/v1/jobs/{job['id']}/result")
    assert response.status_code == 410


def test_list_pages_with_cursor_and_filters_by_status(call, service):
    ids = [submit(call).get_json()["id"] for _ in range(3)]
    for job_id in ids:
        wait_for(service, job_id)
    first = call("GET", "/api/v1/jobs?limit=2").get_json()
    assert [j["id"] for j in first["jobs"]] == ids[:0:-1]
    second = call("GET", f"/api/v1/jobs?limit=2&cursor={first['next_cursor']}").get_json()
    assert [j["id"] for j in second["jobs"]] == ids[:1]
    assert second["next_cursor"] is None
    succeeded = call("GET", "/api/v1/jobs?status=succeeded,failed").get_json()
    assert len(succeeded["jobs"]) == 3
    assert call("GET", "/api/v1/jobs?status=queued").get_json()["jobs"] == []


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "limit=abc", "status=done", "cursor=%%%", "cursor=eDox"]
)
def test_bad_list_query_is_400(call, query):
    response = call("GET", f"/api/v1/jobs?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_query"


def test_health_ready_and_status(call, service, gate):
    assert call("GET", "/health").get_json() == {"status": "ok"}
    assert call("GET", "/ready").status_code == 200
    hold_worker(service, gate)
    submit(call, priority="low")
    status = call("GET", "/status").get_json()
    generation = status["generation_service"]
    assert generation["queued_by_priority"]["low"] == 1
    assert generation["active_workers"] == 1 and generation["queue_capacity"] == 10
    assert status["concurrent_requests"] >= 1


def test_ready_is_503_when_service_stops(call, service):
    service.shutdown(wait=False)
    response = call("GET", "/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"]["service"] != "ok"
    assert submit(call).status_code == 503


def test_ready_is_503_when_database_is_unreachable(call, service, monkeypatch):
    def unreachable():
        from sqlalchemy.exc import OperationalError

        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(service.store, "ping", unreachable)
    response = call("GET", "/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "unreachable"


def test_generators_are_listed_by_name_with_their_params_schema(call):
    listed = call("GET", "/api/v1/generators").get_json()["generators"]
    names = [generator["name"] for generator in listed]
    assert names == sorted(names) and "images" in names
    images = listed[names.index("images")]
    assert images["cpu_bound"] is True
    assert images["params_schema"]["properties"]["count"]["maximum"] == 16


def test_every_route_is_documented(app):
    from app.web.docs import openapi_document

    from .openapi_check import spec_path

    paths = openapi_document()["paths"]
    for rule in app.url_map.iter_rules():
        if rule.endpoint.endswith("static"):
            continue
        template = spec_path(rule.rule)
        assert template in paths, f"{template} missing from openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[template], f"{method} {template} undocumented"


def test_openapi_document_is_valid_and_served(call):
    from openapi_spec_validator import validate

    document = call("GET", "/openapi.json").get_json()
    validate(document)  # raises on an invalid document
    assert document["openapi"].startswith("3.1")


@pytest.mark.parametrize("path", ["/api/v1/jobs/%2F/result", "/api/v1/jobs//result"])
def test_empty_path_segments_are_json_404_not_redirects(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_no_cookie_session_is_read_or_written(app, client):
    def touch_session():
        assert dict(flask.session) == {}
        with pytest.raises(RuntimeError):
            flask.session["visited"] = True
        return "ok"

    app.add_url_rule("/touch", "touch", touch_session)
    client.set_cookie("session", "eyJ2aXNpdGVkIjp0cnVlfQ.forged")
    response = client.get("/touch")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers and "Vary" not in response.headers


@pytest.mark.parametrize("query", ["limit=", "status=", "cursor=", "limit=&cursor=", "status=,"])
def test_a_list_parameter_given_empty_is_refused_not_ignored(call, query):
    """Issue #21, case 5: `limit` must be 1..100 and a given `status` or `cursor` must be
    one; an empty value is neither (leave the parameter out for the default)."""
    refused = call("GET", f"/api/v1/jobs?{query}")
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "invalid_query"
    assert call("GET", "/api/v1/jobs").status_code == 200


@pytest.mark.parametrize("key", ["", "\t", "k" * 256, "clé"])
def test_a_dry_run_checks_the_idempotency_key_as_a_submit_does(call, key):
    """Issue #21, case 4: one validation path for dry runs and submits."""
    body = {"generator": "noop", "params": {}}
    headers = {"Idempotency-Key": key.encode("utf-8").decode("latin-1")}
    submit = call("POST", "/api/v1/jobs", json=body, headers=headers)
    dry = call("POST", "/api/v1/jobs?dry_run=true", json=body, headers=headers)
    assert submit.status_code == dry.status_code == 400
    assert submit.get_json()["error"]["code"] == dry.get_json()["error"]["code"] == "invalid_header"


@pytest.mark.parametrize(
    "path", ["/api/v1/events", f"/api/v1/jobs/{'0' * 32}/events", "/api/v1/admin/stream"]
)
def test_a_websocket_route_asked_over_plain_http_answers_its_documented_400(client, path):
    """Issue #21, case 1: the document lists what these routes answer without a handshake."""
    from app.web.docs import openapi_document

    from .openapi_check import spec_path

    answer = client.get(path)
    assert answer.status_code == 400
    assert "WebSocket handshake" in answer.get_json()["error"]["message"]
    template = spec_path(path.replace("0" * 32, "<job_id>"))
    assert "400" in openapi_document()["paths"][template]["get"]["responses"]


@pytest.mark.parametrize(
    "status", ["queued", "queued,running", " succeeded , failed ", "", "queued,", "QUEUED", "x"]
)
def test_the_documented_status_pattern_is_what_the_list_route_accepts(call, status):
    """Issue #21, case 2: `status` is not a free string; the document says which."""
    import re

    from app.web.docs import openapi_document

    (schema,) = [
        p["schema"]
        for p in openapi_document()["paths"]["/api/v1/jobs"]["get"]["parameters"]
        if p["name"] == "status"
    ]
    answer = call("GET", "/api/v1/jobs", query_string={"status": status})
    assert (answer.status_code == 200) == bool(re.search(schema["pattern"], status))


def test_the_submit_schema_is_a_oneof_over_the_generators_this_server_runs(app, call):
    """Issue #21, case 3: each generator's params_schema() is in the request schema, so
    `{"generator": "images", "params": {}}` is invalid by the document as by the server."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    from app.wiring import get_service

    document = call("GET", "/openapi.json").get_json()
    request = document["components"]["schemas"]["JobRequest"]
    names = sorted(generator.name for generator in get_service(app).generators)
    assert sorted(request["discriminator"]["mapping"]) == names
    images = document["components"]["schemas"]["ImagesJobRequest"]
    assert images["properties"]["params"]["required"] == ["prompt"]
    assert "params" in images["required"]

    registry = Registry().with_resource("urn:doc", Resource.from_contents(document, DRAFT202012))
    validator = Draft202012Validator(
        {"$ref": "urn:doc#/components/schemas/JobRequest"}, registry=registry
    )
    for body in (
        {"generator": "images", "params": {}, "priority": "low"},
        {"generator": "images", "params": {"prompt": "x", "count": 2.5}},
        {"generator": "nope", "params": {}},
        {"generator": "noop", "params": {"ms": 1}, "webhook_events": ["completed"]},
    ):
        answer = call("POST", "/api/v1/jobs?dry_run=true", json=body)
        assert answer.status_code == 422 and not validator.is_valid(body), body
    for body in (
        {"generator": "images", "params": {"prompt": "x", "count": 2.0}, "priority": None},
        {"generator": "noop", "params": {"ms": 1.0}, "webhook": None, "webhook_events": None},
        {"generator": "noop"},
    ):
        answer = call("POST", "/api/v1/jobs?dry_run=true", json=body)
        assert answer.status_code == 200 and validator.is_valid(body), body


def test_a_whole_number_sent_as_a_float_is_that_number(call):
    """JSON does not tell 2 from 2.0, and neither does the published schema."""
    body = {"generator": "images", "params": {"prompt": "x", "count": 2.0, "width": 64.0}}
    quote = call("POST", "/api/v1/jobs?dry_run=true", json=body).get_json()
    assert quote["params"]["count"] == 2 and isinstance(quote["params"]["count"], int)


@pytest.mark.parametrize("prompt", [" ", "\u3000\t", "\x1c", "\x85"])
def test_a_prompt_of_whitespace_is_refused_as_the_document_says(call, prompt):
    import re

    from app.generation.generators.images import PROMPT_PATTERN

    body = {"generator": "images", "params": {"prompt": prompt}}
    assert call("POST", "/api/v1/jobs?dry_run=true", json=body).status_code == 422
    assert not re.search(PROMPT_PATTERN, prompt)
    assert re.search(PROMPT_PATTERN, prompt + "a")


def test_a_cursor_of_the_documented_shape_is_a_position(call, service):
    ids = [
        call("POST", "/api/v1/jobs", json={"generator": "noop"}).get_json()["id"] for _ in range(3)
    ]
    first = call("GET", "/api/v1/jobs?limit=1").get_json()
    assert first["next_cursor"] is not None and len(first["next_cursor"]) == 11
    # Past the newest row: every job; before the first row: none.
    assert len(call("GET", "/api/v1/jobs?cursor=__________8").get_json()["jobs"]) == 3
    assert call("GET", "/api/v1/jobs?cursor=AAAAAAAAAAA").get_json()["jobs"] == []
    for id_ in ids:
        wait_for(service, id_)


@pytest.mark.parametrize("events", [["completed", "completed"], []])
def test_webhook_events_must_be_a_set(call, events):
    body = {"generator": "noop", "webhook": "https://93.184.215.14/", "webhook_events": events}
    answer = call("POST", "/api/v1/jobs?dry_run=true", json=body)
    assert answer.status_code == 422 and "webhook_events" in answer.get_json()["error"]["fields"]


@pytest.mark.parametrize("value", ["", "TRUE", " 1", "yes"])
def test_dry_run_takes_exactly_the_documented_values(call, service, value):
    """`?dry_run=` is one of true, false, 1, 0; anything else, even empty, is a 400 (an
    empty one used to queue a real job)."""
    answer = call("POST", f"/api/v1/jobs?dry_run={value}", json={"generator": "noop"})
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "invalid_query"
    assert service.stats()["total_requests"] == 0
