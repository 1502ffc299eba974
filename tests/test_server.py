"""Against a real gunicorn server: a burst into a small queue, a client that hangs up in
the middle of a download, a chunked body that is too large, keys over real HTTP."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from app.generation.intake.keys import KeyStore, Tier
from app.generation.store.engine import create_database_engine

from .servers import Server, gunicorn

APP = "tests.wsgi_with_test_generators:app"

CAPACITY = 5
BURST = 40


def wait_for_status(server: Server, job_id: str, statuses: set[str], headers=None) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = requests.get(f"{server.url}/api/v1/jobs/{job_id}", headers=headers, timeout=5).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {job['status']}")


def gated_job(gate: Path, tag: int) -> dict:
    return {"generator": "wait_file", "params": {"path": str(gate), "tag": tag}}


def test_a_burst_fills_the_queue_exactly_and_refuses_the_rest(tmp_path):
    gate = tmp_path / "open-the-gate"
    settings = {"GENERATION_QUEUE_SIZE": str(CAPACITY), "GENERATION_WORKERS": "1"}
    with gunicorn(tmp_path, settings | {"WEB_THREADS": "48"}, app=APP) as server:
        submit = f"{server.url}/api/v1/jobs"
        blocker = requests.post(submit, json=gated_job(gate, -1), timeout=10).json()
        wait_for_status(server, blocker["id"], {"running"})  # the one worker is now busy
        barrier = threading.Barrier(BURST)

        def post(tag: int) -> requests.Response:
            with requests.Session() as session:
                barrier.wait()
                return session.post(submit, json=gated_job(gate, tag), timeout=30)

        with ThreadPoolExecutor(BURST) as pool:
            answers = list(pool.map(post, range(BURST)))

        accepted = [r.json()["id"] for r in answers if r.status_code == 202]
        refused = [r for r in answers if r.status_code != 202]
        assert len(accepted) == CAPACITY
        assert len(refused) == BURST - CAPACITY
        for response in refused:
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "queue_full"
            assert int(response.headers["Retry-After"]) >= 1

        gate.touch()
        for job_id in [blocker["id"], *accepted]:
            assert wait_for_status(server, job_id, {"succeeded", "failed"})["status"] == "succeeded"
        stats = requests.get(f"{server.url}/status", timeout=5).json()["generation_service"]
        assert stats["total_requests"] == stats["completed_requests"] == CAPACITY + 1
        assert stats["queue_size"] == 0


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def worker_pids(server: Server) -> list[int]:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def open_result_files(server: Server) -> list[str]:
    paths = []
    for pid in worker_pids(server):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except FileNotFoundError:  # closed while we looked
                continue
            if target.endswith(".zip"):
                paths.append(target)
    return paths


def hang_up_mid_download(server: Server, path: str) -> list[str]:
    """Read the start of a download through a tiny window, then reset the connection.
    Returns the result files the server had open while the download was under way."""
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port_of(server)))
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        assert client.recv(65536).startswith(b"HTTP/1.1 200")
        open_during = open_result_files(server)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return open_during


def test_a_client_that_hangs_up_mid_download_costs_nothing(tmp_path):
    with gunicorn(tmp_path, app=APP) as server:
        submit = f"{server.url}/api/v1/jobs"
        job = requests.post(submit, json={"generator": "blob", "params": {"megabytes": 64}})
        done = wait_for_status(server, job.json()["id"], {"succeeded"})
        result = done["result"]["url"]

        for _ in range(3):
            assert hang_up_mid_download(server, result)  # the download held the file open
        deadline = time.monotonic() + 10
        while open_result_files(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_result_files(server) == []  # every abandoned download closed its file

        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
        with requests.get(f"{server.url}{result}", stream=True, timeout=30) as full:
            size = sum(len(chunk) for chunk in full.iter_content(1 << 20))
        assert size == done["result"]["bytes"]
        follower = requests.post(submit, json={"generator": "record", "params": {"tag": 1}})
        assert wait_for_status(server, follower.json()["id"], {"succeeded"})


def test_an_oversize_chunked_body_is_413_on_a_real_server(tmp_path):
    with gunicorn(tmp_path, {"MAX_CONTENT_LENGTH": "2048"}, app=APP) as server:
        chunks = iter([b'{"generator": "record", "params": {"pad": "', b"x" * 4096, b'"}}'])
        response = requests.post(f"{server.url}/api/v1/jobs", data=chunks, timeout=10)
        assert response.request.headers["Transfer-Encoding"] == "chunked"
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert requests.get(f"{server.url}/api/v1/jobs", timeout=5).json()["jobs"] == []


def test_keys_mode_over_real_http(tmp_path):
    settings = {"AUTH_MODE": "keys", "SECRET_KEY": "k" * 32}
    with gunicorn(tmp_path, settings, app=APP) as server:
        engine = create_database_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
        _, key = KeyStore(engine).create("alice", Tier.FREE)
        engine.dispose()
        submit = f"{server.url}/api/v1/jobs"
        body = {"generator": "record", "params": {"tag": 1}}
        refused = requests.post(submit, json=body, timeout=5)
        assert refused.status_code == 401 and "Bearer" in refused.headers["WWW-Authenticate"]
        alice = {"Authorization": f"Bearer {key}"}
        accepted = requests.post(submit, json=body, headers=alice, timeout=5)
        assert accepted.status_code == 202 and accepted.json()["priority"] == "low"
        assert wait_for_status(server, accepted.json()["id"], {"succeeded"}, alice)
        token = requests.post(f"{server.url}/api/v1/tokens", headers=alice, timeout=5).json()
        assert token["expires_in"] == 60 and token["token"]
