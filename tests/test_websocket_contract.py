"""The WebSocket routes against what openapi.json says of them (issue #21).

Each socket operation has an `x-websocket` extension naming the schema of what the
server sends (and, on /api/v1/events, of what the client sends) and the close codes it
uses. Here real sockets, on the in-process server test_websocket.py uses and on gunicorn,
go through the sessions a client meets: a job that succeeds with progress, previews and
files, one that fails and is retried, cancellations, a queue that moves, resumes, every
kind of `error`, the console stream, a shutdown. Every message must validate against its
route's schema, which must refuse the same message with a field added (so it is not
trivially permissive), and every close code must be one the route lists. Then the
handshake's HTTP refusals, sent raw, must be the documented answers.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from sqlalchemy.exc import OperationalError
from websockets.sync.client import ClientConnection, connect

from app.generation import Job
from app.generation.events.bus import EventType
from app.web import console_stream, sockets
from app.web import ws as ws_routes
from app.web.docs import served_document

from .conftest import hold_worker, wait_for
from .servers import create_key, gunicorn
from .wsclient import (
    CLOSE_TIMEOUT,
    READ_TIMEOUT,
    close_code,
    open_socket,
    receive,
    receive_until_closed,
    send,
)

SPEC_URI = "urn:generation-service:openapi-websockets"
JOB_ROUTE = "/api/v1/jobs/{job_id}/events"
EVENTS_ROUTE = "/api/v1/events"
STREAM_ROUTE = "/api/v1/admin/stream"
ROUTES = (EVENTS_ROUTE, JOB_ROUTE, STREAM_ROUTE)
OUTCOMES = ("succeeded", "failed", "cancelled")
# Nested objects whose schemas are closed too (`additionalProperties: false`).
CLOSED_OBJECTS = ("job", "result", "error", "charts")

Message = dict[str, Any]

# What each session below must see, per route (so no test passes on messages it never
# got); together they cover every message type the document lists (checked below).
SEEN_IN = {
    "success": {
        JOB_ROUTE: {"snapshot", "started", "progress", "preview", "output", "succeeded"},
        EVENTS_ROUTE: {"snapshot", "started", "progress", "preview", "output", "succeeded"},
    },
    "failure and retry": {
        JOB_ROUTE: {"snapshot", "started", "progress", "failed", "queued"},
        EVENTS_ROUTE: {"snapshot", "started", "progress", "failed", "queued"},
    },
    "cancel": {
        JOB_ROUTE: {"snapshot", "cancelled"},
        EVENTS_ROUTE: {"snapshot", "cancelled"},
    },
    "queue moves": {JOB_ROUTE: {"snapshot", "queued"}, EVENTS_ROUTE: {"snapshot", "queued"}},
    "resume": {
        JOB_ROUTE: {"snapshot", "progress", "output", "succeeded"},
        EVENTS_ROUTE: {"snapshot", "progress", "output", "succeeded"},
    },
    "errors": {JOB_ROUTE: {"error"}, EVENTS_ROUTE: {"error", "snapshot"}, STREAM_ROUTE: {"error"}},
    "console": {STREAM_ROUTE: {"console", "error", "server_restarting"}},
    "gunicorn": {
        JOB_ROUTE: {
            "snapshot",
            "started",
            "progress",
            "preview",
            "output",
            "succeeded",
            "server_restarting",
        },
        EVENTS_ROUTE: {"snapshot", "succeeded", "server_restarting"},
        STREAM_ROUTE: {"console", "server_restarting"},
    },
}


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


class Contract:
    """What the document says of the sockets, and what the tests saw of them."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry = Registry().with_resource(SPEC_URI, resource)
        self._validators: dict[str, Draft202012Validator] = {}
        self.types: defaultdict[str, set[str]] = defaultdict(set)
        self.error_codes: defaultdict[str, set[str]] = defaultdict(set)
        self.close_codes: defaultdict[str, set[int]] = defaultdict(set)

    def socket(self, route: str) -> dict[str, Any]:
        return self.document["paths"][route]["get"]["x-websocket"]

    def mapping(self, route: str, side: str = "server-messages") -> dict[str, str]:
        """The discriminator's `type` -> schema reference of a route's messages."""
        name = self.socket(route)[side]["$ref"].removeprefix("#/components/schemas/")
        return self.document["components"]["schemas"][name]["discriminator"]["mapping"]

    def problems(self, route: str, message: Any, side: str = "server-messages") -> list[str]:
        """Why `message` does not conform ([] when it does): checked against the route's
        schema as the extension names it, and against the schema of its `type` alone,
        whose errors say more than a failed `oneOf`."""
        pointers = [_pointer("paths", route, "get", "x-websocket", side)]
        target = self.mapping(route, side).get(
            message.get("type") if isinstance(message, dict) else None
        )
        if target is not None:
            pointers.append(target.removeprefix("#/"))
        found = []
        for pointer in pointers:
            for error in self._validator(pointer).iter_errors(message):
                where = "/".join(str(part) for part in error.absolute_path) or "(message)"
                found.append(f"{where}: {error.message[:300]}")
        return found

    def answer_problems(self, route: str, status: int, body: Any) -> list[str]:
        pointer = _pointer(
            "paths", route, "get", "responses", str(status), "content", "application/json", "schema"
        )
        return [error.message for error in self._validator(pointer).iter_errors(body)]

    def check(self, route: str, message: Message) -> Message:
        """Assert that `message` conforms to its route's schema, and that the schema would
        refuse it with one field more (at the top and in each closed nested object)."""
        problems = self.problems(route, message)
        assert not problems, f"{route} sent {message!r}, which the document refuses: {problems}"
        assert self.problems(route, message | {"unexpected": True}), (
            f"{route}: the schema of {message['type']!r} takes a field it does not list"
        )
        for key in CLOSED_OBJECTS:
            if isinstance(message.get(key), dict):
                widened = message | {key: message[key] | {"unexpected": True}}
                assert self.problems(route, widened), f"{route}: {message['type']}.{key} is open"
        self.types[route].add(message["type"])
        if message["type"] == "error":
            self.error_codes[route].add(message["error"]["code"])
        return message

    def closed(self, route: str, code: int | None) -> int | None:
        codes = self.socket(route)["close-codes"]
        assert str(code) in codes, f"{route} closed with {code}, not one of {sorted(codes)}"
        self.close_codes[route].add(code)
        return code

    def _validator(self, pointer: str) -> Draft202012Validator:
        if pointer not in self._validators:
            schema = {"$ref": f"{SPEC_URI}#/{pointer}"}
            self._validators[pointer] = Draft202012Validator(schema, registry=self._registry)
        return self._validators[pointer]


