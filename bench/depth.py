"""Scenario 9: cost vs queue depth: the submit and claim rates with 100,000 jobs queued,
against the same rates with 1,000 queued.

Each repetition, per backend and per depth (1,000, then 100,000), on a fresh database:

1. The queue is written before the server starts (prefill.write_queued): first 2 HIGH
   `noop` jobs of 10 minutes (the holders), then `depth` NORMAL `noop` jobs (ms=0), all
   of the anonymous owner. The server starts with GENERATION_WORKERS=2 and
   GENERATION_QUEUE_SIZE = depth + 50,000 (so no submit is refused); its two workers
   take the holders first (HIGH runs first) and are then busy: nothing drains. No
   setting keeps the workers from claiming (app/config.py has none), and holding them
   with jobs submitted over the API would let them drain prefilled jobs first, so the
   holders are in the prefill.
2. Submit rate at depth: wrk POSTs NORMAL `noop` jobs from 16 keep-alive connections for
   1 s (warm-up), then 3 s (measured), as scenario 1 does: validate, admit, write, index,
   answer 202, with `depth` jobs queued. The run's own submissions join the queue (a few
   hundred to a few thousand; `queued_before`/`queued_after` in the JSON), which matters
   at 1,000 and not at 100,000. wrk waits up to 30 s for an answer (its default, 2 s,
   would drop a slow submit instead of counting it). The server's CPU time per submit
   is kept beside it.
3. Claim rate at depth: the holders are cancelled over the API and the two workers
   drain the queue; claim rate = n / (last `started_at` − first `started_at`) of the
   first n jobs to start (ordered by `started_at`, read from the rows), n = 2,000, or
   fewer when the queue holds fewer (at 1,000 with a slow submit) or when they have not
   all started CLAIM_SECONDS after the first (so a claim path that is slow at depth
   does not stretch the run to minutes). Each job is ms=0, so a worker claims, runs,
   finishes and claims again: the rate is the drain rate at that depth, of which the
   claim is the part that depth can change.

Rows: each backend's figure at 100,000 against its figure at 1,000 of the same
repetition; the issue's target is ≥ 0.8x for both. Server start-up (the service reads the
queued rows when it starts) is timed too and kept in the JSON.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from app.generation.job import JobStatus, Priority
from app.generation.store.engine import create_database_engine
from app.generation.store.tables import JobRow

from .backends import SQLITE, database
from .cli import scenario_main
from .load import post_load
from .prefill import write_queued
from .report import row
from .servers import Server, service_server
from .stats import summary

DEPTHS = (1_000, 100_000)
WORKERS = 2
ROOM = 50_000
HOLD_MS = 600_000
CONNECTIONS = 16
WARMUP_SECONDS = 1
MEASURE_SECONDS = 3
# A slow submit at depth is a figure, not an error: wrk's default timeout is 2 s.
REQUEST_TIMEOUT = 30
CLAIMS = 2_000
CLAIM_SECONDS = 20.0
POLL_SECONDS = 0.25
START_TIMEOUT = 120.0
TARGET_RATIO = 0.8
# An exception's type and message in a JSON log line's `exc_info`.
LOGGED_ERROR = re.compile(r"(?:\\n|\s)([\w.]+(?:Error|Exception): [^\\\"]*)")
JOB = {"generator": "noop", "params": {"ms": 0}}
_columns = JobRow.__table__.c
_holder = _columns.priority == int(Priority.HIGH)
_queued = _columns.status == JobStatus.QUEUED.value


def run(*, workdir: Path, backends: Sequence[str] = (SQLITE,), repeat: int = 3) -> dict[str, Any]:
    details = {
        backend: [
            {
                str(depth): measure_at_depth(
                    backend, depth, workdir / f"{backend}-{attempt}-{depth}"
                )
                for depth in DEPTHS
            }
            for attempt in range(repeat)
        ]
        for backend in backends
    }
    rows = [line for backend, runs in details.items() for line in _rows(backend, runs)]
    return {
        "scenario": "depth",
        "title": "9. cost vs queue depth",
        "rows": rows,
        "settings": {
            "depths": DEPTHS,
            "workers": WORKERS,
            "connections": CONNECTIONS,
            "measure_seconds": MEASURE_SECONDS,
            "claims": CLAIMS,
            "claim_seconds_cap": CLAIM_SECONDS,
            "job": JOB,
        },
        "runs": details,
    }


def measure_at_depth(backend: str, depth: int, workdir: Path) -> dict[str, Any]:
    """Prefill `depth` jobs behind two holders; submit rate, then claim rate. A depth
    the service cannot handle (it does not start, a phase fails) is recorded as an
    error with the server log's reason, and the other depths and backends still run."""
    try:
        return _measure_at_depth(backend, depth, workdir)
    except Exception as error:  # noqa: BLE001 - one depth's failure is a figure too
        traceback.print_exc()
        return {"depth": depth, "error": f"{type(error).__name__}: {error}"} | {
            "server_error": _logged_error(workdir)
        }


def _measure_at_depth(backend: str, depth: int, workdir: Path) -> dict[str, Any]:
    with database(backend, workdir) as url:
        began = time.monotonic()
        write_queued(url, WORKERS, priority=Priority.HIGH, params={"ms": HOLD_MS})
        write_queued(url, depth)
        prefill_seconds = time.monotonic() - began
        began = time.monotonic()
        with service_server(
            url,
            workdir,
            start_timeout=START_TIMEOUT,
            GENERATION_WORKERS=WORKERS,
            GENERATION_QUEUE_SIZE=depth + ROOM,
        ) as server:
            start_seconds = time.monotonic() - began
            holders = wait_held(url)
            submit = measure_submit(server, url)
            claim = measure_claims(server, url, holders)
    return {
        "depth": depth,
        "prefill_seconds": round(prefill_seconds, 2),
        "start_seconds": round(start_seconds, 2),
        "submit": submit,
        "claim": claim,
    }


