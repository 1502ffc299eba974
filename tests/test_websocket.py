"""The WebSocket protocol, against a real server (docs/websockets.md)."""

import socket
import time
from contextlib import ExitStack
from dataclasses import replace

import pytest

from app.generation import JobStatus

from .conftest import wait_for
from .wsclient import (
    READ_TIMEOUT,
    close_code,
    open_socket,
    receive,
    receive_until,
    receive_until_closed,
    send,
)


def events_path(job_id, since=None):
    return f"/api/v1/jobs/{job_id}/events" + (f"?since={since}" if since is not None else "")


def is_terminal(message):
    return message["type"] in ("succeeded", "failed", "cancelled")


def test_job_socket_sends_snapshot_then_each_change_then_closes_normally(
    service, live_server, gate
):
    blocker = service.submit("gate", {})
    assert gate.started.wait(5)
    job = service.submit("record", {"tag": "x"})
    with open_socket(live_server, events_path(job.id)) as ws:
        snapshot = receive(ws)
        gate.release()
        messages = receive_until_closed(ws)
        code = close_code(ws)
    assert snapshot["type"] == "snapshot" and snapshot["job"]["status"] == "queued"
    assert snapshot["job"]["position"] == 0 and snapshot["job_id"] == job.id
    assert [m["type"] for m in messages] == ["started", "progress", "output", "succeeded"]
    assert messages[2]["name"] == "out.txt" and "signature=" in messages[2]["url"]
    seqs = [snapshot["seq"]] + [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs))  # strictly increasing
    assert messages[1] | {"seq": 0} == {
        "type": "progress",
        "seq": 0,
        "job_id": job.id,
        "percent": 50.0,
        "stage": "working",
        "message": "half way",
        "step": 1,
        "total": 2,
    }
    result = messages[-1]["result"]
    assert result["url"].startswith(f"/api/v1/jobs/{job.id}/result?expires=")  # signed
    assert result["files"] == ["out.txt"]
    assert code == 1000
    assert wait_for(service, blocker.id).status is JobStatus.SUCCEEDED


def test_messages_are_not_compressed_even_when_the_client_offers_it(service, live_server):
    job = service.submit("record", {"tag": "x"})
    with open_socket(live_server, events_path(job.id)) as ws:
        assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert receive(ws)["type"] == "snapshot"


def test_progress_percent_never_goes_back(service, live_server, stepper):
    job = service.submit("stepper", {"steps": 6})
    with open_socket(live_server, events_path(job.id)) as ws:
        receive(ws)
        stepper.advance(6)
        messages = receive_until_closed(ws)
    percents = [m["percent"] for m in messages if m["type"] == "progress"]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert messages[-1]["type"] == "succeeded"


def test_queued_job_is_told_its_new_position_as_the_queue_moves(service, live_server, gate):
    hold = service.submit("gate", {})
    assert gate.started.wait(5)
    ahead = service.submit("record", {})
    job = service.submit("record", {})
    with open_socket(live_server, events_path(job.id)) as ws:
        assert receive(ws)["job"]["position"] == 1
        service.cancel(ahead.id)
        moved = receive(ws)
    assert moved["type"] == "queued" and moved["position"] == 0 and moved["eta_seconds"] > 0
    gate.release()
    wait_for(service, hold.id)


def test_resume_with_since_replays_only_the_missed_events(service, live_server, stepper):
    job = service.submit("stepper", {"steps": 4})
    with open_socket(live_server, events_path(job.id)) as ws:
        receive(ws)
        stepper.advance(1)
        seen = receive_until(ws, lambda m: m["type"] == "progress")
    last_seen = seen[-1]["seq"]
    stepper.advance(3)
    wait_for(service, job.id)
    with open_socket(live_server, events_path(job.id, since=last_seen)) as ws:
        missed = receive_until_closed(ws)
        code = close_code(ws)
    assert [m["seq"] for m in missed] == list(range(last_seen + 1, last_seen + 1 + len(missed)))
    assert [m["type"] for m in missed] == ["progress"] * 3 + ["output", "succeeded"]
    assert code == 1000


def test_resume_from_a_seq_the_server_never_issued_gets_a_snapshot(service, live_server):
    job = service.submit("record", {})
    wait_for(service, job.id)
    with open_socket(live_server, events_path(job.id, since=10_000)) as ws:
        messages = receive_until_closed(ws)
    assert [m["type"] for m in messages] == ["snapshot"]
    assert messages[0]["job"]["status"] == "succeeded"


