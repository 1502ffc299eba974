"""Run the benchmark suite: `make bench`, or `python -m bench.run [--only NAME] [--repeat N]`.

Every scenario is a module with a `run(...) -> dict` and its own `__main__`. SCENARIOS
below is the registration list, in the order they run: each entry calls its module with
(workdir, backends, repeat) and returns report.py's shape (`rows`); a module written to
another shape gets a small adapter here. The suite writes bench/results/latest.json and
latest.md, and replaces the table in docs/performance.md; a run with `--only` writes
partial.json and partial.md instead and leaves the docs alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import (
    console_cost,
    depth,
    dispatch_latency,
    drain_e2e,
    drain_throughput,
    memory,
    pg_drain,
    scheduling,
    submit_throughput,
    web_latency,
    ws_fanout,
)
from .backends import POSTGRES, SQLITE, postgres_available
from .machine import machine_facts, machine_load
from .report import markdown_table, row

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
TABLE_BEGIN = "<!-- bench:table:begin -->"
TABLE_END = "<!-- bench:table:end -->"


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[..., dict[str, Any]]
    backends: tuple[str, ...] = (SQLITE, POSTGRES)


def web_latency_under_load(
    *, workdir: Path, backends: Sequence[str], repeat: int
) -> dict[str, Any]:
    """Scenario 4 (bench/web_latency.py): /health p99 while both workers run CPU-bound
    jobs, in the deployment's default isolation (processes), vs the same server idle."""
    runs = [
        web_latency.run(requests=WEB_LATENCY_REQUESTS, modes=("process",)) for _ in range(repeat)
    ]
    rows = []
    for index, first in enumerate(runs[0]["results"]):
        results = [figures["results"][index] for figures in runs]
        item = row(
            SQLITE,
            f"/health p99, workers busy with {first['load']} ({first['mode']}es)",
            [result["loaded"]["p99_ms"] for result in results],
            [result["idle"]["p99_ms"] for result in results],
            unit="ms",
            target="≤ 2x idle",
        )
        item["met"] = item["ratio"]["median"] <= 2
        rows.append(item)
    return {
        "scenario": "web_latency",
        "title": "4. web latency under CPU load",
        "rows": rows,
        "baseline": "the same server idle (each run's trivial-Flask floor is in `runs`)",
        "runs": runs,
    }


