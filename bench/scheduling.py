"""Scheduling benchmark: is the queue fair, bounded and honest under saturation?

Three parts, all in one process against the real core (GenerationService on SQLite in a
temporary folder, one worker thread, a generator that sleeps for its run time):

1. `saturate`: mixed traffic (20 % HIGH, 50 % NORMAL, 30 % LOW, four owners) arrives
   at ARRIVAL_FACTOR x what one worker can run, against a bounded queue, twice: with
   aging and with aging effectively off (strict priority, as every other job system).
   Reports HIGH's wait in units of one job's mean run time, LOW's worst wait against the
   aging bound, LOW jobs left waiting, and ETA error (|predicted - actual| / actual): all
   jobs as /status scores them, and per priority after a warm-up (the ETA shown to
   users, rounded to 0.1 s, so short HIGH jobs carry some rounding error).
2. `flood`: one owner submits FLOOD jobs at once, then another owner submits one job;
   reports the single job's position and wait, in run times.
3. `index`: the cost of one pick (`SchedulingIndex.pop`), a full forecast, and the
   forecast done on submit, with 10,000 queued jobs and 1, 100 or 1,000 owners.

Run from the repository root: `.venv/bin/python -m bench.scheduling` (about 100 s).
Timings depend on a shared, noisy machine.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.generation import GenerationService, Job, Priority, QueueFullError
from app.generation.forecast.forecaster import simulate
from app.generation.generators import (
    FieldErrors,
    Generator,
    GeneratorContext,
    GeneratorRegistry,
    OutputFile,
)
from app.generation.results.storage import FilesystemResultStore
from app.generation.scheduling.policy import QueueEntry, SchedulingIndex
from app.generation.settings import ServiceSettings
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore

UNIT_SECONDS = 0.02  # what the generator *claims* one size unit takes
SLOWDOWN = 1.5  # what it really takes, relative to its claim: the estimator must learn it
MIX = ((Priority.HIGH, 0.2), (Priority.NORMAL, 0.5), (Priority.LOW, 0.3))
OWNERS = ("ann", "bob", "cat", "dan")
ARRIVAL_FACTOR = 1.2
QUEUE_SIZE = 100
MEAN_RUN = 2 * UNIT_SECONDS * SLOWDOWN  # sizes 1..3, mean 2
# The defaults scaled down: PRIORITY_AGING_SECONDS=60 is ~150 runs of a 0.4 s images job.
AGING = 150 * MEAN_RUN
FLOOD = 100
# ETAs of jobs submitted before the forecast has seen ARRIVAL_MIN_SPAN_SECONDS of traffic
# cannot allow for arrivals yet; per-priority errors are reported for the jobs after it.
WARM_UP_SECONDS = 15.0


class SleepGenerator(Generator):
    """Sleeps `size` x UNIT_SECONDS x SLOWDOWN, give or take 10 %, checking for cancel."""

    name = "sleep"

    def validate(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
        return {"size": int(params["size"]), "jitter": float(params["jitter"])}, {}

    def estimate_seconds(self, params: Mapping[str, Any]) -> float:
        return params["size"] * UNIT_SECONDS

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        deadline = time.monotonic() + params["size"] * UNIT_SECONDS * SLOWDOWN * params["jitter"]
        while (left := deadline - time.monotonic()) > 0:
            context.check_cancelled()
            time.sleep(min(left, 0.01))
        context.progress("done", 100)
        yield OutputFile("done.txt", b"ok")


def make_service(folder: Path, aging: float, queue_size: int) -> GenerationService:
    engine = create_database_engine(f"sqlite:///{folder / 'bench.db'}")
    schema.upgrade(engine)
    return GenerationService(
        JobStore(engine),
        FilesystemResultStore(folder / "results"),
        GeneratorRegistry([SleepGenerator()]),
        ServiceSettings(workers=1, queue_size=queue_size, aging_seconds=aging),
    )


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None


def saturate(aging: float, seconds: float, seed: int = 1) -> dict[str, Any]:
    """Mixed traffic above one worker's capacity for `seconds`; returns the figures."""
    rng = random.Random(seed)
    mean_run = MEAN_RUN
    rate = ARRIVAL_FACTOR / mean_run
    with tempfile.TemporaryDirectory() as folder:
        service = make_service(Path(folder), aging, QUEUE_SIZE)
        service.start()
        submitted: list[Job] = []
        rejected = 0
        start = time.monotonic()
        next_arrival = start
        while next_arrival - start < seconds:
            time.sleep(max(0.0, next_arrival - time.monotonic()))
            priority = rng.choices([p for p, _ in MIX], [w for _, w in MIX])[0]
            params = {"size": rng.randint(1, 3), "jitter": rng.uniform(0.9, 1.1)}
            try:
                submitted.append(
                    service.submit("sleep", params, priority=priority, owner=rng.choice(OWNERS))
                )
            except QueueFullError:
                rejected += 1
            next_arrival += rng.expovariate(rate)
        finals = [service.store.get(job.id) for job in submitted]
        eta_error = service.stats()["eta_error"]
        service.shutdown(wait=True, timeout=0.1)
    return summarise(submitted, finals, rejected, eta_error, aging, mean_run)