def wait_held(url: str, *, timeout: float = 60.0) -> list[str]:
    """Wait until both holders are running; their ids."""
    engine = create_database_engine(url)
    running = _columns.status == JobStatus.RUNNING.value
    try:
        deadline = time.monotonic() + timeout
        with engine.connect() as connection:
            while True:
                ids = connection.scalars(select(_columns.id).where(_holder, running)).all()
                if len(ids) == WORKERS:
                    return list(ids)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the workers did not take the holders in {timeout}s")
                connection.rollback()
                time.sleep(0.05)
    finally:
        engine.dispose()


def measure_submit(server: Server, url: str) -> dict[str, Any]:
    """wrk's warm-up and measured runs of submits, workers held."""
    target = server.url + "/api/v1/jobs"
    queued_before = count_queued(url)
    options = {"connections": CONNECTIONS, "timeout": REQUEST_TIMEOUT}
    post_load(target, JOB, seconds=WARMUP_SECONDS, **options)
    cpu = server.cpu_seconds()
    load = post_load(target, JOB, seconds=MEASURE_SECONDS, **options)
    cpu_ms = (server.cpu_seconds() - cpu) * 1000 / max(1, load.requests)
    if load.status_errors:
        raise RuntimeError(f"submits refused at depth: {load.as_dict()}")
    return load.as_dict() | {
        "cpu_ms_per_request": round(cpu_ms, 3),
        "queued_before": queued_before,
        "queued_after": count_queued(url),
    }


def measure_claims(server: Server, url: str, holders: list[str]) -> dict[str, Any]:
    """Cancel the holders; the rate of the first claims that follow, from the rows."""
    queued = count_queued(url)
    wanted = min(CLAIMS, queued)
    with server.client() as client:
        for job_id in holders:
            reply = client.post(f"/api/v1/jobs/{job_id}/cancel", {})
            if reply.status != 200:
                raise RuntimeError(f"could not cancel holder {job_id}: {reply.status}")
    engine = create_database_engine(url)
    drained = _columns.started_at.is_not(None), ~_holder
    try:
        with engine.connect() as connection:
            deadline = None
            while (started := connection.scalar(select(func.count()).where(*drained))) < wanted:
                if started and deadline is None:
                    deadline = time.monotonic() + CLAIM_SECONDS
                if deadline is not None and time.monotonic() > deadline:
                    break
                connection.rollback()
                # Each look scans the table: seldom, so as not to take the server's CPU.
                time.sleep(POLL_SECONDS)
            times = connection.scalars(
                select(_columns.started_at)
                .where(*drained)
                .order_by(_columns.started_at)
                .limit(wanted)
            ).all()
    finally:
        engine.dispose()
    if len(times) < 2:
        raise RuntimeError(f"only {len(times)} jobs started in {CLAIM_SECONDS}s")
    seconds = (times[-1] - times[0]).total_seconds()
    return {
        "claims": len(times),
        "seconds": round(seconds, 3),
        "rate": round(len(times) / seconds, 1),
        "capped": len(times) < wanted,
        "queued_before": queued,
    }


def _logged_error(workdir: Path) -> str | None:
    """The first exception named in the newest service log under `workdir`."""
    logs = sorted(workdir.glob("service-*.log"), key=lambda path: path.stat().st_mtime)
    if not logs:
        return None
    found = LOGGED_ERROR.search(logs[-1].read_text(errors="replace"))
    return found.group(1)[:300] if found else None


def count_queued(url: str) -> int:
    engine = create_database_engine(url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).where(_queued))
    finally:
        engine.dispose()


def _rows(backend: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    shallow, deep = (f"{depth}" for depth in DEPTHS)
    failures = sorted(
        {
            f"{at['depth']:,}: {(at['server_error'] or at['error'])[:160]}"
            for run in runs
            for at in run.values()
            if "error" in at
        }
    )
    lines = []
    for figure, metric, unit in (
        ("submit", f"submits/s, workers held ({CONNECTIONS} clients)", "req/s"),
        ("claim", f"claims/s, {WORKERS} workers draining noop jobs", "jobs/s"),
    ):
        label = f"{metric}: {DEPTHS[1]:,} queued vs {DEPTHS[0]:,}"
        target = f"≥ {TARGET_RATIO}x at {DEPTHS[0]:,}"
        at_deep, at_shallow = (
            [run[depth][figure]["rate"] for run in runs if "error" not in run[depth]]
            for depth in (deep, shallow)
        )
        if failures:
            # No ratio without both; the row shows what was measured and what failed.
            failed = f"{label}; failed at {'; '.join(failures)}"
            item = row(backend, failed, at_deep, unit=unit, digits=0)
            item["floor"] = summary(at_shallow, 0) if at_shallow else None
            item["target"], item["met"] = target, False
            lines.append(item)
            continue
        item = row(backend, label, at_deep, at_shallow, unit=unit, target=target, digits=0)
        item["met"] = item["ratio"]["median"] >= TARGET_RATIO
        lines.append(item)
    return lines


if __name__ == "__main__":
    scenario_main(run, __doc__)
