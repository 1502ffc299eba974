"""Scenario 1: submit throughput: concurrent clients POST small jobs, vs the floor's POST.

Each repetition measures the floor, then a fresh server of ours on an empty database,
back to back, with the same wrk load (16 keep-alive connections). Only the submit path
is measured: both generation workers are first held by a long `noop` job, so every
accepted job is written, indexed and answered, and none runs. For a second figure
(SQLite) the holders are then cancelled and the workers drain the queue while more jobs
arrive: the sustained rate of a busy service, where submits share the GIL with workers.
Before either, one small job per worker waits out the generation processes' start-up
(servers.warm_up_workers).

The machine is shared, so rates move with whatever else runs. CPU time per request
(user + system, of the server's processes, over the measured run) moves much less: it
is reported for ours and the floor as a second, steadier view of the same cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .backends import POSTGRES, SQLITE, database
from .cli import scenario_main
from .load import post_load
from .report import row
from .servers import Server, runs_beside_floor, service_server, warm_up_workers

# Issue #15's targets, as ratios to the floor in the same run.
TARGET_RATIO = {SQLITE: 0.6, POSTGRES: 0.5}
CONNECTIONS = 16
WARMUP_SECONDS = 1
MEASURE_SECONDS = 3
QUEUE_SIZE = 1_000_000
HOLD_MS = 600_000
JOB = {"generator": "noop", "params": {"ms": 0}}


def run(*, workdir: Path, backends: Sequence[str] = (SQLITE,), repeat: int = 3) -> dict[str, Any]:
    rows = []
    details = runs_beside_floor(
        workdir,
        backends,
        repeat,
        lambda floor, backend, scratch: {"floor": measure(floor)} | measure_ours(backend, scratch),
    )
    for backend, runs in details.items():
        floor_rates = [run["floor"]["rate"] for run in runs]
        held_rates = [run["held"]["rate"] for run in runs]
        held_row = row(
            backend,
            f"submits/s, workers held ({CONNECTIONS} clients)",
            held_rates,
            floor_rates,
            unit="req/s",
            target=f"≥ {TARGET_RATIO[backend]}x floor",
            digits=0,
        )
        held_row["met"] = held_row["ratio"]["median"] >= TARGET_RATIO[backend]
        rows.append(held_row)
        if backend == SQLITE:
            rows.append(
                row(
                    backend,
                    f"submits/s, workers draining ({CONNECTIONS} clients)",
                    [run["draining"]["rate"] for run in runs],
                    floor_rates,
                    unit="req/s",
                    digits=0,
                )
            )
        rows.append(
            row(
                backend,
                "server CPU per submit, workers held",
                [run["held"]["cpu_ms_per_request"] for run in runs],
                [run["floor"]["cpu_ms_per_request"] for run in runs],
                unit="ms",
            )
        )
    return {
        "scenario": "submit_throughput",
        "title": "1. submit throughput",
        "rows": rows,
        "settings": {"connections": CONNECTIONS, "seconds": MEASURE_SECONDS, "job": JOB},
        "runs": details,
    }


def measure(server: Server) -> dict[str, Any]:
    """Warm up, then one measured wrk run of POSTs to the submit route."""
    url = server.url + "/api/v1/jobs"
    post_load(url, JOB, seconds=WARMUP_SECONDS, connections=CONNECTIONS)
    cpu = server.cpu_seconds()
    load = post_load(url, JOB, seconds=MEASURE_SECONDS, connections=CONNECTIONS)
    cpu_ms = (server.cpu_seconds() - cpu) * 1000 / max(1, load.requests)
    return load.as_dict() | {"cpu_ms_per_request": round(cpu_ms, 3)}


def measure_ours(backend: str, workdir: Path) -> dict[str, Any]:
    """Submits with both workers held; then, on SQLite, with the holders cancelled, so
    the workers drain the queue the first run left while the second one submits."""
    with (
        database(backend, workdir) as url,
        service_server(url, workdir, GENERATION_QUEUE_SIZE=QUEUE_SIZE) as server,
    ):
        warm_up_workers(server)
        holders = [hold_worker(server) for _ in range(2)]
        result = {"held": measure(server)}
        # Cancelled holders free the workers (and let the server stop at once).
        with server.client() as client:
            for job_id in holders:
                client.post(f"/api/v1/jobs/{job_id}/cancel", {})
        if backend == SQLITE:
            result["draining"] = measure(server)
        return result


def hold_worker(server: Server) -> str:
    """Submit a long noop job that occupies one worker until cancelled."""
    with server.client() as client:
        reply = client.post("/api/v1/jobs", {"generator": "noop", "params": {"ms": HOLD_MS}})
    if reply.status != 202:
        raise RuntimeError(f"could not submit a holding job: {reply.status} {reply.body}")
    return reply.body["id"]


if __name__ == "__main__":
    scenario_main(run, __doc__)