def summarise(
    submitted: list[Job],
    finals: list[Job | None],
    rejected: int,
    eta_error: dict[str, Any],
    aging: float,
    mean_run: float,
) -> dict[str, Any]:
    waits: dict[Priority, list[float]] = {p: [] for p in Priority}
    errors: dict[Priority, list[float]] = {p: [] for p in Priority}
    left_waiting = {p.label: 0 for p in Priority}
    oldest_waiting: dict[Priority, float] = {p: 0.0 for p in Priority}
    end = max(job.created_at for job in submitted)
    runs = []
    warm = submitted[0].created_at + timedelta(seconds=WARM_UP_SECONDS)
    for promised, final in zip(submitted, finals, strict=True):
        if final is None or final.started_at is None:
            left_waiting[promised.priority.label] += 1
            age = (end - promised.created_at).total_seconds()
            oldest_waiting[promised.priority] = max(oldest_waiting[promised.priority], age)
            continue
        waits[final.priority].append((final.started_at - final.created_at).total_seconds())
        if final.finished_at is not None:
            actual = (final.finished_at - final.created_at).total_seconds()
            runs.append((final.finished_at - final.started_at).total_seconds())
            if final.created_at >= warm:
                errors[final.priority].append(abs(promised.eta_seconds - actual) / actual)
    unit = statistics.fmean(runs) if runs else mean_run  # one job's measured run time
    high_units = [w / unit for w in waits[Priority.HIGH]]
    worst_low = max(waits[Priority.LOW], default=None)
    # The bound of docs/scheduling.md for one worker: its key is at most 2A plus its
    # owner's queued LOW work (< capacity jobs) after its admission; nothing admitted
    # later than its key goes first, and at most capacity - 1 jobs are queued ahead then.
    longest = max(runs, default=mean_run)
    bound = 2 * aging + 2 * (QUEUE_SIZE - 1) * longest
    return {
        "aging_seconds": aging,
        "submitted": len(submitted),
        "rejected_queue_full": rejected,
        "mean_run_seconds": round(statistics.fmean(runs), 4) if runs else None,
        "high_wait_runs": {
            "p50": percentile(high_units, 0.5),
            "p95": percentile(high_units, 0.95),
            "max": percentile(high_units, 1.0),
        },
        "low_worst_wait_seconds": round(worst_low, 2) if worst_low is not None else None,
        "low_aging_bound_seconds": round(bound, 2),
        "left_waiting_at_end": left_waiting,
        "low_oldest_left_waiting_seconds": round(oldest_waiting[Priority.LOW], 2),
        "eta_error_after_warm_up": {
            p.label: {"median": percentile(errors[p], 0.5), "p90": percentile(errors[p], 0.9)}
            for p in Priority
        },
        "eta_error_status": eta_error,
    }


