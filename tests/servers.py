"""Real servers for tests: gunicorn subprocesses with the deployment's configuration."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def gunicorn(
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 20,
    app: str | None = None,
) -> Iterator[Server]:
    """Run `gunicorn --config gunicorn.conf.py` on a free port with a private database;
    `app` replaces the configuration's `wsgi:app` (e.g. to add test generators)."""
    port = free_port()
    environment = (
        os.environ
        | {
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
            "RESULTS_DIR": str(tmp_path / "results"),
        }
        | dict(env or {})
    )
    command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"]
    command += ["--bind", f"127.0.0.1:{port}"] + ([app] if app else [])
    log_path = tmp_path / f"gunicorn-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group, so kill_hard() takes master and workers
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_until_ready(server, startup_timeout)
        yield server
    finally:
        stop(server)


def stop(server: Server, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if server.process.poll() is None:
        server.process.send_signal(sig)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def kill_hard(server: Server) -> None:
    """SIGKILL the master and every worker at once, as a crashed machine would."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()


def _wait_until_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{server.log()}")
        try:
            if requests.get(f"{server.url}/ready", timeout=1).status_code == 200:
                return
        except requests.RequestException:  # refused, or too slow while the machine is busy
            pass
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn not ready after {timeout}s:\n{server.log()}")