# -- reading and writing sockets, checking as we go --------------------------------------


def take(contract: Contract, route: str, ws: ClientConnection) -> Message:
    return contract.check(route, receive(ws))


def take_until(
    contract: Contract, route: str, ws: ClientConnection, done: Callable[[Message], bool]
) -> list[Message]:
    """Messages up to and including the first for which `done` is true."""
    messages = [take(contract, route, ws)]
    while not done(messages[-1]):
        messages.append(take(contract, route, ws))
    return messages


def take_until_closed(contract: Contract, route: str, ws: ClientConnection) -> list[Message]:
    """Every message until the server closes, and its close code, all checked."""
    messages = [contract.check(route, message) for message in receive_until_closed(ws)]
    contract.closed(route, close_code(ws))
    return messages


def take_until_outcomes(
    contract: Contract, route: str, ws: ClientConnection, job_ids: set[str]
) -> list[Message]:
    """Messages until each of `job_ids` has had its outcome."""
    ended: set[str] = set()

    def all_ended(message: Message) -> bool:
        if message["type"] in OUTCOMES:
            ended.add(message["job_id"])
        return ended >= job_ids

    return take_until(contract, route, ws, all_ended)


def command(contract: Contract, ws: ClientConnection, message: Message) -> None:
    """Send a command the document says /api/v1/events takes."""
    problems = contract.problems(EVENTS_ROUTE, message, "client-messages")
    assert not problems, f"the document refuses the command {message!r}: {problems}"
    send(ws, message)


def job_path(job_id: str, since: int | str | None = None) -> str:
    return f"/api/v1/jobs/{job_id}/events" + ("" if since is None else f"?since={since}")


def open_sockets(
    stack: ExitStack, server_url: str, jobs: Iterable[Job]
) -> tuple[ClientConnection, dict[str, ClientConnection]]:
    """One socket following many jobs, and one socket per job, closed with `stack`."""
    many = stack.enter_context(open_socket(server_url, EVENTS_ROUTE))
    one = {job.id: stack.enter_context(open_socket(server_url, job_path(job.id))) for job in jobs}
    return many, one


def types_of(messages: list[Message]) -> set[str]:
    return {message["type"] for message in messages}


def assert_seen(contract: Contract, session: str) -> None:
    for route, expected in SEEN_IN[session].items():
        missing = expected - contract.types[route]
        assert not missing, f"{session}: {route} never sent {sorted(missing)}"


