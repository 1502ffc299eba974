"""Live fan-out: many WebSocket subscribers on one gunicorn process, /health alongside.

What it measures, on the real gunicorn settings (gunicorn.conf.py) of one process:

1. the floor: /health latency with no socket open (a trivial Flask endpoint, same server);
2. `subscribers` sockets following `jobs` running jobs that each report progress every
   `interval` seconds: how many sockets got in, how many got every job's outcome, how
   many progress events arrived, and how late (publish to receipt);
3. /health latency while that goes on, from a separate process, and its ratio to the floor;
4. the worker's resident memory and thread count at the peak;
5. /health latency and server CPU in each of three phases, which cost differently:
   "connect" (every socket opening, 50 handshakes at a time), "stream" (until the first
   outcome arrives) and "outcomes" (the jobs end together: every socket gets its outcome
   and closes at once).

Clients and server share the machine (2 cores here, and other work runs on it), so read
the figures as ratios and orders of magnitude, not as absolutes.

    python -m bench.ws_fanout --subscribers 500
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.config import Config

PROJECT = Path(__file__).resolve().parent.parent
PROBE_INTERVAL = 0.02
FLOOR_SECONDS = 5.0
CONNECT_BATCH = 50


def run(
    subscribers: int = 500,
    jobs: int = 4,
    ticks: int = 150,
    interval: float = 0.1,
    web_threads: int | None = None,
    worker_class: str | None = None,
    max_connections: int | None = None,
    update_interval_ms: int | None = None,
    endpoint: str = "job",
    trace: str | None = None,
) -> dict[str, Any]:
    """Run one fan-out measurement and return its figures (see the module docstring).

    `endpoint` is "job" (one `/jobs/<id>/events` socket per subscriber) or "multiplexed"
    (`/events`, subscribing to one job). Settings left None keep the app's defaults.
    `trace`: a file to write each /health probe's (start time, ms) and each socket's
    outcome receipt time to, to see when during a run the slow requests happen.
    """
    env = {"GENERATION_WORKERS": str(jobs)}
    if web_threads is not None:
        env["WEB_THREADS"] = str(web_threads)
    if max_connections is not None:
        env["WS_MAX_CONNECTIONS"] = str(max_connections)
    if update_interval_ms is not None:
        env["WS_UPDATE_INTERVAL_MS"] = str(update_interval_ms)
    load_before = os.getloadavg()[0]
    workdir = tempfile.TemporaryDirectory(prefix="ws-fanout-")
    with workdir as work, _Server(work, env, worker_class) as server:
        floor = _probe_for(server.url, FLOOR_SECONDS)
        warmup = 3.0 + subscribers / 100  # time for every socket to connect first
        job_ids = [server.submit(ticks, interval, warmup) for _ in range(jobs)]
        probe = HealthProbe(server.url)
        server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
        phases = _Phases(server.cpu_seconds, subscribers)
        fanout = asyncio.run(_fan_out(server.host, job_ids, subscribers, endpoint, phases))
        server_cpu, client_cpu = server.cpu_seconds() - server_cpu, time.process_time() - client_cpu
        phases.mark("end")
        loaded = probe.stop()
        if trace:
            outcomes = sorted(t for t in fanout.pop("outcome_times") if t)
            Path(trace).write_text(json.dumps({"health": probe.samples, "outcomes": outcomes}))
        fanout.pop("outcome_times", None)
        status = server.status()
        peak = server.peak
    return {
        "subscribers": subscribers,
        "endpoint": endpoint,
        "jobs": jobs,
        "events_per_job": ticks,
        "event_interval_s": interval,
        "worker_class": worker_class or "gthread",
        "web_threads": status["web_threads"],
        "websocket_capacity": status["websockets"]["capacity"],
        "update_interval_ms": (
            update_interval_ms if update_interval_ms is not None else Config.ws_update_interval_ms
        ),
        **fanout,
        "health_floor_ms": floor,
        "health_loaded_ms": loaded,
        "health_p99_ratio": round(loaded["p99"] / floor["p99"], 1) if floor["p99"] else None,
        "phases": phases.summary(probe.samples),
        "server_cpu_seconds": round(server_cpu, 1),
        "client_cpu_seconds": round(client_cpu, 1),
        "server_cpu_us_per_event": _per_event(server_cpu, fanout),
        "worker_peak_rss_mb": peak["rss_mb"],
        "worker_peak_threads": peak["threads"],
        "cpus": os.cpu_count(),
        "load_average_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "note": "clients, probe and server share this machine; compare ratios, not absolutes",
    }


class _Phases:
    """Splits a run at the moments every socket has its first message ("connect" ends),
    the first outcome arrives ("stream" ends) and the last does ("outcomes" ends), and
    reports each phase's length, server CPU, progress messages and /health latency: the
    connection storm, the steady stream and the burst of outcomes and closes cost
    differently."""

    def __init__(self, server_cpu: Any, subscribers: int) -> None:
        self._server_cpu = server_cpu
        self._waiting = subscribers
        self.messages = 0
        self._marks: list[tuple[str, float, float, int]] = []
        self.mark("start")

    def mark(self, name: str) -> None:
        if name not in (m[0] for m in self._marks):
            self._marks.append((name, time.time(), self._server_cpu(), self.messages))

    def settled(self) -> None:
        """A socket got its first message, or failed."""
        self._waiting -= 1
        if self._waiting == 0:
            self.mark("connected")

    def summary(self, health: list[tuple[float, float]]) -> dict:
        phases = {}
        names = {"connected": "connect", "first_outcome": "stream", "end": "outcomes"}
        for (_, start, cpu, messages), (name, end, cpu_end, messages_end) in pairwise(self._marks):
            sent = messages_end - messages
            latencies = sorted(ms for at, ms in health if start <= at < end)
            phases[names.get(name, name)] = {
                "seconds": round(end - start, 2),
                "server_cpu_seconds": round(cpu_end - cpu, 2),
                "progress_messages": sent,
                "server_cpu_us_per_message": round((cpu_end - cpu) / sent * 1e6) if sent else None,
                "health_ms": _percentiles(latencies),
            }
        return phases


async def _fan_out(
    host: str, job_ids: list[str], subscribers: int, endpoint: str, phases: _Phases
) -> dict:
    handshakes = asyncio.Semaphore(CONNECT_BATCH)  # paces connecting, not following
    results = await asyncio.gather(
        *(
            _subscriber(host, job_ids[n % len(job_ids)], endpoint, handshakes, phases)
            for n in range(subscribers)
        )
    )
    return _summarise(results)


async def _subscriber(
    host: str, job_id: str, endpoint: str, handshakes: asyncio.Semaphore, phases: _Phases
) -> dict:
    """Follow one job to its outcome, timing each progress event."""
    url = f"ws://{host}/api/v1/" + (f"jobs/{job_id}/events" if endpoint == "job" else "events")
    outcome = {"latencies": [], "terminal": None, "late": False, "refused": False, "error": None}
    settled = False
    try:
        async with handshakes:
            ws = await connect(url, proxy=None, open_timeout=60, max_queue=None)
        async with ws:
            if endpoint != "job":
                await ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
            async for raw in ws:
                message = json.loads(raw)
                kind = message["type"]
                if not settled:
                    settled = True
                    phases.settled()
                if kind == "progress":
                    phases.messages += 1
                    outcome["latencies"].append(time.time() - float(message["message"]))
                elif kind == "snapshot":  # late: the job had begun reporting already
                    job = message["job"]
                    outcome["late"] = job["progress"]["percent"] > 0 or job["result"] is not None
                elif kind == "error":
                    outcome["refused"] = message["error"]["code"] == "unavailable"
                elif kind in ("succeeded", "failed", "cancelled"):
                    outcome["terminal"] = time.time()
                    phases.mark("first_outcome")
                    break
    except (OSError, ConnectionClosed, InvalidStatus, TimeoutError) as error:
        outcome["error"] = type(error).__name__
    if not settled:
        phases.settled()
    return outcome


def _summarise(results: list[dict]) -> dict:
    latencies = sorted(ms for r in results for ms in (x * 1000 for x in r["latencies"]))
    served = [r for r in results if not r["refused"] and not r["error"]]
    return {
        "sockets_served": len(served),
        "sockets_subscribed_late": sum(r["late"] for r in served),
        "sockets_refused": sum(r["refused"] for r in results),
        "socket_errors": sum(bool(r["error"]) for r in results),
        "outcome_received": sum(bool(r["terminal"]) for r in served),
        "every_served_socket_got_its_outcome": all(r["terminal"] for r in served),
        "outcome_times": [r["terminal"] for r in results],
        "progress_events_received": len(latencies),
        "delivery_ms": _percentiles(latencies),
    }


class HealthProbe:
    """GET /health every PROBE_INTERVAL seconds from another process (not slowed by the
    clients' event loop), each over a fresh connection as a load balancer would."""

    def __init__(self, url: str) -> None:
        context = multiprocessing.get_context("spawn")
        ready, self._stop = context.Event(), context.Event()
        self._results = context.Queue()
        self._process = context.Process(
            target=_probe_loop, args=(url, ready, self._stop, self._results)
        )
        self._process.start()
        # A spawned process imports for a while (seconds on a loaded machine): time from
        # its first request, not from its start.
        if not ready.wait(120):
            raise RuntimeError("the /health probe process did not start")

    def stop(self) -> dict:
        self._stop.set()
        samples, errors = self._results.get(timeout=60)
        self._process.join(10)
        self.samples = samples
        return _percentiles(sorted(ms for _, ms in samples)) | {"errors": errors}


def _probe_for(url: str, seconds: float) -> dict:
    probe = HealthProbe(url)
    time.sleep(seconds)
    return probe.stop()


def _probe_loop(url: str, ready: Any, stop: Any, results: Any) -> None:
    host, port = url.removeprefix("http://").split(":")
    latencies, errors = [], 0
    ready.set()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.request("GET", "/health")
            ok = connection.getresponse().status == 200
            connection.close()
        except OSError:
            ok = False
        elapsed = time.perf_counter() - started
        if ok:
            latencies.append((round(time.time() - elapsed, 3), round(elapsed * 1000, 2)))
        else:
            errors += 1
        time.sleep(max(0.0, PROBE_INTERVAL - elapsed))
    results.put((latencies, errors))


class _Server:
    """gunicorn with gunicorn.conf.py serving bench.ws_app on a free port."""

    def __init__(self, workdir: str, env: dict[str, str], worker_class: str | None) -> None:
        self._worker_class = worker_class
        self._log = Path(workdir) / "gunicorn.log"
        self._env = (
            os.environ
            | env
            | {
                "DATABASE_URL": f"sqlite:///{workdir}/jobs.db",
                "RESULTS_DIR": f"{workdir}/results",
            }
        )
        self.peak = {"rss_mb": 0.0, "threads": 0}

    def __enter__(self) -> _Server:
        command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"]
        command += ["--bind", "127.0.0.1:0", "bench.ws_app:app"]
        if self._worker_class:
            command += ["--worker-class", self._worker_class]
        with open(self._log, "wb") as log:
            self._process = subprocess.Popen(
                command, cwd=PROJECT, env=self._env, stdout=log, stderr=log
            )
        self.host = self._wait_until_listening()
        self.url = f"http://{self.host}"
        self._worker = self._worker_pid()
        self._watching = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
        self._watcher.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._watching.set()
        self._watcher.join(5)
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)

    def submit(self, ticks: int, interval: float, warmup: float) -> str:
        params = {"ticks": ticks, "interval": interval, "warmup": warmup}
        response = requests.post(
            f"{self.url}/api/v1/jobs", json={"generator": "ticker", "params": params}, timeout=30
        )
        response.raise_for_status()
        return response.json()["id"]

    def status(self) -> dict:
        return requests.get(f"{self.url}/status", timeout=30).json()

    def cpu_seconds(self) -> float:
        """CPU time the worker process has used so far (user + system)."""
        fields = Path(f"/proc/{self._worker}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _watch(self) -> None:
        """Keep the worker's peak memory (the kernel's high-water mark) and thread count."""
        status = Path(f"/proc/{self._worker}/status")
        while not self._watching.wait(0.25):
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
            except OSError:
                return
            self.peak = {
                "rss_mb": round(int(fields["VmHWM"].split()[0]) / 1024, 1),
                "threads": max(self.peak["threads"], int(fields["Threads"])),
            }

    def _wait_until_listening(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"Listening at: http://([\d.]+:\d+)", self._log.read_text())
            if found:
                try:
                    requests.get(f"http://{found[1]}/health", timeout=2).raise_for_status()
                    return found[1]
                except requests.ConnectionError:
                    pass
            if self._process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not start:\n" + self._log.read_text())

    def _worker_pid(self) -> int:
        children = Path(f"/proc/{self._process.pid}/task/{self._process.pid}/children")
        return int(children.read_text().split()[0])


def _per_event(cpu_seconds: float, fanout: dict) -> float | None:
    events = fanout["progress_events_received"]
    return round(cpu_seconds / events * 1e6) if events else None


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "samples": 0}
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return {
        "p50": round(statistics.median(values), 1),
        "p99": round(p99, 1),
        "max": round(values[-1], 1),
        "samples": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--ticks", type=int, default=150)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--web-threads", type=int)
    parser.add_argument("--worker-class", help="gunicorn worker class instead of gthread")
    parser.add_argument("--max-connections", type=int)
    parser.add_argument("--update-interval-ms", type=int)
    parser.add_argument("--endpoint", choices=("job", "multiplexed"), default="job")
    parser.add_argument("--trace", help="write /health probe and outcome times to this file")
    args = parser.parse_args()
    print(json.dumps(run(**vars(args)), indent=2))


if __name__ == "__main__":
    main()
