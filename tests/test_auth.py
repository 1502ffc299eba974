"""Access control over HTTP: keys, tiers, ownership, WebSocket tokens, open endpoints."""

from __future__ import annotations

import pytest

from app.web import auth

from .conftest import wait_for

MISSING_ID = "0" * 32

API_CALLS = [
    ("get", "/api/v1/jobs"),
    ("post", "/api/v1/jobs"),
    ("get", f"/api/v1/jobs/{MISSING_ID}"),
    ("post", f"/api/v1/jobs/{MISSING_ID}/cancel"),
    ("get", f"/api/v1/jobs/{MISSING_ID}/result"),
    ("post", "/api/v1/tokens"),
]


def submit(client, headers, **body):
    body = {"generator": "record", "params": {"tag": "t"}} | body
    return client.post("/api/v1/jobs", json=body, headers=headers)


def assert_error(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]


@pytest.mark.parametrize(("method", "path"), API_CALLS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"Authorization": "Bearer gsk_00000000_" + "A" * 43},
        {"Authorization": "Bearer " + "x" * 10_000},
    ],
    ids=["none", "empty", "basic", "unknown", "huge"],
)
def test_every_api_call_needs_a_valid_key(keyed_client, method, path, headers):
    response = getattr(keyed_client, method)(path, headers=headers, json={})
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_key_is_refused(keyed_app, keyed_client, issue_key):
    headers = issue_key("alice")
    assert keyed_client.get("/api/v1/jobs", headers=headers).status_code == 200
    keys = keyed_app.extensions["keys"]
    keys.revoke(keys.all()[0].key_id)
    assert_error(keyed_client.get("/api/v1/jobs", headers=headers), 401, "unauthorized")


@pytest.mark.parametrize("path", ["/health", "/ready", "/status"])
def test_operational_endpoints_need_no_key_and_reveal_no_jobs(keyed_client, issue_key, path):
    submitted = submit(keyed_client, issue_key("alice-the-owner"), params={"tag": "secret-words"})
    assert submitted.status_code == 202
    response = keyed_client.get(path)
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "alice-the-owner" not in text and "secret-words" not in text
    assert submitted.json["id"] not in text


@pytest.mark.parametrize(
    ("tier", "expected"), [("premium", "high"), ("standard", "normal"), ("free", "low")]
)
def test_a_job_defaults_to_its_key_tier(keyed_client, issue_key, tier, expected):
    response = submit(keyed_client, issue_key("alice", tier))
    assert response.status_code == 202
    assert response.json["priority"] == expected


@pytest.mark.parametrize(
    ("tier", "asked"), [("standard", "high"), ("free", "normal"), ("free", "high")]
)
def test_asking_above_the_tier_ceiling_is_forbidden(keyed_client, issue_key, tier, asked):
    response = submit(keyed_client, issue_key("alice", tier), priority=asked)
    assert_error(response, 403, "priority_not_allowed")
    assert "priority" in response.json["error"]["fields"]


def test_asking_below_the_tier_ceiling_is_allowed(keyed_client, issue_key):
    response = submit(keyed_client, issue_key("alice", "premium"), priority="low")
    assert response.status_code == 202 and response.json["priority"] == "low"


def test_open_mode_is_one_anonymous_owner_with_every_priority_normal_by_default(client):
    assert submit(client, {}).json["priority"] == "normal"
    assert submit(client, {}, priority="high").json["priority"] == "high"
    assert submit(client, {"Authorization": "Bearer whatever"}).status_code == 202


def test_another_owners_job_is_indistinguishable_from_a_missing_one(
    keyed_client, issue_key, service
):
    alice, bob = issue_key("alice"), issue_key("bob")
    job_id = submit(keyed_client, alice).json["id"]
    wait_for(service, job_id)
    for method, template, owners_status in [
        ("get", "/api/v1/jobs/{}", 200),
        ("post", "/api/v1/jobs/{}/cancel", 409),
        ("get", "/api/v1/jobs/{}/result", 200),
    ]:
        call = getattr(keyed_client, method)
        theirs = call(template.format(job_id), headers=bob)
        missing = call(template.format(MISSING_ID), headers=bob)
        assert_error(theirs, 404, "not_found")
        assert (
            theirs.json["error"]["message"].replace(job_id, MISSING_ID)
            == (missing.json["error"]["message"])
        )
        with call(template.format(job_id), headers=alice) as own:
            assert own.status_code == owners_status


