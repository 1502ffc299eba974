"""Separate service processes (tests/cluster_node.py) on one PostgreSQL database, each with
its own results folder: one queue in priority order, each job executed once, events seen
from any process, nothing lost to kill -9 or to the database dropping every connection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, text

from app.generation.notify.signing import new_secret
from app.generation.store.tables import JobRow

from .webhook_receiver import receiving
from .wsclient import open_socket, receive_until

ROOT = Path(__file__).resolve().parent.parent
jobs = JobRow.__table__


@dataclass
class Node:
    name: str
    process: subprocess.Popen[str]
    url: str

    def submit(self, tag: str, priority: str = "normal", **params: object) -> requests.Response:
        body = {"generator": "count", "params": {"job": tag, **params}, "priority": priority}
        return requests.post(f"{self.url}/api/v1/jobs", json=body, timeout=10)

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")


@pytest.fixture
def executions(tmp_path: Path) -> Path:
    return tmp_path / "executions.log"


@pytest.fixture
def start_node(
    postgres_url: str, pg_engine, tmp_path: Path, executions: Path
) -> Iterator[Callable[..., Node]]:
    """Start service processes; every one is stopped at the end, even on failure."""
    nodes: list[Node] = []

    def start(name: str, **settings: object) -> Node:
        env = os.environ | {
            "DATABASE_URL": postgres_url,
            "RESULTS_DIR": str(tmp_path / name),
            "EXECUTIONS_FILE": str(executions),
            "GENERATION_WORKERS": "2",
            "GENERATION_QUEUE_SIZE": "1000",
        }
        env |= {key: str(value) for key, value in settings.items()}
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster_node", name],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        nodes.append(node := Node(name, process, ""))
        ready = process.stdout.readline().split()
        assert ready[:1] == ["READY"], f"node {name} did not start"
        node.url = f"http://127.0.0.1:{ready[1]}"
        return node

    yield start
    for node in nodes:
        node.process.terminate()
    for node in nodes:
        try:
            node.process.wait(15)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
        node.process.stdout.close()


def statuses(engine) -> Counter[str]:
    with engine.connect() as connection:
        rows = connection.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
        return Counter(dict(rows.all()))


def wait_until_finished(engine, count: int, timeout: float) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen = statuses(engine)
        except Exception:  # noqa: BLE001 - the database may be dropping connections
            seen = Counter()
        if sum(seen[s] for s in ("succeeded", "failed", "cancelled")) >= count:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"jobs not finished after {timeout}s: {seen}")


def executed(executions: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in executions.read_text().splitlines()]


def test_two_processes_run_500_jobs_each_exactly_once(start_node, pg_engine, executions):
    nodes = [start_node("a"), start_node("b")]
    with ThreadPoolExecutor(8) as clients:
        answers = clients.map(lambda n: nodes[n % 2].submit(f"job{n}").status_code, range(500))
        assert set(answers) == {202}
    assert wait_until_finished(pg_engine, 500, timeout=120) == Counter(succeeded=500)
    runs = executed(executions)
    assert sorted(Counter(tag for tag, _ in runs).values()) == [1] * 500
    assert {node for _, node in runs} == {"a", "b"}  # both shared the one queue


def wait_for_status(engine, status: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while statuses(engine)[status] < count:
        assert time.monotonic() < deadline, f"fewer than {count} jobs {status}"
        time.sleep(0.05)


def test_priority_holds_across_processes(start_node, pg_engine, executions, tmp_path):
    a = start_node("a", GENERATION_WORKERS=1)
    go, never = tmp_path / "go", tmp_path / "never"
    assert a.submit("blocker-a", until=str(go)).status_code == 202
    wait_for_status(pg_engine, "running", 1)
    b = start_node("b", GENERATION_WORKERS=1)
    assert b.submit("blocker-b", until=str(never)).status_code == 202
    wait_for_status(pg_engine, "running", 2)  # both workers busy: the rest waits
    for node, tag, priority in [
        (b, "low1", "low"),
        (a, "normal1", "normal"),
        (b, "normal2", "normal"),
        (a, "low2", "low"),
    ]:
        assert node.submit(tag, priority).status_code == 202
    go.touch()  # a's only worker is the cluster's only free one: it takes jobs in order
    wait_until_finished(pg_engine, 5, timeout=30)  # (open mode allows up to normal)
    runs = [tag for tag, node in executed(executions) if not tag.startswith("blocker")]
    assert runs == ["normal1", "normal2", "low1", "low2"]
    never.touch()


def test_a_websocket_on_one_process_follows_a_job_running_on_another(
    start_node, pg_engine, tmp_path
):
    a = start_node("a", GENERATION_WORKERS=1)
    go = tmp_path / "go"
    assert a.submit("blocker", until=str(go)).status_code == 202  # a runs nothing else
    wait_for_status(pg_engine, "running", 1)
    b = start_node("b", GENERATION_WORKERS=1)
    job = b.submit("watched", until=str(tmp_path / "start"), steps=4, ms=400).json()
    wait_for_status(pg_engine, "running", 2)
    with pg_engine.connect() as connection:
        worker = connection.execute(select(jobs.c.worker).where(jobs.c.id == job["id"]))
        assert worker.scalar_one().startswith("b/")
    with open_socket(a.host, f"/api/v1/jobs/{job['id']}/events") as ws:
        (tmp_path / "start").touch()
        messages = receive_until(ws, lambda m: m["type"] in {"succeeded", "failed"}, 30)
    go.touch()
    kinds = [message["type"] for message in messages]
    assert kinds[0] == "snapshot" and kinds[-1] == "succeeded"
    assert messages[0]["job"]["status"] == "running"
    progress = [m["percent"] for m in messages if m["type"] == "progress"]
    assert progress and progress[-1] == 100.0


def test_kill_9_of_one_process_its_jobs_complete_on_the_other(
    start_node, pg_engine, executions, tmp_path
):
    release = tmp_path / "release"  # the jobs on a wait for it: a dies before it appears
    a = start_node("a", JOB_LEASE_SECONDS=2)
    for n in range(2):
        assert a.submit(f"slow{n}", until=str(release)).status_code == 202
    deadline = time.monotonic() + 10
    while statuses(pg_engine)["running"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    b = start_node("b", JOB_LEASE_SECONDS=2)
    for n in range(4):
        assert b.submit(f"queued{n}", ms=50).status_code == 202
    a.process.send_signal(signal.SIGKILL)
    a.process.wait()
    release.touch()
    assert wait_until_finished(pg_engine, 6, timeout=60) == Counter(succeeded=6)
    with pg_engine.connect() as connection:
        rows = connection.execute(select(jobs.c.params, jobs.c.attempts)).all()
    attempts = {row.params["job"]: row.attempts for row in rows}
    assert attempts["slow0"] == attempts["slow1"] == 2
    runs = executed(executions)
    for tag in ("slow0", "slow1"):
        assert [node for job, node in runs if job == tag] == ["a", "b"]  # a died; b finished


def test_database_dropping_every_connection_loses_nothing(start_node, pg_engine, executions):
    nodes = [start_node("a"), start_node("b")]
    accepted: list[str] = []
    for n in range(100):
        if nodes[n % 2].submit(f"before{n}", ms=20, steps=2).status_code == 202:
            accepted.append(f"before{n}")
    stop = threading.Event()
    kills = 0

    def restart_database_repeatedly() -> None:
        nonlocal kills
        while kills < 10 and not stop.wait(0.3):
            with pg_engine.connect() as connection:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            kills += 1

    chaos = threading.Thread(target=restart_database_repeatedly)
    chaos.start()
    try:
        for n in range(100):
            try:
                if nodes[n % 2].submit(f"during{n}", ms=20, steps=2).status_code == 202:
                    accepted.append(f"during{n}")
            except requests.ConnectionError:
                pass
            time.sleep(0.02)
    finally:
        chaos.join(30)
        stop.set()
    assert kills == 10
    wait_until_finished(pg_engine, len(accepted), timeout=120)
    with pg_engine.connect() as connection:
        rows = connection.execute(select(jobs.c.params, jobs.c.status)).all()
    outcome = {row.params["job"]: row.status for row in rows}
    assert {tag: outcome.get(tag) for tag in accepted} == dict.fromkeys(accepted, "succeeded")
    assert set(accepted) <= {tag for tag, _ in executed(executions)}
    for node in nodes:
        assert requests.get(f"{node.url}/ready", timeout=5).status_code == 200


def test_two_processes_send_each_webhook_once(start_node, pg_engine):
    """Both processes claim from one outbox (SKIP LOCKED): every delivery is sent, and
    none twice, while slow answers keep attempts in flight on both."""
    secret = new_secret()
    settings = {
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_SECRET": secret,
        "WEBHOOK_RETRY_DELAYS": "0.2",
    }
    nodes = [start_node("one", **settings), start_node("two", **settings)]
    with receiving() as receiver:
        receiver.answer = lambda message: (time.sleep(0.05), 204)[1]
        for n in range(30):
            body = {
                "generator": "count",
                "params": {"job": f"hook-{n}"},
                "webhook": receiver.url,
                "webhook_events": ["started", "completed"],
            }
            response = requests.post(f"{nodes[n % 2].url}/api/v1/jobs", json=body, timeout=10)
            assert response.status_code == 202, response.text
        messages = receiver.wait_for(60, timeout=60)
        time.sleep(1)  # anything sent twice would have arrived by now
    assert len(receiver.messages) == 60 and len({m.id for m in messages}) == 60
    types = Counter(m.verified(secret)["type"] for m in messages)
    assert types == {"job.started": 30, "job.completed": 30}