@pytest.fixture
def contract(app) -> Contract:
    return Contract(served_document(app))


# -- the document -------------------------------------------------------------------------


def test_each_socket_route_names_its_messages_and_close_codes(app):
    document = served_document(app)
    contract = Contract(document)
    schemas = document["components"]["schemas"]
    job_types = {kind.value for kind in EventType} | {"snapshot", "error", "server_restarting"}
    assert set(contract.mapping(JOB_ROUTE)) == set(contract.mapping(EVENTS_ROUTE)) == job_types
    assert set(contract.mapping(STREAM_ROUTE)) == {"console", "error", "server_restarting"}
    assert set(contract.mapping(EVENTS_ROUTE, "client-messages")) == {"subscribe", "unsubscribe"}
    assert "client-messages" not in contract.socket(JOB_ROUTE)  # it ignores what it gets
    assert "client-messages" not in contract.socket(STREAM_ROUTE)
    for route in ROUTES:
        for kind, target in contract.mapping(route).items():
            schema = schemas[target.removeprefix("#/components/schemas/")]
            assert schema["additionalProperties"] is False, target
            assert schema["properties"]["type"] == {"const": kind}, target
            assert "type" in schema["required"], target
    # The console message is the Console without its history, plus its charts.
    console, message = schemas["Console"], schemas["ConsoleMessage"]
    assert set(message["properties"]) == set(console["properties"]) - {"history"} | {
        "type",
        "charts",
    }
    assert set(message["required"]) == set(console["required"]) - {"history"} | {"type", "charts"}
    # The close codes the server uses (app/web/sockets.py).
    every_socket = {sockets.GOING_AWAY, sockets.INTERNAL_ERROR, sockets.TRY_AGAIN_LATER}
    for route in ROUTES:
        assert every_socket <= {int(code) for code in contract.socket(route)["close-codes"]}
    job_codes = {sockets.NORMAL_CLOSURE, sockets.BAD_REQUEST, sockets.NOT_FOUND}
    assert job_codes <= {int(code) for code in contract.socket(JOB_ROUTE)["close-codes"]}
    # The sessions below, together, see every message type of every route.
    for route in ROUTES:
        seen = set().union(*(session.get(route, set()) for session in SEEN_IN.values()))
        assert seen == set(contract.mapping(route)), route


# -- job sessions on the in-process server ----------------------------------------------


def test_jobs_that_succeed_send_conforming_messages(
    service, live_server, contract, gate, stepper, paced
):
    hold_worker(service, gate)
    steps = service.submit("stepper", {"steps": 2})
    images = service.submit("paced", {"count": 2})
    with ExitStack() as stack:
        many, one = open_sockets(stack, live_server, (steps, images))
        for job_id, ws in one.items():
            command(contract, many, {"type": "subscribe", "job_id": job_id})
            snapshot = take(contract, JOB_ROUTE, ws)
            assert snapshot["type"] == "snapshot" and snapshot["job"]["status"] == "queued"
        assert types_of([take(contract, EVENTS_ROUTE, many) for _ in one]) == {"snapshot"}
        gate.release()
        stepper.advance(2)
        # The first image lands while the job runs (it waits for the test): a live `output`.
        landed = take_until(contract, JOB_ROUTE, one[images.id], lambda m: m["type"] == "output")
        paced.advance(1)
        messages = landed + take_until_closed(contract, JOB_ROUTE, one[images.id])
        messages += take_until_closed(contract, JOB_ROUTE, one[steps.id])
        followed = take_until_outcomes(contract, EVENTS_ROUTE, many, set(one))
    assert contract.close_codes[JOB_ROUTE] == {1000}
    assert [m["name"] for m in messages if m["type"] == "output"] == [
        "image-01.png",
        "image-02.png",
        "steps.txt",
    ]
    assert {m["job_id"] for m in followed} == set(one)
    assert_seen(contract, "success")