def test_lists_show_only_the_callers_jobs(keyed_client, issue_key):
    alice, bob = issue_key("alice"), issue_key("bob")
    mine = {submit(keyed_client, alice).json["id"] for _ in range(3)}
    theirs = submit(keyed_client, bob).json["id"]
    listed = keyed_client.get("/api/v1/jobs?limit=100", headers=alice).json["jobs"]
    assert {job["id"] for job in listed} == mine
    assert [job["id"] for job in keyed_client.get("/api/v1/jobs", headers=bob).json["jobs"]] == [
        theirs
    ]


def test_bob_cannot_cancel_alices_job(keyed_client, issue_key, service, gate):
    alice, bob = issue_key("alice"), issue_key("bob")
    job_id = submit(keyed_client, alice, generator="gate", params={}).json["id"]
    assert keyed_client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bob).status_code == 404
    assert not service.get(job_id).cancel_requested
    gate.release()


def ws_handshake(app, query: str):
    """A request context shaped like a browser's WebSocket handshake."""
    return app.test_request_context(
        f"/api/v1/jobs/{MISSING_ID}/events?{query}",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )


def mint(client, headers) -> str:
    response = client.post("/api/v1/tokens", headers=headers)
    assert response.status_code == 200 and response.json["expires_in"] == auth.TOKEN_MAX_AGE
    return response.json["token"]


def test_a_minted_token_opens_a_websocket_as_its_key(keyed_app, keyed_client, issue_key):
    token = mint(keyed_client, issue_key("alice", "free"))
    with ws_handshake(keyed_app, f"token={token}"):
        principal = auth.current_principal()
    assert (principal.owner, principal.tier.value) == ("alice", "free")
    with ws_handshake(keyed_app, ""):
        with pytest.raises(auth.ApiError) as missing:
            auth.current_principal()
    assert missing.value.status == 401


def test_the_websocket_handshake_also_accepts_the_bearer_header(keyed_app, issue_key):
    headers = issue_key("alice") | {"Upgrade": "websocket"}
    with keyed_app.test_request_context("/api/v1/events", headers=headers):
        assert auth.current_principal().owner == "alice"


def test_tokens_are_refused_outside_websocket_handshakes(keyed_client, issue_key):
    token = mint(keyed_client, issue_key("alice"))
    response = keyed_client.get(f"/api/v1/jobs?token={token}")
    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize("spoil", ["tamper", "expire", "revoke", "other_secret"])
def test_bad_tokens_are_refused(keyed_app, keyed_client, issue_key, monkeypatch, spoil):
    token = mint(keyed_client, issue_key("alice"))
    if spoil == "tamper":
        token = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    elif spoil == "expire":
        monkeypatch.setattr(auth, "TOKEN_MAX_AGE", -1)
    elif spoil == "revoke":
        keys = keyed_app.extensions["keys"]
        keys.revoke(keys.all()[0].key_id)
    else:
        keyed_app.secret_key = "another-secret-key-that-is-long-enough"
    with ws_handshake(keyed_app, f"token={token}"):
        with pytest.raises(auth.ApiError) as refused:
            auth.current_principal()
    assert refused.value.status == 401


def test_me_tells_a_page_which_priorities_the_caller_may_ask_for(call, keyed_client, issue_key):
    opened = call("GET", "/api/v1/me").get_json()
    assert opened == {
        "owner": "anonymous",
        "tier": None,
        "priorities": ["high", "normal", "low"],
        "default_priority": "normal",
        "admin": True,  # open mode: the operator's calls are open too
    }
    free = keyed_client.get("/api/v1/me", headers=issue_key("kim", "free")).get_json()
    assert (free["owner"], free["tier"], free["priorities"]) == ("kim", "free", ["low"])
    assert keyed_client.get("/api/v1/me").status_code == 401
