"""Hostile input, one case at a time: each is a 4xx in the contract's error shape, never
a 5xx, and none leaves a job behind. tests/test_fuzz.py throws generated input at it."""

from __future__ import annotations

import json

import pytest

SUBMIT = "/api/v1/jobs"
GOOD = {"generator": "images", "params": {"prompt": "a cat", "count": 1, "width": 64}}


def nested(depth: int) -> str:
    return '{"generator": "images", "params": {"prompt": ' + "[" * depth + "]" * depth + "}}"


def assert_client_error(response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    error = response.json["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code:
        assert error["code"] == code


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "malformed_json"),
        (b"null", "malformed_json"),
        (b"[]", "malformed_json"),
        (b'"a string"', "malformed_json"),
        (b"{", "malformed_json"),
        (b"\xff\xfe{}", "malformed_json"),  # not UTF-8
        (json.dumps(GOOD).encode("utf-16"), "malformed_json"),
        (b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), "malformed_json"),  # UTF-8 BOM
        (b'{"generator": "images", "params": {"prompt": "\\ud800"}}', "malformed_json"),
        (b'{"generator": "images", "params": {"count": NaN}}', "malformed_json"),
        (b'{"generator": "images", "params": {"count": 1e999}}', "malformed_json"),
        (b'{"generator": "images", "params": {"count": ' + b"9" * 5000 + b"}}", "malformed_json"),
        (nested(40).encode(), "malformed_json"),
        (nested(100_000 // 2 - 50).encode()[:60_000], "malformed_json"),
        (b'{"generator": "images\\u0000", "params": {"prompt": "x"}}', "invalid_params"),
        (b'{"generator": "images", "params": {"prompt": "nul\\u0000byte"}}', "invalid_params"),
        (b'{"generator": 7, "params": []}', "invalid_params"),
        (b'{"generator": "images", "params": {"prompt": "x", "count": true}}', "invalid_params"),
        (b'{"generator": "images", "params": {"prompt": "x", "count": 2.5}}', "invalid_params"),
        (b'{"generator": "images", "params": {"prompt": "x", "seed": -1}}', "invalid_params"),
        (b'{"generator": "images", "params": {"prompt": "x", "width": 4096}}', "invalid_params"),
        (b'{"generator": "images", "params": {"prompt": "' + b"p" * 501 + b'"}}', "invalid_params"),
        (b'{"generator": "images", "priority": "urgent", "params": {}}', "invalid_params"),
        (b'{"generator": "images", "priority": 1, "params": {}}', "invalid_params"),
        (b'{"generator": "images", "surprise": {}, "params": {}}', "invalid_params"),
    ],
)
def test_bad_submissions_are_4xx_and_queue_nothing(client, body, code):
    response = client.post(SUBMIT, data=body, content_type="application/json")
    assert response.status_code in (400, 422)
    assert_client_error(response, response.status_code, code)
    assert client.get(SUBMIT).json["jobs"] == []


def test_an_oversize_body_is_413(client, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = b'{"generator": "images", "params": {"prompt": "' + b"x" * limit + b'"}}'
    assert_client_error(client.post(SUBMIT, data=body), 413, "payload_too_large")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs/not-a-job",
        "/api/v1/jobs/%00",
        "/api/v1/jobs/" + "a" * 33,
        "/api/v1/jobs/" + "A" * 32,
        "/api/v1/jobs/" + "0" * 32,
        "/api/v1/jobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd/result",
        "/api/v1/jobs/" + "0" * 32 + "/result",
        "/api/v1/jobs/" + "0" * 32 + "/nope",
    ],
)
def test_odd_job_ids_are_404(client, path):
    assert_client_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=%C2%B2",  # "²" is a digit to str.isdigit(), not to int()
        "limit=%EF%BC%91",  # fullwidth "1"
        "limit=1e3",
        "status=done",
        "status=queued,%00",
        "cursor=%00",
        "cursor=cGs6wrI",  # "pk:²"
        "cursor=" + "A" * 5000,
        "cursor=cGs6OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5",  # "pk:" and 27 nines
    ],
)
def test_bad_query_strings_are_400(client, query):
    assert_client_error(client.get(f"{SUBMIT}?{query}"), 400, "invalid_query")


@pytest.mark.parametrize(
    ("method", "path"),
    [("put", SUBMIT), ("delete", SUBMIT), ("get", SUBMIT + "/" + "0" * 32 + "/cancel")],
)
def test_wrong_methods_are_405(client, method, path):
    response = getattr(client, method)(path)
    assert_client_error(response, 405, "method_not_allowed")
    assert "Allow" in response.headers


def test_a_good_submission_still_works_after_all_that(client):
    assert client.post(SUBMIT, json=GOOD).status_code == 202


@pytest.mark.parametrize(
    ("lists", "innermost", "code"),
    [
        # The body is level 1 and params level 2, so n lists put their content at 3 + n.
        # 31 brackets in all (the checks' shortcut skips them) and a number at level 32.
        (29, "1", "invalid_params"),
        (30, "1", "malformed_json"),
        (30, "", "invalid_params"),  # an empty list at level 32, 32 brackets
        (31, "", "malformed_json"),
    ],
)
def test_nesting_is_refused_exactly_past_the_limit(client, lists, innermost, code):
    body = '{"generator": "images", "params": {"prompt": ' + "[" * lists + innermost
    body += "]" * lists + "}}"
    assert_client_error(
        client.post(SUBMIT, data=body.encode()), 400 if "json" in code else 422, code
    )


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("\\uDFFF", "malformed_json"),  # a lone low surrogate, upper-case hex
        ("\\uD83D\\uDE00", None),  # a pair is one character (😀)
        ("\\\\ud800", None),  # an escaped backslash, then plain text
        ("\\uE000", None),  # just past the surrogates
    ],
)
def test_surrogate_escapes_are_refused_only_when_lone(client, text, code):
    body = '{"generator": "images", "params": {"prompt": "' + text + '", "count": 1, "width": 64}}'
    response = client.post(SUBMIT, data=body.encode())
    if code is None:
        assert response.status_code == 202, response.get_data(as_text=True)
    else:
        assert_client_error(response, 400, code)