def test_late_subscriber_to_a_finished_job_gets_its_snapshot_and_a_normal_close(
    service, live_server
):
    job = service.submit("record", {})
    wait_for(service, job.id)
    with open_socket(live_server, events_path(job.id)) as ws:
        messages = receive_until_closed(ws)
        code = close_code(ws)
    assert [m["type"] for m in messages] == ["snapshot"]
    assert messages[0]["job"]["status"] == "succeeded" and messages[0]["job"]["result"]
    assert code == 1000


def test_unknown_job_gets_an_error_message_and_close_code_4404(live_server):
    with open_socket(live_server, events_path("no-such-job")) as ws:
        messages = receive_until_closed(ws)
        code = close_code(ws)
    assert messages == [
        {
            "type": "error",
            "job_id": "no-such-job",
            "error": {"code": "not_found", "message": "no job with id 'no-such-job'"},
        }
    ]
    assert code == 4404


@pytest.mark.parametrize("since", ["-1", "abc", "1.5"])
def test_malformed_since_gets_an_error_and_close_code_4400(service, live_server, since):
    job = service.submit("record", {})
    with open_socket(live_server, events_path(job.id, since=since)) as ws:
        messages = receive_until_closed(ws)
        code = close_code(ws)
    assert messages[0]["error"]["code"] == "bad_request" and code == 4400


def test_slow_subscriber_loses_progress_but_still_gets_the_outcome(app, service, live_server, gate):
    # Unpaced, so every update is sent: a client that does not read while 5000 long
    # updates go out fills its tiny TCP window, the server's send blocks, and the
    # socket's buffer has to drop progress.
    app.config["SERVICE_CONFIG"] = replace(app.config["SERVICE_CONFIG"], ws_update_interval_ms=0)
    service.submit("gate", {})
    assert gate.started.wait(5)
    job = service.submit("chatty", {"updates": 5000})
    with open_socket(live_server, events_path(job.id), receive_buffer=4096) as ws:
        assert receive(ws)["type"] == "snapshot"
        gate.release()
        wait_for(service, job.id)
        messages = receive_until_closed(ws)
    progress = [m for m in messages if m["type"] == "progress"]
    assert messages[-1]["type"] == "succeeded"
    assert len(progress) < 5000  # some were dropped, so the slow path really ran
    assert [m["seq"] for m in messages] == sorted({m["seq"] for m in messages})


def test_many_subscribers_on_one_job_all_get_the_outcome(service, live_server, stepper):
    job = service.submit("stepper", {"steps": 3})
    with ExitStack() as stack:
        sockets = [
            stack.enter_context(open_socket(live_server, events_path(job.id))) for _ in range(20)
        ]
        for ws in sockets:
            assert receive(ws)["type"] == "snapshot"
        stepper.advance(3)
        outcomes = [receive_until_closed(ws)[-1]["type"] for ws in sockets]
    assert outcomes == ["succeeded"] * 20


def test_a_disconnect_never_cancels_the_job(service, live_server, stepper):
    job = service.submit("stepper", {"steps": 2})
    with open_socket(live_server, events_path(job.id)) as ws:
        receive(ws)
    stepper.advance(2)
    assert wait_for(service, job.id).status is JobStatus.SUCCEEDED


def test_one_socket_follows_several_jobs(service, live_server, gate):
    jobs = [service.submit("record", {"tag": n}) for n in range(3)]
    for job in jobs:
        wait_for(service, job.id)
    running = service.submit("gate", {})
    assert gate.started.wait(5)
    with open_socket(live_server, "/api/v1/events") as ws:
        for job in jobs:
            send(ws, {"type": "subscribe", "job_id": job.id})
        send(ws, {"type": "subscribe", "job_id": running.id})
        send(ws, {"type": "subscribe", "job_id": "nope"})
        replies = [receive(ws) for _ in range(5)]
        send(ws, {"type": "unsubscribe", "job_id": running.id})
        send(ws, {"type": "subscribe", "job_id": jobs[0].id, "since": 1})
        replayed = receive_until(ws, is_terminal)  # commands run in order: unsubscribed now
        service.cancel(running.id)
        send(ws, {"type": "subscribe", "job_id": jobs[1].id})
        after_cancel = receive(ws)
    snapshots = {m["job_id"]: m["job"]["status"] for m in replies if m["type"] == "snapshot"}
    assert snapshots == {job.id: "succeeded" for job in jobs} | {running.id: "running"}
    assert [m for m in replies if m["type"] == "error"][0]["error"]["code"] == "not_found"
    assert [m["type"] for m in replayed] == ["started", "progress", "output", "succeeded"]
    assert {m["job_id"] for m in replayed} == {jobs[0].id}
    # Unsubscribed: the cancellation of `running` is not delivered.
    assert (after_cancel["type"], after_cancel["job_id"]) == ("snapshot", jobs[1].id)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1]",
        '{"type": "dance"}',
        '{"type": "subscribe"}',
        '{"type": "subscribe", "job_id": "x", "since": "later"}',
    ],
)
def test_multiplexed_socket_answers_a_bad_command_with_an_error_and_stays_open(
    service, live_server, text
):
    job = service.submit("record", {})
    with open_socket(live_server, "/api/v1/events") as ws:
        ws.send(text)
        error = receive(ws)
        send(ws, {"type": "subscribe", "job_id": job.id})
        snapshot = receive(ws)
    assert error["type"] == "error" and error["error"]["code"] == "bad_request"
    assert snapshot["type"] == "snapshot"