def test_a_job_that_fails_and_is_retried_sends_conforming_messages(
    service, live_server, contract, gate, client
):
    hold_worker(service, gate)
    job = service.submit("fail", {})
    with ExitStack() as stack:
        one = stack.enter_context(open_socket(live_server, job_path(job.id)))
        many = stack.enter_context(open_socket(live_server, EVENTS_ROUTE))
        command(contract, many, {"type": "subscribe", "job_id": job.id})
        assert take(contract, JOB_ROUTE, one)["type"] == "snapshot"
        assert take(contract, EVENTS_ROUTE, many)["type"] == "snapshot"
        gate.release()
        first_run = take_until_closed(contract, JOB_ROUTE, one)
        take_until_outcomes(contract, EVENTS_ROUTE, many, {job.id})
        assert first_run[-1]["type"] == "failed"
        failed_at = first_run[-1]["seq"]
        # An admin retries it: the job is back in the queue (`requeued`, `retried`). A
        # client that saw the failure resumes from it and is told so, then the new run.
        assert client.post(f"/api/v1/admin/jobs/{job.id}/retry").status_code == 200
        command(contract, many, {"type": "subscribe", "job_id": job.id, "since": failed_at})
        second_run = take_until_outcomes(contract, EVENTS_ROUTE, many, {job.id})
        again = stack.enter_context(open_socket(live_server, job_path(job.id, since=failed_at)))
        replayed = take_until_closed(contract, JOB_ROUTE, again)
    for run in (second_run, replayed):
        assert run[0] | {"seq": 0} == {
            "type": "queued",
            "seq": 0,
            "job_id": job.id,
            "requeued": True,
            "retried": True,
        }
        assert [m["type"] for m in run][-1] == "failed" and "started" in types_of(run)
    assert_seen(contract, "failure and retry")


def test_cancelled_jobs_send_conforming_messages(service, live_server, contract, gate):
    running = hold_worker(service, gate)
    queued = service.submit("record", {})
    with ExitStack() as stack:
        many, one = open_sockets(stack, live_server, (running, queued))
        for job_id, ws in one.items():
            command(contract, many, {"type": "subscribe", "job_id": job_id})
            assert take(contract, JOB_ROUTE, ws)["type"] == "snapshot"
        take_until(contract, EVENTS_ROUTE, many, lambda m: m["job_id"] == running.id)
        service.cancel(queued.id)  # cancelled in the queue
        service.cancel(running.id)  # cancelled while it runs: the run stops
        ends = [take_until_closed(contract, JOB_ROUTE, ws)[-1] for ws in one.values()]
        take_until_outcomes(contract, EVENTS_ROUTE, many, set(one))
    assert [end["type"] for end in ends] == ["cancelled", "cancelled"]
    assert_seen(contract, "cancel")


def test_a_queued_job_that_moves_sends_conforming_messages(service, live_server, contract, gate):
    hold = hold_worker(service, gate)
    ahead = service.submit("record", {})
    job = service.submit("record", {})
    with ExitStack() as stack:
        one = stack.enter_context(open_socket(live_server, job_path(job.id)))
        many = stack.enter_context(open_socket(live_server, EVENTS_ROUTE))
        command(contract, many, {"type": "subscribe", "job_id": job.id})
        assert take(contract, JOB_ROUTE, one)["job"]["position"] == 1
        assert take(contract, EVENTS_ROUTE, many)["job"]["position"] == 1
        service.cancel(ahead.id)
        moved = [
            take(contract, route, ws) for route, ws in ((JOB_ROUTE, one), (EVENTS_ROUTE, many))
        ]
    for message in moved:
        assert message["type"] == "queued" and message["position"] == 0
        assert message["eta_seconds"] > 0 and "requeued" not in message
    gate.release()
    wait_for(service, hold.id)
    assert_seen(contract, "queue moves")


def test_resumes_send_conforming_replays_and_snapshots(service, live_server, contract, stepper):
    job = service.submit("stepper", {"steps": 4})
    with open_socket(live_server, job_path(job.id)) as ws:
        take(contract, JOB_ROUTE, ws)
        stepper.advance(1)
        last = take_until(contract, JOB_ROUTE, ws, lambda m: m["type"] == "progress")[-1]["seq"]
    stepper.advance(3)
    wait_for(service, job.id)
    with ExitStack() as stack:
        replay = stack.enter_context(open_socket(live_server, job_path(job.id, since=last)))
        fresh = stack.enter_context(open_socket(live_server, job_path(job.id, since=10**9)))
        many = stack.enter_context(open_socket(live_server, EVENTS_ROUTE))
        replayed = take_until_closed(contract, JOB_ROUTE, replay)
        snapshot = take_until_closed(contract, JOB_ROUTE, fresh)
        command(contract, many, {"type": "subscribe", "job_id": job.id, "since": last})
        replayed_here = take_until_outcomes(contract, EVENTS_ROUTE, many, {job.id})
        command(contract, many, {"type": "subscribe", "job_id": job.id, "since": 10**9})
        snapshot_here = take(contract, EVENTS_ROUTE, many)
    expected = ["progress"] * 3 + ["output", "succeeded"]
    assert [m["type"] for m in replayed] == [m["type"] for m in replayed_here] == expected
    assert [m["type"] for m in snapshot] == ["snapshot"] and snapshot_here["type"] == "snapshot"
    assert_seen(contract, "resume")


