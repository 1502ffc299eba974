"""Scenario: what an open operators' console costs the service (issue #19).

Each repetition starts two fresh servers of ours on empty databases, back to back, with
the same steps; the second has CONSOLES console streams open (`/api/v1/admin/stream`,
each receiving the snapshot every two seconds, as /console does), the first none. In
each: both workers are held by long jobs, wrk POSTs `noop` jobs from 16 keep-alive
connections for MEASURE_SECONDS (the queue grows to thousands, which the console's
per-owner counts read), and a separate process probes /health every 20 ms meanwhile.

Reported as ratios of the run with consoles to the run without (the "floor" column):
submit rate (1.0: no cost) and /health p99 (1.0: no cost). The order of the two servers
alternates between repetitions, so a machine growing busier does not always count
against the same one. Also: console messages received, to show the streams were live.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simple_websocket import Client, ConnectionClosed

from .backends import SQLITE, database
from .cli import scenario_main
from .load import post_load
from .report import row
from .servers import Server, service_server, warm_up_workers
from .submit_throughput import JOB, hold_worker
from .ws_fanout import HealthProbe

CONSOLES = 5
CONNECTIONS = 16
WARMUP_SECONDS = 1
MEASURE_SECONDS = 5
QUEUE_SIZE = 1_000_000


def run(*, workdir: Path, backends: Sequence[str] = (SQLITE,), repeat: int = 3) -> dict[str, Any]:
    rows, details = [], {}
    for backend in backends:
        runs = []
        for repetition in range(repeat):
            order = (0, CONSOLES) if repetition % 2 == 0 else (CONSOLES, 0)
            scratch = workdir / f"console-{backend}-{repetition}"
            measured = {consoles: measure(backend, scratch, consoles) for consoles in order}
            runs.append({"without": measured[0], "with": measured[CONSOLES]})
        details[backend] = runs
        without, with_ = [r["without"] for r in runs], [r["with"] for r in runs]
        rows.append(
            row(
                backend,
                f"submits/s with {CONSOLES} consoles open (floor: none open)",
                [r["rate"] for r in with_],
                [r["rate"] for r in without],
                unit="req/s",
                target="within noise of 1.0x",
                digits=0,
            )
        )
        rows.append(
            row(
                backend,
                f"/health p99 with {CONSOLES} consoles open (floor: none open)",
                [r["health"]["p99"] for r in with_],
                [r["health"]["p99"] for r in without],
                unit="ms",
                target="within noise of 1.0x",
                digits=1,
            )
        )
        rows.append(
            row(
                backend,
                "console messages received per console per second",
                [r["messages_per_console_second"] for r in with_],
                unit="msg/s",
                digits=2,
            )
        )
    return {
        "scenario": "console",
        "title": "10. the operators' console's cost",
        "rows": rows,
        "settings": {
            "consoles": CONSOLES,
            "connections": CONNECTIONS,
            "seconds": MEASURE_SECONDS,
            "job": JOB,
        },
        "runs": details,
    }


def measure(backend: str, workdir: Path, consoles: int) -> dict[str, Any]:
    """One fresh server: workers held, `consoles` streams open, submits and /health."""
    with (
        database(backend, workdir) as url,
        service_server(
            url, workdir, name=f"c{consoles}", GENERATION_QUEUE_SIZE=QUEUE_SIZE
        ) as server,
    ):
        warm_up_workers(server)
        holders = [hold_worker(server) for _ in range(2)]
        readers = [ConsoleReader(server) for _ in range(consoles)]
        submit_url = server.url + "/api/v1/jobs"
        post_load(submit_url, JOB, seconds=WARMUP_SECONDS, connections=CONNECTIONS)
        for reader in readers:
            reader.reset()
        probe = HealthProbe(server.url)
        load = post_load(submit_url, JOB, seconds=MEASURE_SECONDS, connections=CONNECTIONS)
        health = probe.stop()
        received = [reader.stop() for reader in readers]
        with server.client() as client:
            for job_id in holders:
                client.post(f"/api/v1/jobs/{job_id}/cancel", {})
    per_second = sum(received) / len(received) / load.seconds if received else None
    return load.as_dict() | {
        "health": health,
        "consoles": consoles,
        "messages_per_console_second": round(per_second, 2) if per_second else None,
        "console_bytes_last": max((r.last_size for r in readers), default=None),
    }


class ConsoleReader:
    """One console stream, read on its own thread (as a browser tab would)."""

    def __init__(self, server: Server) -> None:
        self._socket = Client.connect(f"ws://127.0.0.1:{server.port}/api/v1/admin/stream")
        first = json.loads(self._socket.receive(timeout=10))
        if first.get("type") != "console":
            raise RuntimeError(f"the console stream sent {first!r}")
        self.received = 0
        self.last_size = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self.received = 0

    def stop(self) -> int:
        self._stopping.set()
        self._thread.join(5)
        self._socket.close()
        return self.received

    def _read(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._socket.receive(timeout=0.5)
            except ConnectionClosed:
                return
            if message is not None:
                self.received += 1
                self.last_size = len(message)


if __name__ == "__main__":
    scenario_main(run, __doc__)