def figures_only(title: str, run: Callable[[], dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """An adapter for a module whose `run()` returns its own figures rather than rows:
    the figures go into latest.json, and the table points there."""

    def adapted(*, workdir: Path, backends: Sequence[str], repeat: int) -> dict[str, Any]:
        return {"scenario": title, "title": title, "rows": [], "figures": run()}

    return adapted


WEB_LATENCY_REQUESTS = 400
# bench/scheduling.py saturates one worker for this long, with and without aging; its own
# default (45 s) gives steadier figures when run alone (docs/performance.md#scheduling).
SCHEDULING_SECONDS = 10.0
# Fewer sockets than the 500-subscriber capacity run (`python -m bench.ws_fanout
# --subscribers 500`, docs/performance.md#live-progress-websocket-fan-out) to stay within
# the suite's ten minutes.
WS_SUBSCRIBERS = 200

# Scale-out on PostgreSQL: drained by 1 and by 2 gunicorn processes, and dispatch latency;
# fewer jobs than its own default (1,000) to stay within the suite's ten minutes.
PG_DRAIN_JOBS = 300
PG_DRAIN_SAMPLES = 50

# To add a module: one line here.
SCENARIOS = [
    Scenario("submit_throughput", submit_throughput.run),
    Scenario("dispatch_latency", dispatch_latency.run),
    Scenario("drain_throughput", drain_throughput.run),
    Scenario("drain_e2e", drain_e2e.run),
    Scenario("web_latency", web_latency_under_load, (SQLITE,)),
    Scenario(
        "scheduling",
        figures_only("6. scheduling", lambda: scheduling.run(seconds=SCHEDULING_SECONDS)),
        (SQLITE,),
    ),
    Scenario(
        "ws_fanout",
        figures_only("5. WebSocket fan-out", lambda: ws_fanout.run(subscribers=WS_SUBSCRIBERS)),
        (SQLITE,),
    ),
    Scenario("memory", memory.run, (SQLITE,)),
    Scenario(
        "pg_drain",
        figures_only(
            "7. scale-out on PostgreSQL",
            lambda: pg_drain.run(jobs_count=PG_DRAIN_JOBS, samples=PG_DRAIN_SAMPLES),
        ),
        (POSTGRES,),
    ),
    Scenario("depth", depth.run),
    Scenario("console", console_cost.run),
]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    # A stopped run still stops the servers it started (their `with` blocks unwind).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    backends = {SQLITE} | ({POSTGRES} if not args.no_postgres and postgres_available() else set())
    started = time.monotonic()
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.run", *argv]),
        "repeat": args.repeat,
        "machine": machine_facts(ROOT / "instance"),
        "load_before": machine_load(),
        "results": [],
    }
    if POSTGRES not in backends:
        print("PostgreSQL is not reachable (BENCH_POSTGRES_URL): SQLite only", file=sys.stderr)
    workdir = ROOT / "instance" / f"bench-{uuid.uuid4().hex[:8]}"
    try:
        for scenario in chosen:
            report["results"].append(_run_one(scenario, workdir, backends, args.repeat))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = [result["title"] for result in report["results"] if result.get("failed")]
    report["load_after"] = machine_load()
    report["duration_seconds"] = round(time.monotonic() - started, 1)
    # Only a full run stands for the suite: a partial one is kept beside it, not over it.
    write_results(report, "partial" if args.only else "latest", update_docs=not args.only)
    print(markdown_table(report["results"]))
    if failed:
        print(f"failed: {', '.join(failed)} (tracebacks above)", file=sys.stderr)
    return 1 if failed else 0


def _run_one(scenario: Scenario, workdir: Path, backends: set[str], repeat: int) -> dict[str, Any]:
    use = [backend for backend in scenario.backends if backend in backends]
    print(f"== {scenario.name} on {', '.join(use)} x{repeat}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        result = scenario.run(workdir=workdir / scenario.name, backends=use, repeat=repeat)
    except Exception as error:  # noqa: BLE001 - one broken scenario must not lose the others
        traceback.print_exc()
        result = {"scenario": scenario.name, "title": scenario.name, "rows": []}
        result["failed"] = f"{type(error).__name__}: {error}"
    result["seconds"] = round(time.monotonic() - started, 1)
    print(f"   {result['seconds']} s", file=sys.stderr, flush=True)
    return result


def write_results(report: dict[str, Any], name: str, *, update_docs: bool) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    block = results_block(report)
    (RESULTS / f"{name}.md").write_text(block)
    if update_docs and DOC.exists():
        text = DOC.read_text()
        head, found, rest = text.partition(TABLE_BEGIN)
        _, found_end, tail = rest.partition(TABLE_END)
        if found and found_end:
            DOC.write_text(f"{head}{TABLE_BEGIN}\n{block}{TABLE_END}{tail}")


def results_block(report: dict[str, Any]) -> str:
    """The table with the facts needed to read it: when, where, how loaded, how run."""
    machine = report["machine"]
    before, after = report["load_before"], report["load_after"]
    return (
        f"Run of {report['started_at']} (`{report['command']}`, {report['repeat']} repetitions, "
        f"{report['duration_seconds']:.0f} s) on {machine['cpu']} ({machine['cores']} cores, "
        f"{machine['memory_gb']} GB), Linux {machine['kernel']}, Python {machine['python']}, "
        f"SQLite {machine['sqlite']}, PostgreSQL {machine['postgres'] or 'not run'}, "
        f"fsync of 4 KB {machine['fsync_ms']} ms. "
        f"Load average {before['loadavg_1m']} before, {after['loadavg_1m']} after; CPU "
        f"pressure (share of time some task waited for a CPU) {before['cpu_pressure_60s']}% "
        f"before, {after['cpu_pressure_60s']}% after.\n\n" + markdown_table(report["results"])
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run the benchmark suite.")
    parser.add_argument("--only", action="append", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default: 3)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    return parser


if __name__ == "__main__":
    sys.exit(main())