# -- errors ------------------------------------------------------------------------------

# Commands the server refuses (`bad_request`): the document must refuse them too.
BAD_COMMANDS = [
    "not json",
    "[1]",
    '"subscribe"',
    '{"type": "dance", "job_id": "x"}',
    '{"type": "subscribe"}',
    '{"type": "subscribe", "job_id": ""}',
    '{"type": "subscribe", "job_id": 7}',
    '{"type": "unsubscribe", "job_id": "%s"}' % ("x" * 65),
    '{"type": "subscribe", "job_id": "x", "since": "later"}',
    '{"type": "subscribe", "job_id": "x", "since": -1}',
    '{"type": "subscribe", "job_id": "x", "since": 1.5}',
    '{"type": "subscribe", "job_id": "x", "since": true}',
]


def parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def test_every_kind_of_error_is_a_conforming_message(
    app, service, live_server, contract, gate, monkeypatch
):
    running = hold_worker(service, gate)
    queued = service.submit("record", {})
    with ExitStack() as stack:
        # Unknown job, malformed `since`: an error, then the close the document lists.
        for path, code in (
            (job_path("no-such-job"), "not_found"),
            (job_path(queued.id, since="abc"), "bad_request"),
            (job_path(queued.id, since="-1"), "bad_request"),
        ):
            ws = stack.enter_context(open_socket(live_server, path))
            [error] = take_until_closed(contract, JOB_ROUTE, ws)
            assert error["type"] == "error" and error["error"]["code"] == code
        many = stack.enter_context(open_socket(live_server, EVENTS_ROUTE))
        command(contract, many, {"type": "subscribe", "job_id": "no-such-job"})
        unknown = take(contract, EVENTS_ROUTE, many)
        assert (unknown["error"]["code"], unknown["job_id"]) == ("not_found", "no-such-job")
        for text in BAD_COMMANDS:
            message = parsed(text)
            if message is not None:
                assert contract.problems(EVENTS_ROUTE, message, "client-messages"), text
            many.send(text)
            refused = take(contract, EVENTS_ROUTE, many)
            assert refused["type"] == "error" and refused["error"]["code"] == "bad_request", text
        # The commands the document takes are taken (the socket stayed open throughout).
        command(contract, many, {"type": "unsubscribe", "job_id": queued.id})
        command(contract, many, {"type": "subscribe", "job_id": running.id, "since": 0})
        assert take(contract, EVENTS_ROUTE, many)["type"] == "snapshot"
        # One job too many (at 1, instead of 100).
        monkeypatch.setattr(ws_routes, "MAX_JOBS_PER_SOCKET", 1)
        command(contract, many, {"type": "subscribe", "job_id": queued.id})
        too_many = take(contract, EVENTS_ROUTE, many)
        assert (too_many["error"]["code"], too_many["job_id"]) == ("too_many_jobs", queued.id)
        # A full server refuses a socket on every route: `unavailable`, then 1013.
        app.extensions["sockets"].capacity = 1  # `many` holds it
        for route, path in (
            (JOB_ROUTE, job_path(queued.id)),
            (EVENTS_ROUTE, EVENTS_ROUTE),
            (STREAM_ROUTE, STREAM_ROUTE),
        ):
            ws = stack.enter_context(open_socket(live_server, path))
            [refused] = take_until_closed(contract, route, ws)
            assert refused["error"]["code"] == "unavailable" and close_code(ws) == 1013
    assert contract.error_codes[JOB_ROUTE] == {"not_found", "bad_request", "unavailable"}
    assert contract.error_codes[EVENTS_ROUTE] == {
        "not_found",
        "bad_request",
        "too_many_jobs",
        "unavailable",
    }
    assert contract.close_codes[JOB_ROUTE] == {4404, 4400, 1013}
    assert_seen(contract, "errors")


# -- the console stream -----------------------------------------------------------------


