"""/health latency while every generation worker is busy with CPU work: threads vs processes.

The question: does CPU-bound generation starve the threads that answer HTTP? For each
GENERATION_CPU_ISOLATION mode and each kind of load, start the real service (gunicorn
with the deployment's settings), time sequential GET /health idle, then again while
every worker runs CPU-bound jobs (the queue stays full; /status confirms every worker
stayed busy). Two loads, because they differ in how they hold the GIL:

  images      the built-in: 1024x1024 PNGs; numpy and zlib release the GIL while they work
  spirograph  examples/spirograph (pip-installed for the run): pure-Python maths, GIL held

The floor is a trivial Flask /health on the same gunicorn settings, in the same run.
Figures are milliseconds; ratios compare p99s.

    python bench/web_latency.py                 # prints a table
    python bench/web_latency.py --json out.json # and writes the figures

The machine is shared and noisy: compare ratios from one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = PROJECT_ROOT / "examples" / "spirograph"
LOADS = {
    "images": {
        "generator": "images",
        "params": {"prompt": "load", "count": 16, "width": 1024, "height": 1024},
    },
    "spirograph": {
        "generator": "spirograph",
        "params": {"count": 12, "size": 2048, "detail": 3600},
    },
}
FLOOR_APP = """
from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/health")
def health():
    return jsonify(status="ok")
"""
# The deployment's gunicorn settings, without the hooks that start the generation service.
FLOOR_CONF = """
import runpy

_deployment = runpy.run_path({conf!r})
globals().update(
    (name, value)
    for name, value in _deployment.items()
    if not name.startswith("_") and name not in ("post_worker_init", "worker_exit")
)
wsgi_app = "floor_app:app"
"""


def run(
    *,
    requests: int = 1000,
    workers: int = 2,
    web_threads: int = 8,
    modes: tuple[str, ...] = ("thread", "process"),
    loads: tuple[str, ...] = ("images", "spirograph"),
    jobs: int = 40,
    max_seconds: float = 60.0,
) -> dict[str, Any]:
    """Measure and return the figures (see the module docstring)."""
    common = {"GENERATION_WORKERS": str(workers), "WEB_THREADS": str(web_threads)}
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as scratch:
        root = Path(scratch)
        install_example(root / "site")
        (root / "site" / "floor_app.py").write_text(FLOOR_APP)
        floor_conf = root / "floor.conf.py"
        floor_conf.write_text(FLOOR_CONF.format(conf=str(PROJECT_ROOT / "gunicorn.conf.py")))
        with gunicorn(root / "floor", common, floor_conf) as (url, _):
            floor = latency(url, requests, max_seconds)
        rows = []
        for load in loads:
            for mode in modes:
                env = common | {"GENERATION_CPU_ISOLATION": mode}
                with gunicorn(root / f"{load}-{mode}", env) as (url, group):
                    row = measure(url, LOADS[load], requests, jobs, workers, max_seconds)
                    row["rss_mb"] = round(group_rss_bytes(group) / 2**20, 1)
                row = {"load": load, "mode": mode} | row
                row["ratio_p99_loaded_to_floor"] = round(
                    row["loaded"]["p99_ms"] / floor["p99_ms"], 2
                )
                rows.append(row)
    return {
        "benchmark": "web_latency",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"requests": requests, "workers": workers, "web_threads": web_threads},
        "loads": {name: LOADS[name] for name in loads},
        "floor": floor,
        "results": rows,
    }


def measure(
    url: str, load: dict[str, Any], requests: int, jobs: int, workers: int, max_seconds: float
) -> dict[str, Any]:
    warm_up(url, workers)
    idle = latency(url, requests, max_seconds)
    for _ in range(jobs):
        call(url, "POST", "/api/v1/jobs", load, 202)
    wait_until_working(url, workers)
    busy_before = status(url)["active_workers"]
    loaded = latency(url, requests, max_seconds)
    after = status(url)
    return {
        "idle": idle,
        "loaded": loaded,
        "ratio_p99_loaded_to_idle": round(loaded["p99_ms"] / idle["p99_ms"], 2),
        # Every worker was busy before and after, with jobs still queued: the load held.
        "load_sustained": busy_before == after["active_workers"] == workers
        and after["queue_size"] > 0,
    }


def install_example(site: Path) -> None:
    """pip-install examples/spirograph into `site` (offline; needs setuptools)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(site), str(EXAMPLE)],
        check=True,
        cwd=site.parent,
    )  # fmt: skip


def latency(url: str, count: int, max_seconds: float) -> dict[str, float]:
    """Time `count` sequential GET /health on one keep-alive connection."""
    connection = http.client.HTTPConnection(*_host_port(url), timeout=30)
    samples = []
    deadline = time.monotonic() + max_seconds
    try:
        for _ in range(20):  # warm the connection and the server's code paths
            get(connection, "/health")
        while len(samples) < count and time.monotonic() < deadline:
            started = time.perf_counter()
            get(connection, "/health")
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()
    return summarise(samples)


