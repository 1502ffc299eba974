"""What makes /health wait under CPU load: wake-ups that a generation process delays.

The scenario of bench/web_latency.py (both workers busy with `images` jobs, process
isolation), seen from the kernel's scheduler: while a client times sequential GET /health,
`perf` records every context switch and wake-up for a few seconds. For each wake-up of a
thread of the web worker or of the client onto a CPU where a generation process is
running, the figure is how long that process kept the CPU afterwards: ~0 when the woken
thread preempts it, up to a scheduler tick (4 ms at 250 Hz) when it does not.

Needs `perf` (linux-perf) and root, or kernel.perf_event_paranoid ≤ -1.

    .venv/bin/python -m bench.wakeups --repeat 4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from . import web_latency

EVENT = re.compile(r"\s*\d+/\d+\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s*(.*)")
HELD_MS = 1.0


def run(*, seconds: float = 2.0, repeat: int = 4, workers: int = 2) -> dict[str, Any]:
    """Hold times per repetition and pooled (see the module docstring)."""
    runs = [_once(seconds, workers) for _ in range(repeat)]
    pooled = {who: [held for one in runs for held in one["held_ms"][who]] for who in WHO}
    return {
        "benchmark": "wakeups",
        "settings": {"seconds": seconds, "repeat": repeat, "workers": workers},
        "pooled": {who: summarise(pooled[who]) for who in WHO},
        "runs": [
            {"health": one["health"], **{who: summarise(one["held_ms"][who]) for who in WHO}}
            for one in runs
        ],
    }


WHO = ("web", "client")


def _once(seconds: float, workers: int) -> dict[str, Any]:
    env = {"GENERATION_WORKERS": str(workers), "GENERATION_CPU_ISOLATION": "process"}
    with tempfile.TemporaryDirectory(prefix="bench-wakeups-") as scratch:
        data = Path(scratch) / "perf.data"
        with web_latency.gunicorn(Path(scratch) / "server", env) as (url, master):
            web_latency.warm_up(url, workers)
            for _ in range(4 * workers):
                web_latency.call(url, "POST", "/api/v1/jobs", web_latency.LOADS["images"], 202)
            web_latency.wait_until_working(url, workers)
            worker = _children(master)[0]
            generation = [pid for pid in _children(worker) if b"spawn_main" in _cmdline(pid)]
            health: dict[str, Any] = {}
            client: set[int] = set()

            def probe() -> None:
                client.add(threading.get_native_id())
                health.update(web_latency.latency(url, 100_000, seconds))

            perf = _record(data, seconds)
            prober = threading.Thread(target=probe)
            prober.start()
            perf.wait()
            prober.join()
            threads = {"web": _threads(worker), "client": client}
        events = subprocess.run(
            ["perf", "script", "-i", str(data), "-F", "pid,tid,cpu,time,event,trace"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    return {"health": health, "held_ms": held_after_wakeups(events, threads, set(generation))}


def held_after_wakeups(
    events: str, threads: dict[str, set[int]], generation: set[int]
) -> dict[str, list[float]]:
    """For each wake-up of a thread in `threads[who]` onto a CPU that a `generation`
    process was running on: milliseconds until that CPU switched to something else."""
    running: dict[int, int] = {}  # CPU -> pid of the task on it
    woken_at: dict[int, tuple[float, str]] = {}  # CPU -> (when, who) while a child keeps it
    held: dict[str, list[float]] = {who: [] for who in threads}
    for line in events.splitlines():
        match = EVENT.match(line)
        if not match:
            continue
        cpu, when, kind, fields = int(match[1]), float(match[2]), match[3], match[4]
        if kind == "sched_switch":
            running[cpu] = int(re.search(r"next_pid=(\d+)", fields)[1])
            if cpu in woken_at:
                since, who = woken_at.pop(cpu)
                held[who].append((when - since) * 1000)
        elif kind == "sched_wakeup":
            woken = int(re.search(r" pid=(\d+)", fields)[1])
            target = int(re.search(r"target_cpu=(\d+)", fields)[1])
            who = next((name for name, tids in threads.items() if woken in tids), None)
            if who and running.get(target) in generation and target not in woken_at:
                woken_at[target] = (when, who)
    return held


def summarise(held: list[float]) -> dict[str, Any]:
    if not held:
        return {"wakeups": 0}
    ordered = sorted(held)
    return {
        "wakeups": len(ordered),
        "held_over_1ms_pct": round(100 * sum(ms > HELD_MS for ms in ordered) / len(ordered), 2),
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "max_ms": round(ordered[-1], 2),
    }


def _record(data: Path, seconds: float) -> subprocess.Popen[bytes]:
    command = ["perf", "record", "-q", "-a", "-o", str(data)]
    command += ["-e", "sched:sched_switch", "-e", "sched:sched_wakeup", "--"]
    command += ["sleep", str(seconds)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _threads(pid: int) -> set[int]:
    return {int(name) for name in os.listdir(f"/proc/{pid}/task")}


def report(figures: dict[str, Any]) -> str:
    lines = [f"wake-ups onto a CPU that a generation process held, {figures['settings']}"]
    for who in WHO:
        cells = figures["pooled"][who]
        if not cells["wakeups"]:
            lines.append(f"{who:7} none")
            continue
        lines.append(
            f"{who:7} {cells['wakeups']:6} wake-ups; held > 1 ms: {cells['held_over_1ms_pct']}%"
            f"; p99 {cells['p99_ms']} ms, max {cells['max_ms']} ms"
        )
    health = [one["health"] for one in figures["runs"]]
    lines.append("GET /health meanwhile (p50 / p99 ms): " + ", ".join(
        f"{one['p50_ms']} / {one['p99_ms']}" for one in health
    ))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = run(seconds=args.seconds, repeat=args.repeat)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