def test_the_console_stream_sends_conforming_messages(
    app, service, live_server, contract, gate, monkeypatch
):
    monkeypatch.setattr(console_stream, "PUSH_SECONDS", 0.1)  # the same messages, sooner
    failed = wait_for(service, service.submit("fail", {}).id)
    hold_worker(service, gate)
    queued = service.submit("record", {})
    with open_socket(live_server, STREAM_ROUTE) as ws:
        first = take(contract, STREAM_ROUTE, ws)
        assert first["type"] == "console" and [job["id"] for job in first["next"]] == [queued.id]
        assert first["running"] and first["processes"]
        assert [job["id"] for job in first["failures"]] == [failed.id]

        def unreachable(*args: object) -> Message:
            raise OperationalError("SELECT 1", {}, Exception("the database is down"))

        real = console_stream.console_message
        monkeypatch.setattr(console_stream, "console_message", unreachable)
        down = take_until(contract, STREAM_ROUTE, ws, lambda m: m["type"] == "error")[-1]
        assert down["error"]["code"] == "database_unavailable"
        monkeypatch.setattr(console_stream, "console_message", real)
        take_until(contract, STREAM_ROUTE, ws, lambda m: m["type"] == "console")
        app.extensions["sockets"].close_all()
        last = take_until_closed(contract, STREAM_ROUTE, ws)[-1]
    assert last == {"type": "server_restarting", "reconnect": True}
    assert contract.close_codes[STREAM_ROUTE] == {1001}
    assert_seen(contract, "console")


# -- gunicorn: a job, the console and a shutdown ----------------------------------------

TEST_APP = "tests.wsgi_with_test_generators:app"


def api(server_url: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, server_url + path, timeout=10, **kwargs)