def summarise(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def get(connection: http.client.HTTPConnection, path: str) -> bytes:
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}: {body[:200]!r}")
    return body


def call(url: str, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    """One JSON request on a fresh connection."""
    connection = http.client.HTTPConnection(*_host_port(url), timeout=30)
    try:
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status != expect:
        raise RuntimeError(f"{method} {path} answered {response.status}: {data[:200]!r}")
    return json.loads(data)


def status(url: str) -> dict[str, Any]:
    return call(url, "GET", "/status")["generation_service"]


def warm_up(url: str, workers: int, settle_seconds: float = 2.0) -> None:
    """Run a few tiny jobs so that worker processes have started (spawning imports the
    app: a second of CPU each), then let the machine settle before timing anything."""
    tiny = {"prompt": "warm", "count": 1, "width": 64, "height": 64}
    for _ in range(2 * workers):
        call(url, "POST", "/api/v1/jobs", {"generator": "images", "params": tiny}, 202)
    deadline = time.monotonic() + 60
    while status(url)["completed_requests"] < 2 * workers:
        if time.monotonic() > deadline:
            raise RuntimeError("warm-up jobs did not finish within 60s")
        time.sleep(0.1)
    time.sleep(settle_seconds)


def wait_until_working(url: str, workers: int, timeout: float = 60) -> None:
    """Until every worker runs a job that has reported progress past 0 (so any worker
    process has finished starting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = call(url, "GET", "/api/v1/jobs?status=running")["jobs"]
        if len([job for job in running if job["progress"]["percent"] > 0]) >= workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"workers were not all rendering after {timeout}s")


# -- servers ------------------------------------------------------------------------


@contextmanager
def gunicorn(
    workdir: Path, env: Mapping[str, str], conf: Path = PROJECT_ROOT / "gunicorn.conf.py"
) -> Iterator[tuple[str, int]]:
    """gunicorn with the deployment's gunicorn.conf.py (or another configuration);
    yields its URL and its process group."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    environment = (
        os.environ
        | {
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{workdir / 'jobs.db'}",
            "RESULTS_DIR": str(workdir / "results"),
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join([str(workdir.parent / "site"), str(PROJECT_ROOT)]),
        }
        | dict(env)
    )
    command = [sys.executable, "-m", "gunicorn", "--config", str(conf)]
    log = (workdir / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        # Its own process group (one signal stops master, workers, children), but in this
        # client's session: autogroup scheduling weighs sessions against each other, so in
        # a session of its own the server's generation processes delayed the client's
        # wake-ups, as they never delay a remote client's (docs/performance.md).
        process_group=0,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process)
        yield url, process.pid
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # jobs are disposable here; no drain needed
        process.wait()
        log.close()


def group_rss_bytes(group: int) -> int:
    """Resident memory of every process in a process group (master, workers, children)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early ({process.returncode})")
        try:
            connection = http.client.HTTPConnection(*_host_port(url), timeout=1)
            get(connection, "/health")
            connection.close()
            return
        except (OSError, RuntimeError, http.client.HTTPException):
            time.sleep(0.05)
    raise RuntimeError(f"gunicorn did not answer within {timeout}s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def report(figures: dict[str, Any]) -> str:
    settings, floor = figures["settings"], figures["floor"]
    lines = [
        f"GET /health, {settings['requests']} sequential requests per phase; "
        f"{settings['workers']} generation workers; {figures['machine']['cpus']} CPUs",
        f"{'':28}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'p99 vs idle':>13}{'vs floor':>10}",
        f"{'floor (trivial Flask)':28}{floor['p50_ms']:>8}{floor['p99_ms']:>8}{floor['max_ms']:>8}",
    ]
    for row in figures["results"]:
        for phase in ("idle", "loaded"):
            cells = row[phase]
            line = f"{row['load'] + ', ' + row['mode'] + ', ' + phase:28}"
            line += f"{cells['p50_ms']:>8}{cells['p99_ms']:>8}{cells['max_ms']:>8}"
            if phase == "loaded":
                line += f"{row['ratio_p99_loaded_to_idle']:>12}x"
                line += f"{row['ratio_p99_loaded_to_floor']:>9}x"
                line += "" if row["load_sustained"] else "  (load ran out!)"
            lines.append(line)
    memory = ", ".join(f"{r['load']}/{r['mode']} {r['rss_mb']} MB" for r in figures["results"])
    lines.append(f"resident memory of the server's process group: {memory}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="thread,process")
    parser.add_argument("--loads", default="images,spirograph")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = run(
        requests=args.requests,
        workers=args.workers,
        modes=tuple(args.modes.split(",")),
        loads=tuple(args.loads.split(",")),
    )
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
