"""WebSockets with AUTH_MODE=keys: who may open one, and whose jobs it shows."""

import pytest
from websockets.exceptions import InvalidStatus

from .wsclient import close_code, open_socket, receive, receive_until_closed, send


def token_for(keyed_client, headers):
    return keyed_client.post("/api/v1/tokens", headers=headers).get_json()["token"]


def test_a_handshake_without_credentials_is_refused_with_401(keyed_live_server):
    with pytest.raises(InvalidStatus) as refused:
        open_socket(keyed_live_server, "/api/v1/events")
    assert refused.value.response.status_code == 401


def test_refused_handshakes_give_their_opening_turn_back(
    keyed_live_server, keyed_client, issue_key
):
    for _ in range(3):  # one socket opens at a time: a turn kept would block the next
        with pytest.raises(InvalidStatus):
            open_socket(keyed_live_server, "/api/v1/events")
    token = token_for(keyed_client, issue_key("alice"))
    with open_socket(keyed_live_server, f"/api/v1/events?token={token}") as ws:
        send(ws, {"type": "subscribe", "job_id": "nope"})
        assert receive(ws)["error"]["code"] == "not_found"


def test_a_token_opens_a_socket_on_its_owners_jobs(
    keyed_live_server, keyed_client, issue_key, service
):
    alice = issue_key("alice")
    job = service.submit("record", {}, owner="alice")
    token = token_for(keyed_client, alice)
    with open_socket(keyed_live_server, f"/api/v1/events?token={token}") as ws:
        send(ws, {"type": "subscribe", "job_id": job.id})
        first = receive(ws)
    assert first["type"] == "snapshot" and first["job_id"] == job.id


def test_another_owners_job_is_unknown_to_a_socket(
    keyed_live_server, keyed_client, issue_key, service
):
    job = service.submit("record", {}, owner="alice")
    token = token_for(keyed_client, issue_key("bob"))
    path = f"/api/v1/jobs/{job.id}/events?token={token}"
    with open_socket(keyed_live_server, path) as ws:
        messages = receive_until_closed(ws)
        code = close_code(ws)
    assert messages[0]["error"]["code"] == "not_found" and code == 4404


def test_a_forged_token_is_refused(keyed_live_server):
    with pytest.raises(InvalidStatus) as refused:
        open_socket(keyed_live_server, "/api/v1/events?token=not-a-token")
    assert refused.value.response.status_code == 401