def flood(seed: int = 2) -> dict[str, Any]:
    """One owner floods the queue; another submits a single job right after."""
    rng = random.Random(seed)
    mean_run = MEAN_RUN
    with tempfile.TemporaryDirectory() as folder:
        service = make_service(Path(folder), 60.0, FLOOD + 10)
        service.start()
        for _ in range(FLOOD):
            params = {"size": rng.randint(1, 3), "jitter": 1.0}
            service.submit("sleep", params, owner="flooder")
        single = service.submit("sleep", {"size": 2, "jitter": 1.0}, owner="single")
        while (final := service.store.get(single.id)).started_at is None:
            time.sleep(0.005)
        service.shutdown(wait=True, timeout=0.1)
    wait = (final.started_at - final.created_at).total_seconds()
    return {
        "flood_jobs": FLOOD,
        "single_position_at_submit": single.position,
        "single_wait_runs": round(wait / mean_run, 2),
        "fifo_position_would_be": FLOOD - 1,
    }


def build_index(jobs: int, owners: int, seed: int = 3) -> SchedulingIndex:
    rng = random.Random(seed)
    index = SchedulingIndex(60.0)
    for order in range(jobs):
        priority, owner, at = (
            rng.choice(list(Priority)),
            f"owner{rng.randrange(owners)}",
            order * 0.01,
        )
        cost = rng.uniform(1, 3)
        key = index.key_for(owner, int(priority), at, cost)  # admitted over 100 s
        index.add(QueueEntry(f"j{order}", priority, order, owner, at, "sleep", cost, key))
    return index


def index_costs(jobs: int = 10_000) -> dict[str, Any]:
    """Microseconds per pick, and milliseconds per forecast, at `jobs` queued."""
    figures = {}
    for owners in (1, 100, 1_000):
        index = build_index(jobs, owners)
        started = time.perf_counter()
        copy = index.copy()
        copy_ms = (time.perf_counter() - started) * 1000
        picks = 1_000
        started = time.perf_counter()
        for _ in range(picks):
            copy.pop()
        pick_us = (time.perf_counter() - started) / picks * 1e6
        started = time.perf_counter()
        slots = simulate(index.copy(), jobs * 0.01, [], 1, lambda e: e.cost)
        forecast_ms = (time.perf_counter() - started) * 1000
        assert len(slots) == jobs
        figures[f"{owners}_owners"] = {
            "pick_us": round(pick_us, 1),
            "scan_pick_us": round(scan_pick_us(index), 1),
            "copy_ms": round(copy_ms, 1),
            "forecast_ms": round(forecast_ms, 1),
        }
    return {"queued_jobs": jobs, **figures, "submit_forecast_ms": submit_costs()}


def scan_pick_us(index: SchedulingIndex) -> float:
    """One pick done the obvious way, a scan of every entry for the smallest key."""
    entries = index.entries()
    started = time.perf_counter()
    for _ in range(10):
        min(entries, key=lambda e: e.rank)
    return (time.perf_counter() - started) / 10 * 1e6


def submit_costs() -> dict[str, float]:
    """What a submit pays to learn its slot: a NORMAL job joining queues of n jobs."""
    costs = {}
    for depth in (100, 1_000, 10_000):
        index = build_index(depth, 4)
        now = depth * 0.01
        key = index.key_for("owner0", int(Priority.NORMAL), now, 2.0)
        newcomer = QueueEntry("new", Priority.NORMAL, depth, "owner0", now, "sleep", 2.0, key)
        started = time.perf_counter()
        twin = index.copy()
        twin.add(newcomer)
        simulate(twin, now, [], 1, lambda e: e.cost, until="new")
        costs[str(depth)] = round((time.perf_counter() - started) * 1000, 2)
    return costs


def run(seconds: float = 45.0) -> dict[str, Any]:
    """Every figure of this benchmark, as one JSON-able dict."""
    return {
        "benchmark": "scheduling",
        "note": "one worker, sleep-based jobs; shared 2-core machine, timings are noisy",
        "saturate_with_aging": saturate(aging=AGING, seconds=seconds),
        "saturate_strict_priority": saturate(aging=1e9, seconds=seconds),
        "flood": flood(),
        "index": index_costs(),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
