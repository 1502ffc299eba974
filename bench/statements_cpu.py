"""Thread CPU per job-table statement on SQLite: SQLAlchemy's execution path against the
driver path that `JobStore` uses for its hot statements (app/generation/store/driver_statements.py).

Each round writes `--jobs` rows, claims them, records their outcomes and looks them up,
on a pinned connection as a worker thread does, once per path in alternation (so both
see the same machine), in a scratch folder under instance/. Figures are the median over
`--rounds` of each path's thread CPU per statement.

    .venv/bin/python -m bench.statements_cpu --jobs 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from app.generation import Job, JobStatus, Priority
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore

STEPS = ("insert", "claim", "finish", "get")


def timed(call: Callable[[], object], count: int) -> float:
    """Microseconds of thread CPU per call."""
    started = time.thread_time()
    for _ in range(count):
        call()
    return (time.thread_time() - started) / count * 1e6


def one_round(folder: Path, jobs: int, *, hot_path: bool) -> dict[str, float]:
    engine = create_database_engine(f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}")
    schema.upgrade(engine)
    store = JobStore(engine)
    if not hot_path:
        store._hot = None  # noqa: SLF001 - SQLAlchemy's own execution path, for comparison
    new = iter(
        Job(0, uuid.uuid4().hex, "bench", "noop", {"ms": 0}, Priority.NORMAL,
            JobStatus.QUEUED, datetime.now(UTC))
        for _ in range(jobs)
    )  # fmt: skip
    ids: list[str] = []
    claimed: list[Job] = []
    lookups = iter(ids)  # filled by the inserts, read by the lookups after them
    with store.pinned():
        figures = {
            "insert": timed(lambda: ids.append(store.insert(next(new)).id), jobs),
            "claim": timed(
                lambda: claimed.append(store.claim(ids[len(claimed)], "w", _now())), jobs
            ),
            "finish": timed(
                lambda: store.finish(claimed.pop(), JobStatus.SUCCEEDED, _now(), result_bytes=1),
                jobs,
            ),
            "get": timed(lambda: store.get(next(lookups)), jobs),
        }
    engine.dispose()
    return figures


def _now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    Path("instance").mkdir(exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {"sqlalchemy": [], "driver": []}
    with tempfile.TemporaryDirectory(dir="instance", prefix="statements-cpu-") as scratch:
        for _ in range(args.rounds):
            for path in runs:
                runs[path].append(one_round(Path(scratch), args.jobs, hot_path=path == "driver"))
    for step in STEPS:
        slow, fast = (statistics.median(r[step] for r in runs[path]) for path in runs)
        print(f"{step:<7} sqlalchemy {slow:5.0f} µs   driver {fast:5.0f} µs   {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
