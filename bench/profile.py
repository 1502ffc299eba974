"""Profiles of the hot paths, from py-spy attached to a real gunicorn worker: `make profile`.

- submit: 16 wrk clients POST noop jobs while both workers are held (the submit path);
- dispatch: one client submits noop jobs one at a time (the path from submit to start);
- drain: two workers drain 5,000 queued noop jobs (claim, run, zip, finish), written
  before the server starts.

Samples are taken only while a thread holds the GIL (`--gil`), so they show where the
interpreter's one core goes. Each profile is summarised in
bench/results/profile-<name>.txt (the frames with the largest share of samples); the
folded stacks are left beside it (.folded, not committed) for a flame graph.
py-spy needs ptrace: root, or `kernel.yama.ptrace_scope=0`.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .backends import SQLITE, database
from .dispatch_latency import measure_ours
from .drain_throughput import _server
from .load import post_load
from .prefill import write_queued
from .servers import ROOT, Server, service_server, warm_up_workers
from .submit_throughput import JOB, QUEUE_SIZE, hold_worker

RESULTS = ROOT / "bench" / "results"
SECONDS = 4
RATE = 250
TOP = 35


def main() -> int:
    workdir = ROOT / "instance" / f"profile-{uuid.uuid4().hex[:8]}"
    try:
        for name, scenario in (
            ("submit", profile_submit),
            ("dispatch", profile_dispatch),
            ("drain", profile_drain),
        ):
            folded = RESULTS / f"profile-{name}.folded"
            scenario(workdir / name, folded)
            summary = summarise(folded, name)
            (RESULTS / f"profile-{name}.txt").write_text(summary)
            print(summary)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def profile_submit(workdir: Path, output: Path) -> None:
    with (
        database(SQLITE, workdir) as url,
        service_server(url, workdir, GENERATION_QUEUE_SIZE=QUEUE_SIZE) as server,
    ):
        warm_up_workers(server)
        for _ in range(2):
            hold_worker(server)
        post_load(server.url + "/api/v1/jobs", JOB, seconds=1)
        with spying(server, output):
            post_load(server.url + "/api/v1/jobs", JOB, seconds=SECONDS)


def profile_dispatch(workdir: Path, output: Path) -> None:
    spy: list[subprocess.Popen[bytes]] = []

    def attach(server: Server) -> None:
        spy.append(_py_spy(server, output))

    measure_ours(SQLITE, workdir, on_start=attach)
    spy[0].wait()


def profile_drain(workdir: Path, output: Path) -> None:
    with database(SQLITE, workdir) as url:
        write_queued(url, 5000)
        with _server(url, workdir) as server:
            time.sleep(2)  # past the generation processes' start-up
            with spying(server, output):
                time.sleep(SECONDS)


@contextmanager
def spying(server: Server, output: Path) -> Iterator[None]:
    spy = _py_spy(server, output)
    time.sleep(0.3)  # let py-spy attach before the measured work starts
    try:
        yield
    finally:
        spy.wait()


def _py_spy(server: Server, output: Path) -> subprocess.Popen[bytes]:
    worker = server.pids()[1]
    executable = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    return subprocess.Popen(
        [executable, "record", "--pid", str(worker), "--gil", "--nonblocking"]
        + ["--rate", str(RATE), "--duration", str(SECONDS), "--format", "raw"]
        + ["--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise(folded: Path, name: str) -> str:
    """Inclusive and self shares of the busiest frames in folded stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue  # a frame name broken over lines by py-spy (rare); not a sample
        frames = [re.sub(r":\d+\)", ")", frame) for frame in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"# {name}: {total} samples while holding the GIL ({RATE} Hz, {SECONDS} s)", ""]
    lines += ["## inclusive (time in the frame and below)"]
    lines += _top(inclusive, total)
    lines += ["", "## self (time in the frame itself)"]
    lines += _top(own, total)
    return "\n".join(lines) + "\n"


# Frames every thread has (start-up, thread bootstrap): they say nothing about the path.
_PLUMBING = ("Thread.", "<module>", "_run_", "_bootstrap", "run (gunicorn/app", "Arbiter.")


def _top(counts: collections.Counter[str], total: int) -> list[str]:
    chosen = [(f, n) for f, n in counts.most_common() if not f.startswith(_PLUMBING)][:TOP]
    return [f"{100 * n / total:5.1f}%  {frame}" for frame, n in chosen]


if __name__ == "__main__":
    sys.exit(main())