def submit(server_url: str, generator: str, params: dict[str, Any]) -> str:
    answer = api(
        server_url, "POST", "/api/v1/jobs", json={"generator": generator, "params": params}
    )
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def until_running(server_url: str, job_id: str) -> None:
    deadline = time.monotonic() + READ_TIMEOUT
    while api(server_url, "GET", f"/api/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline, f"job {job_id} never started"
        time.sleep(0.02)


def test_gunicorn_sends_conforming_messages_through_a_job_and_a_shutdown(tmp_path):
    env = {"GENERATION_WORKERS": "1", "WEB_THREADS": "32"}
    with gunicorn(tmp_path, env, app=TEST_APP) as server, ExitStack() as stack:
        host = urlsplit(server.url).netloc
        contract = Contract(api(server.url, "GET", "/openapi.json").json())
        go = tmp_path / "go"
        waiting = submit(server.url, "wait_file", {"path": str(go)})
        until_running(server.url, waiting)
        images = submit(server.url, "images", {"prompt": "contract", "count": 2, "width": 64})
        one = stack.enter_context(open_socket(host, job_path(images)))
        many = stack.enter_context(open_socket(host, EVENTS_ROUTE))
        stream = stack.enter_context(open_socket(host, STREAM_ROUTE))
        assert take(contract, JOB_ROUTE, one)["job"]["status"] == "queued"
        for job_id in (waiting, images):
            command(contract, many, {"type": "subscribe", "job_id": job_id})
            assert take(contract, EVENTS_ROUTE, many)["type"] == "snapshot"
        assert take(contract, STREAM_ROUTE, stream)["type"] == "console"
        go.touch()
        run = take_until_closed(contract, JOB_ROUTE, one)
        take_until_outcomes(contract, EVENTS_ROUTE, many, {waiting, images})
        assert [m["name"] for m in run if m["type"] == "output"] == [
            "image-01.png",
            "image-02.png",
        ]
        # A job that never ends, followed on both routes while the server stops.
        stuck = submit(server.url, "wait_file", {"path": str(tmp_path / "never")})
        until_running(server.url, stuck)
        last_one = stack.enter_context(open_socket(host, job_path(stuck)))
        assert take(contract, JOB_ROUTE, last_one)["job"]["status"] == "running"
        command(contract, many, {"type": "subscribe", "job_id": stuck})
        assert take(contract, EVENTS_ROUTE, many)["job"]["status"] == "running"
        server.process.send_signal(signal.SIGTERM)
        goodbyes = {
            route: take_until_closed(contract, route, ws)[-1]
            for route, ws in ((JOB_ROUTE, last_one), (EVENTS_ROUTE, many), (STREAM_ROUTE, stream))
        }
        assert server.process.wait(60) == 0
    assert {route: message["type"] for route, message in goodbyes.items()} == dict.fromkeys(
        ROUTES, "server_restarting"
    )
    assert contract.close_codes == {
        JOB_ROUTE: {1000, 1001},
        EVENTS_ROUTE: {1001},
        STREAM_ROUTE: {1001},
    }
    assert_seen(contract, "gunicorn")


# -- the handshake's HTTP answers, sent raw to gunicorn in AUTH_MODE=keys ----------------

KEYED_ENV = {"AUTH_MODE": "keys", "SECRET_KEY": "s" * 32, "RATE_LIMIT": "1000/second"}
NONCE = base64.b64encode(b"sixteen bytes!!!").decode()
PATHS = {EVENTS_ROUTE: EVENTS_ROUTE, JOB_ROUTE: job_path("0" * 32), STREAM_ROUTE: STREAM_ROUTE}


def handshake(key: str | None = NONCE, version: str | None = "13") -> dict[str, str]:
    headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
    if key is not None:
        headers["Sec-WebSocket-Key"] = key
    if version is not None:
        headers["Sec-WebSocket-Version"] = version
    return headers


class Keyed:
    def __init__(self, url: str, admin: str, user: str) -> None:
        self.url, self.admin, self.user = url, admin, user
        self.contract = Contract(
            api(url, "GET", "/openapi.json", headers=self.bearer(admin)).json()
        )

    @staticmethod
    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def open(self, route: str, path: str | None = None) -> ClientConnection:
        """A socket on `route`, opened with a key that may (an admin's for the stream)."""
        key = self.admin if route == STREAM_ROUTE else self.user
        return connect(
            f"ws://{urlsplit(self.url).netloc}{path or PATHS[route]}",
            additional_headers=self.bearer(key),
            open_timeout=READ_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
            proxy=None,
        )

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, http.client.HTTPMessage, Any]:
        """A raw GET on a connection of its own (one that upgraded could not be reused)."""
        address = urlsplit(self.url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            return response.status, response.headers, json.loads(body) if body else None
        finally:
            connection.close()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> Iterator[Keyed]:
    tmp_path: Path = tmp_path_factory.mktemp("keyed")
    with gunicorn(tmp_path, KEYED_ENV) as server:
        cli_env = os.environ | KEYED_ENV
        cli_env |= {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
            "RESULTS_DIR": str(tmp_path / "results"),
        }
        admin = create_key(cli_env, "ops", "--admin")
        user = create_key(cli_env, "alice")
        yield Keyed(server.url, admin, user)


def assert_documented(
    keyed: Keyed, route: str, status: int, headers: http.client.HTTPMessage, body: Any
) -> dict[str, str]:
    """The answer is one the route documents, with its body's and headers' schemas; returns
    the error object."""
    responses = keyed.contract.document["paths"][route]["get"]["responses"]
    assert str(status) in responses, f"{route} answered {status}, which it does not document"
    assert headers.get_content_type() == "application/json"
    problems = keyed.contract.answer_problems(route, status, body)
    assert not problems, f"{route} {status}: {body}: {problems}"
    for name, header in responses[str(status)].get("headers", {}).items():
        if headers.get(name) is not None:
            validator = Draft202012Validator(header["schema"])
            assert validator.is_valid(headers[name]), f"{route} {status}: {name}: {headers[name]}"
    return body["error"]


BAD_HANDSHAKES = {
    "plain GET": ({}, None),
    "no Sec-WebSocket-Key": (handshake(key=None), "Sec-WebSocket-Key"),
    "a Sec-WebSocket-Key that is not base64": (handshake(key="not a nonce!"), "Sec-WebSocket-Key"),
    "a Sec-WebSocket-Key of 15 bytes": (
        handshake(key=base64.b64encode(b"fifteen bytes!!").decode()),
        "Sec-WebSocket-Key",
    ),
    "Sec-WebSocket-Version 12": (handshake(version="12"), "Sec-WebSocket-Version"),
    "no Sec-WebSocket-Version": (handshake(version=None), "Sec-WebSocket-Version"),
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", list(BAD_HANDSHAKES))
def test_a_bad_handshake_is_a_documented_400(keyed, route, case):
    headers, field = BAD_HANDSHAKES[case]
    status, answer, body = keyed.get(PATHS[route], headers | keyed.bearer(keyed.admin))
    assert status == 400, body
    error = assert_documented(keyed, route, status, answer, body)
    assert error["code"] == "bad_request" and "WebSocket" in error["message"]
    if field is None:  # not a handshake at all
        assert "fields" not in error and "Upgrade" not in answer
    else:
        assert list(error["fields"]) == [field]
    if field == "Sec-WebSocket-Version":
        assert answer["Sec-WebSocket-Version"] == "13"
    else:
        assert "Sec-WebSocket-Version" not in answer


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("credentials", ["none", "an unknown key"])
def test_a_handshake_without_a_valid_key_is_a_documented_401(keyed, route, credentials):
    headers = handshake() | ({} if credentials == "none" else keyed.bearer("gsk_unknown"))
    status, answer, body = keyed.get(PATHS[route], headers)
    assert status == 401, body
    error = assert_documented(keyed, route, status, answer, body)
    assert error["code"] == "unauthorized" and answer["WWW-Authenticate"].startswith("Bearer")


def test_a_key_that_is_not_an_admins_gets_a_documented_403_on_the_stream(keyed):
    status, answer, body = keyed.get(STREAM_ROUTE, handshake() | keyed.bearer(keyed.user))
    assert status == 403, body
    assert assert_documented(keyed, STREAM_ROUTE, status, answer, body)["code"] == "forbidden"


@pytest.mark.parametrize("route", ROUTES)
def test_a_good_handshake_switches_protocols_and_the_socket_conforms(keyed, route):
    with keyed.open(route) as ws:
        assert ws.response.status_code == 101
        assert "101" in keyed.contract.document["paths"][route]["get"]["responses"]
        if route == EVENTS_ROUTE:
            command(keyed.contract, ws, {"type": "subscribe", "job_id": "0" * 32})
        first = take(keyed.contract, route, ws)
    expected = {EVENTS_ROUTE: "error", JOB_ROUTE: "error", STREAM_ROUTE: "console"}[route]
    assert first["type"] == expected


@pytest.mark.parametrize("route", ROUTES)
def test_a_client_message_over_the_limit_closes_with_a_documented_code(keyed, route):
    admin, user = keyed.bearer(keyed.admin), keyed.bearer(keyed.user)
    path = None
    with ExitStack() as stack:
        if (
            route == JOB_ROUTE
        ):  # a job that stays queued (its machine drained): its socket stays open
            [machine] = api(keyed.url, "GET", "/api/v1/admin/machines", headers=admin).json()[
                "machines"
            ]
            machine_path = f"/api/v1/admin/machines/{machine['machine']}"
            assert api(keyed.url, "POST", machine_path + "/drain", headers=admin).ok
            stack.callback(api, keyed.url, "POST", machine_path + "/undrain", headers=admin)
            job = {"generator": "noop", "params": {}}
            answer = api(keyed.url, "POST", "/api/v1/jobs", json=job, headers=user)
            assert answer.status_code == 202, answer.text
            path = job_path(answer.json()["id"])
        ws = stack.enter_context(keyed.open(route, path))
        if route != EVENTS_ROUTE:
            take(keyed.contract, route, ws)  # the socket is being served
        ws.send("x" * 5000)  # the limit is 4096 bytes
        for message in receive_until_closed(ws):
            keyed.contract.check(route, message)
        assert keyed.contract.closed(route, close_code(ws)) == 1009


def masked(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final client frame (payload under 126 bytes), masked as RFC 6455 requires."""
    mask = b"\x01\x02\x03\x04"
    data = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + data


def server_close_code(received: bytes) -> int | None:
    """The code of the close frame among the (unmasked) frames a server sent."""
    while len(received) >= 2:
        opcode, length = received[0] & 0x0F, received[1] & 0x7F
        start = 2 + {126: 2, 127: 8}.get(length, 0)
        if length >= 126:
            length = int.from_bytes(received[2:start], "big")
        if opcode == 0x8:
            return int.from_bytes(received[start : start + 2], "big")
        received = received[start + length :]
    return None


PROTOCOL_ERRORS = {
    "an unmasked frame": (b"\x81\x02hi", 1002),
    "an unknown opcode": (masked(b"x", opcode=0x3), 1002),
    "text that is not UTF-8": (masked(b"\xff\xfe"), 1007),
}


@pytest.mark.parametrize("route", [EVENTS_ROUTE, STREAM_ROUTE])
@pytest.mark.parametrize("case", list(PROTOCOL_ERRORS))
def test_a_client_that_breaks_the_protocol_is_closed_with_a_documented_code(keyed, route, case):
    frame, expected = PROTOCOL_ERRORS[case]
    address = urlsplit(keyed.url)
    request = f"GET {PATHS[route]} HTTP/1.1\r\nHost: {address.netloc}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in (handshake() | keyed.bearer(keyed.admin)).items()
    )
    with socket.create_connection((address.hostname, address.port), timeout=READ_TIMEOUT) as raw:
        raw.sendall(request.encode() + b"\r\n")
        answer = raw.recv(4096)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        received = answer.split(b"\r\n\r\n", 1)[1]
        raw.sendall(frame)
        while chunk := raw.recv(4096):  # until the server ends the connection
            received += chunk
    assert keyed.contract.closed(route, server_close_code(received)) == expected
