"""Property: whatever a client sends, the API answers 2xx-4xx, errors in the contract's shape.

Hypothesis generates hundreds of requests per mode against every operation of
openapi.json: random and half-valid JSON bodies, raw bytes, odd path ids, query strings,
and headers; each answer must also be one the document promises, in its schema. The worker
is held busy so that valid submissions queue up instead of running; the queue is large,
so 503 queue_full (a legitimate 5xx) cannot be reached and any 5xx is a bug.
In CI the examples are derandomized, so a run is reproducible; locally they vary.
"""

from __future__ import annotations

import contextlib
import json
import os
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect, WebsocketMismatch

from app.web.docs import openapi_document
from app.wiring import get_service

from .conftest import wait_for
from .openapi_check import assert_conforms
from .test_service import hold_worker

EXAMPLES = 300
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Pausing the queue is fuzzed like any call, but it would answer every later submit
# with its (intended) 503 `paused`: the queue is resumed after each request that paused it.
PAUSE = ("POST", "/api/v1/admin/queue/pause")
OPERATIONS = sorted(
    (method.upper(), path)
    for path, operations in openapi_document()["paths"].items()
    for method in operations
    if method != "parameters"
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
param_names = st.sampled_from(["prompt", "count", "width", "height", "seed"]) | st.text(max_size=8)
near_valid_submissions = st.fixed_dictionaries(
    {
        "generator": st.just("images"),
        "params": st.fixed_dictionaries(
            {"prompt": st.text(min_size=1, max_size=30)},
            optional={
                "count": st.integers(-2, 20),
                "width": st.integers(0, 2000),
                "seed": st.none() | st.integers(-10, 2**64),
            },
        ),
    },
    optional={"priority": st.sampled_from(["high", "normal", "low", "urgent"]) | st.none()},
)
half_valid_submissions = st.fixed_dictionaries(
    {},
    optional={
        "generator": st.sampled_from(["images", "record", "", "IMAGES"]) | json_values,
        "params": st.dictionaries(param_names, json_values, max_size=5) | json_values,
        "priority": st.sampled_from(["high", "normal", "low", "urgent"]) | json_values,
    },
)
submission_bodies = st.one_of(
    near_valid_submissions.map(lambda value: json.dumps(value).encode()),
    half_valid_submissions.map(lambda value: json.dumps(value).encode()),
    half_valid_submissions.map(lambda value: json.dumps(value).encode("utf-16")),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)
query_strings = st.dictionaries(
    st.sampled_from(["status", "limit", "cursor", "token"]) | st.text(max_size=6),
    st.sampled_from(["queued", "succeeded,failed", "1", "100", "0"]) | st.text(max_size=30),
    max_size=4,
).map(urlencode)


@pytest.fixture
def service(make_service):
    """The shared fixtures' service, with a queue too large to fill here."""
    service = make_service(queue_size=100_000)
    service.start()
    return service


def job_ids(service, gate, owner: str = "anonymous") -> list[str]:
    """A finished job, a queued one, and ids that exist nowhere, to aim paths at."""
    done = service.submit("record", {"tag": "fuzz"}, owner=owner)
    wait_for(service, done.id)
    hold_worker(service, gate)
    queued = service.submit("record", {}, owner=owner)
    return [done.id, queued.id, "0" * 32]


def requests_for(ids: list[str], keys: list[str]) -> st.SearchStrategy:
    path_ids = (
        st.sampled_from(ids) | st.text(max_size=40) | st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
    )
    authorization = st.sampled_from([f"Bearer {key}" for key in keys]) | header_text
    headers = st.fixed_dictionaries(
        {},
        optional={
            "Authorization": authorization,
            "Idempotency-Key": header_text,
            "Content-Type": st.sampled_from(["application/json", "text/plain", "x/y"])
            | header_text,
            "Upgrade": st.just("websocket"),
        },
    )
    # A file name: the real one, path tricks, and anything.
    names = st.sampled_from(["out.txt", "../out.txt", "a/../../x", "%2e%2e", "\x00", "n" * 300])
    names |= st.text(max_size=40)
    return st.tuples(
        st.sampled_from(OPERATIONS),
        st.tuples(path_ids, names),
        query_strings,
        headers,
        submission_bodies,
    )


def send(client, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
    """Send one request; assert no 5xx, and that the answer is what openapi.json promises."""
    with client.open(path, method=method, headers=headers, data=body) as response:
        assert response.status_code < 500, (method, path, response.get_data(as_text=True))
        if response.status_code >= 400:
            error = response.get_json(silent=True)["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str)
        # No route as written, or a WebSocket route asked over plain HTTP: the generic
        # JSON 404/405/400 was checked above and openapi.json has no operation to match.
        with contextlib.suppress(NotFound, MethodNotAllowed, RequestRedirect, WebsocketMismatch):
            assert_conforms(client.application, method, path, response)
        return response.status_code


def send_any(client, request) -> int:
    (method, template), (job_id, name), query, headers, body = request
    path = template.format(
        job_id=quote(job_id, safe=""),
        name=quote(name, safe="/"),
        delivery_id=quote(job_id, safe=""),  # ids of other kinds are aimed at too
        machine=quote(name, safe=""),
    )
    try:
        return send(client, method, f"{path}?{query}", headers, body)
    finally:
        if (method, template) == PAUSE:
            get_service(client.application).resume_queue()


@pytest.mark.parametrize("mode", ["open", "keys"])
def test_every_operation_answers_generated_requests_without_a_5xx(
    mode, client, keyed_client, service, gate, issue_key
):
    key = issue_key("fuzzer", "premium")["Authorization"].removeprefix("Bearer ")
    owner = "fuzzer" if mode == "keys" else "anonymous"
    target = keyed_client if mode == "keys" else client

    seen: set[int] = set()

    @FUZZ_SETTINGS
    @given(requests_for(job_ids(service, gate, owner), [key, key[:-1], "gsk_x"]))
    def check(request):
        seen.add(send_any(target, request))

    check()
    # Requests got past the gates to real answers, not only refusals (with a random
    # Authorization most keyed requests are 401s, so only unauthenticated routes are sure).
    assert 200 in seen and seen & {400, 401, 404, 405}


@pytest.mark.parametrize("mode", ["open", "keys"])
def test_generated_submissions_are_accepted_or_refused_never_5xx(
    mode, client, keyed_client, service, gate, issue_key
):
    headers = issue_key("submitter", "standard") if mode == "keys" else {}
    target = keyed_client if mode == "keys" else client
    hold_worker(service, gate)
    seen: set[int] = set()

    @FUZZ_SETTINGS
    @given(submission_bodies, st.none() | header_text)
    def check(body, idempotency_key):
        extra = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        seen.add(send(target, "POST", "/api/v1/jobs", headers | extra, body))

    check()
    assert {202, 400, 422} <= seen  # the generated input reached every kind of answer