def test_sockets_beyond_capacity_are_refused_with_1013_and_http_still_answers(
    app, live_server, client
):
    app.extensions["sockets"].capacity = 2
    with ExitStack() as stack:
        for _ in range(2):
            served = stack.enter_context(open_socket(live_server, "/api/v1/events"))
            served.send("are you serving me?")
            assert receive(served)["error"]["code"] == "bad_request"  # yes: admitted
        third = stack.enter_context(open_socket(live_server, "/api/v1/events"))
        refused = receive_until_closed(third)
        code = close_code(third)
        health = client.get("/health")
    assert refused[0]["error"]["code"] == "unavailable" and code == 1013
    assert health.status_code == 200


def test_close_all_says_server_restarting_and_closes_with_1001(app, live_server, service, gate):
    job = service.submit("gate", {})
    assert gate.started.wait(5)
    with ExitStack() as stack:
        job_socket = stack.enter_context(open_socket(live_server, events_path(job.id)))
        multiplexed = stack.enter_context(open_socket(live_server, "/api/v1/events"))
        send(multiplexed, {"type": "subscribe", "job_id": job.id})
        for ws in (job_socket, multiplexed):
            assert receive(ws)["type"] == "snapshot"  # both sockets are being served
        app.extensions["sockets"].close_all()
        goodbyes = [receive_until_closed(ws)[-1] for ws in (job_socket, multiplexed)]
        codes = [close_code(ws) for ws in (job_socket, multiplexed)]
    assert [message["type"] for message in goodbyes] == ["server_restarting"] * 2
    assert codes == [1001, 1001]
    assert service.get(job.id).status is JobStatus.RUNNING  # closing sockets cancels nothing


def test_a_chatty_job_reaches_each_socket_as_its_newest_progress_a_few_times_a_second(
    service, live_server, gate
):
    service.submit("gate", {})
    assert gate.started.wait(5)
    job = service.submit("chatty", {"updates": 3000})
    with open_socket(live_server, events_path(job.id)) as ws:
        assert receive(ws)["type"] == "snapshot"
        gate.release()
        messages = receive_until_closed(ws)
    progress = [m["percent"] for m in messages if m["type"] == "progress"]
    assert len(progress) < 100  # paced, not 3000
    assert progress[-1] == 100.0 and messages[-1]["type"] == "succeeded"


def test_a_client_that_stops_answering_pings_is_dropped_and_its_slot_freed(app, live_server):
    app.config["SOCK_SERVER_OPTIONS"]["ping_interval"] = 0.2
    sockets = app.extensions["sockets"]
    address, port = live_server.rsplit(":", 1)
    # A client that completes the handshake, then never answers a frame.
    with socket.create_connection((address, int(port)), timeout=READ_TIMEOUT) as silent:
        silent.sendall(
            b"GET /api/v1/events HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        received = silent.recv(1024)
        while chunk := silent.recv(1024):  # until the server ends the connection
            received += chunk
        freed = until(lambda: len(sockets) == 0)
    assert received.startswith(b"HTTP/1.1 101") and freed
    assert b"\x89\x00" in received  # pinged
    assert b"\x88\x13\x03\xf0" in received  # then closed: 1008 "Ping/Pong timeout"


def until(condition, timeout=READ_TIMEOUT):
    """Poll `condition` until true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
