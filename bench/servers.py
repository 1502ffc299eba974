"""Real gunicorn servers for the benchmarks: ours and the floor, on free loopback ports.

Both are started with the deployment's `gunicorn.conf.py` (the floor through
`floor_gunicorn_conf.py`, which copies every setting but the service hooks), from a
scratch working directory so a developer's `.env` cannot leak in. Every server is stopped
when its `with` block ends, even when a scenario fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .client import HttpClient

ROOT = Path(__file__).resolve().parent.parent
SERVICE_CONF = ROOT / "gunicorn.conf.py"
FLOOR_CONF = ROOT / "bench" / "floor_gunicorn_conf.py"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
# The service's own settings never come from the caller's shell: every run uses the
# deployment defaults plus what a scenario sets explicitly, so figures are comparable.
INHERITED_SETTINGS_DROPPED = (
    "GENERATION_",
    "WEB_",
    "DATABASE_",
    "RESULTS_",
    "JOB_",
    "LOG_LEVEL",
    "SENTRY_",
    "MAX_CONTENT_LENGTH",
)


# One small CPU-bound job per generation worker (see warm_up_workers).
WARM_UP_JOB = {"generator": "images", "params": {"prompt": "warm", "count": 1, "width": 64}}
TERMINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """One gunicorn master (and its workers) running in the background."""

    def __init__(self, name: str, conf: Path, env: Mapping[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(conf)]
            + ["--bind", f"127.0.0.1:{self.port}"],
            cwd=workdir,
            env=_environment(env, self.port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> HttpClient:
        return HttpClient(self.port)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self.log_path}")
            try:
                with self.client() as client:
                    if client.get("/health").status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer /health in {timeout}s; see {self.log_path}")

    def pids(self) -> list[int]:
        """The master and every process below it."""
        return [self.process.pid, *_descendants(self.process.pid)]

    def cpu_seconds(self) -> float:
        """User plus system CPU time used so far by the master and its live children."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended between listing and reading
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, as a deployment stops it (a graceful drain); SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def warm_up_workers(server: Server, workers: int = 2, timeout: float = 60.0) -> None:
    """Run one small CPU-bound job per generation worker and wait for them. In process
    isolation each worker's generation process imports the app when the service starts;
    until it is done it shares the CPU with whatever is measured next."""
    with server.client() as client:
        ids = [client.post("/api/v1/jobs", WARM_UP_JOB).body["id"] for _ in range(workers)]
        deadline = time.monotonic() + timeout
        for job_id in ids:
            while client.get(f"/api/v1/jobs/{job_id}").body["status"] not in TERMINAL:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"warm-up job {job_id} did not finish in {timeout}s")
                time.sleep(0.05)


@contextmanager
def serve(
    name: str,
    conf: Path,
    env: Mapping[str, str],
    workdir: Path,
    *,
    start_timeout: float = START_TIMEOUT,
) -> Iterator[Server]:
    server = Server(name, conf, env, workdir)
    try:
        server.wait_ready(start_timeout)
        yield server
    finally:
        server.stop()


@contextmanager
def service_server(
    database_url: str,
    workdir: Path,
    *,
    name: str = "service",
    start_timeout: float = START_TIMEOUT,
    **settings: object,
) -> Iterator[Server]:
    """Our app with the deployment's settings, on `database_url`; `settings` are extra
    environment variables such as GENERATION_QUEUE_SIZE=5000. `start_timeout`: for a
    service that reads a deep queue at start."""
    env = {
        "DATABASE_URL": database_url,
        "RESULTS_DIR": str(workdir.resolve() / f"results-{name}"),
        **{key: str(value) for key, value in settings.items()},
    }
    with serve(name, SERVICE_CONF, env, workdir, start_timeout=start_timeout) as server:
        yield server


@contextmanager
def floor_server(workdir: Path) -> Iterator[Server]:
    """The trivial Flask app on the same gunicorn settings."""
    with serve("floor", FLOOR_CONF, {}, workdir) as server:
        yield server


def runs_beside_floor(
    workdir: Path,
    backends: Sequence[str],
    repeat: int,
    measure: Callable[[Server, str, Path], dict[str, Any]],
) -> dict[str, list[dict[str, Any]]]:
    """Each backend's `repeat` runs of `measure(floor, backend, scratch folder)`, all with
    one floor server, so that every run can measure the floor right beside ours."""
    with floor_server(workdir) as floor:
        return {
            backend: [
                measure(floor, backend, workdir / f"{backend}-{attempt}")
                for attempt in range(repeat)
            ]
            for backend in backends
        }


def _environment(extra: Mapping[str, str], port: int) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(INHERITED_SETTINGS_DROPPED)
    }
    env.update(extra)
    env["PORT"] = str(port)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        below = children.get(pending.pop(), [])
        found.extend(below)
        pending.extend(below)
    return found
