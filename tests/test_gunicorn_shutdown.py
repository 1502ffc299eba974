"""SIGTERM to a real gunicorn with WebSockets open: goodbye, close 1001, prompt exit."""

import signal
import time
from contextlib import ExitStack

import requests

from .servers import gunicorn
from .wsclient import close_code, open_socket, receive, receive_until_closed, send


def test_sigterm_closes_open_sockets_with_1001_and_exits_promptly(tmp_path):
    with gunicorn(tmp_path, {"WEB_THREADS": "32"}) as server, ExitStack() as stack:
        host = server.url.removeprefix("http://")
        job = requests.post(
            f"{server.url}/api/v1/jobs",
            json={"generator": "images", "params": {"prompt": "bye", "count": 1, "width": 64}},
            timeout=10,
        ).json()
        sockets = [stack.enter_context(open_socket(host, "/api/v1/events")) for _ in range(3)]
        for ws in sockets:
            send(ws, {"type": "subscribe", "job_id": job["id"]})
            assert receive(ws)["type"] == "snapshot"  # served, then idle
        stopping = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        last_messages = [receive_until_closed(ws)[-1] for ws in sockets]
        codes = [close_code(ws) for ws in sockets]
        exit_code = server.process.wait(60)
        stopped_after = time.monotonic() - stopping
    assert [message["type"] for message in last_messages] == ["server_restarting"] * 3
    assert codes == [1001] * 3
    assert exit_code == 0
    # No job runs, so only the sockets could hold the stop: they must not hold it for
    # gunicorn's graceful timeout (30 s with the default drain).
    assert stopped_after < 10
