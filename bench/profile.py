"""Profiles of the hot paths, from py-spy attached to a real gunicorn worker: `make profile`.

Each path runs on SQLite and on PostgreSQL (when BENCH_POSTGRES_URL, or the local server,
answers; bench/backends.py), on a fresh database:

- submit: 16 wrk clients POST noop jobs while both workers are held (the submit path);
- dispatch: one client submits noop jobs one at a time (the path from submit to start);
- drain: two workers drain queued noop jobs (claim, run, zip, finish), written before
  the server starts.

py-spy samples the worker (`--nonblocking`: it is never paused) in two windows of SECONDS
each, back to back, while the load runs before, between and after them; two spies at
once cost the server a fifth of its submit rate on two cores, so they take turns:

- first `--gil --idle` (RATE Hz): a sample is kept only when a thread holds the GIL, so
  the stacks show where the interpreter's one core goes. py-spy takes exactly
  RATE x SECONDS samples. Some cannot be read; its log says why, and nearly all are the
  GIL holder's stack, changing while it is read: those count as held. GIL-held share of
  wall time = (kept + holder unreadable) / (taken - otherwise unreadable). The statement
  share is the share of kept samples inside database execution: any frame of
  SQLAlchemy's engine, pool or dialects, of psycopg or sqlite3, or
  store/driver_statements.py's write/read.
  The jobs written and finished, the worker's CPU and, on PostgreSQL, its backends' CPU
  and transactions (pg_stat_database, flushed by each backend at most once a second:
  approximate) are of this window.
- then `--idle --threads` (IDLE_RATE Hz): every thread, holding the GIL or not. The
  busy time of the threads serving requests (gunicorn's pool, while in a request),
  holding jobs (gen-worker-N, claim to finish) and running a job's call (its generator
  and the result's save, on gen-worker-N-calls) is split by the innermost Python frame:
  waiting in the database (psycopg's Connection.wait; on SQLite, the frames that call
  the sqlite3 module, which runs statements without the GIL), for another thread's
  group commit, for the job's call, for other locks, on a socket, and the rest
  ("running or GIL": on a CPU or waiting for the GIL; py-spy cannot tell them apart).

Each profile is summarised in bench/results/profile-<path>-<backend>.txt: those figures
first, then the frames with the largest share of GIL samples. The folded stacks are left
beside it (.folded and -idle.folded, not committed) for a flame graph. The machine is
shared: run a profile twice before trusting a difference of a few points.
`python -m bench.profile --only submit-postgres --only drain` runs some of them;
`--results DIR --prefix before-profile-` writes elsewhere (a profile of another checkout).
py-spy needs ptrace: root, or `kernel.yama.ptrace_scope=0`.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select, text

from app.generation.job import JobStatus
from app.generation.store.engine import create_database_engine
from app.generation.store.tables import JobRow

from .backends import POSTGRES, SQLITE, database, postgres_available
from .dispatch_latency import wait_finished
from .drain_throughput import _server
from .load import post_load
from .machine import machine_load
from .prefill import write_queued
from .servers import ROOT, Server, service_server, warm_up_workers
from .submit_throughput import JOB, QUEUE_SIZE, hold_worker

RESULTS = ROOT / "bench" / "results"
SECONDS = 4
RATE = 250
IDLE_RATE = 50  # every thread per sample: a lower rate keeps its own cost down
TOP = 35
DRAIN_JOBS = {SQLITE: 20_000, POSTGRES: 6_000}  # enough for both windows
PATHS = ("submit", "dispatch", "drain")
_columns = JobRow.__table__.c


@dataclass
class Spy:
    """One py-spy run and what it said about itself."""

    process: subprocess.Popen[str]
    output: Path
    rate: int
    taken: int = 0  # sample instants: py-spy stops after rate x SECONDS of them
    errors: int = 0  # instants it could not read
    # ... of which a thread's stack (with --gil: the GIL holder's, which is running and
    # so changing under the reader) rather than the interpreter's state
    stack_errors: int = 0
    kept: int = 0  # stacks written (GIL profile: one per instant the GIL was held)
    remarks: list[str] = field(default_factory=list)

    def finish(self) -> None:
        stdout, _ = self.process.communicate()
        found = re.search(r"Samples: (\d+) Errors: (\d+)", stdout)
        if found is None:
            raise RuntimeError(f"py-spy failed:\n{stdout}")
        self.kept, self.errors = int(found[1]), int(found[2])
        self.stack_errors = stdout.count("Failed to call get_stack_trace")
        self.taken = self.rate * SECONDS
        if "process exited" in stdout:
            self.remarks.append("the worker exited before the window closed")
        behind = re.findall(r"([\d.]+\w+) behind in sampling", stdout)
        if behind:
            self.remarks.append(f"py-spy fell behind (up to {behind[-1]})")


@dataclass
class Window:
    """What the server did while py-spy sampled it (figures of the GIL window)."""

    gil: Spy
    idle: Spy | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the worker process's user + system time
    written: int = 0  # jobs whose rows appeared
    finished: int = 0  # jobs that succeeded
    queued_after: int = 0
    load: str = ""
    remarks: list[str] = field(default_factory=list)
    # PostgreSQL only: its backends serving the bench database, and their transactions.
    server_cpu_seconds: float | None = None
    commits: int | None = None
    rollbacks: int | None = None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        help="a path (submit), a backend (postgres) or one profile (drain-sqlite); repeatable",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the outputs")
    parser.add_argument("--prefix", default="profile-", help="output file names' prefix")
    args = parser.parse_args(argv)
    backends = [SQLITE] + ([POSTGRES] if postgres_available() else [])
    if POSTGRES not in backends:
        print("PostgreSQL does not answer: SQLite profiles only", file=sys.stderr)
    chosen = [
        (path, backend)
        for path in PATHS
        for backend in backends
        if not args.only or {path, backend, f"{path}-{backend}"} & set(args.only)
    ]
    args.results.mkdir(parents=True, exist_ok=True)
    workdir = ROOT / "instance" / f"profile-{uuid.uuid4().hex[:8]}"
    try:
        for path, backend in chosen:
            name = f"{path}-{backend}"
            stem = args.results / f"{args.prefix}{name}"
            load_before = machine_load()["loadavg_1m"]
            window = SCENARIOS[path](backend, workdir / name, stem)
            summary = summarise(window, name, backend, load_before, code_version())
            stem.with_suffix(".txt").write_text(summary)
            print(summary)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def profile_submit(backend: str, workdir: Path, stem: Path) -> Window:
    with (
        database(backend, workdir) as url,
        service_server(url, workdir, GENERATION_QUEUE_SIZE=QUEUE_SIZE) as server,
    ):
        warm_up_workers(server)
        for _ in range(2):
            hold_worker(server)
        post_load(server.url + "/api/v1/jobs", JOB, seconds=1)
        result = []
        load = threading.Thread(
            target=lambda: result.append(
                post_load(server.url + "/api/v1/jobs", JOB, seconds=2 * SECONDS + 4)
            )
        )
        load.start()
        time.sleep(0.5)
        window = spy_on(server, url, stem)
        load.join()
        rate = result[0].rate
        window.load = f"16 wrk clients, {rate:,.0f} submits/s over the whole load"
        return window


def profile_dispatch(backend: str, workdir: Path, stem: Path) -> Window:
    with (
        database(backend, workdir) as url,
        service_server(url, workdir) as server,
        server.client() as client,
    ):
        warm_up_workers(server)
        stop = threading.Event()

        def one_at_a_time() -> None:
            while not stop.is_set():
                wait_finished(client, client.post("/api/v1/jobs", JOB).body["id"])

        submitter = threading.Thread(target=one_at_a_time)
        submitter.start()
        try:
            time.sleep(0.5)
            window = spy_on(server, url, stem)
        finally:
            stop.set()
            submitter.join()
        window.load = "one client, one noop job at a time"
        return window


def profile_drain(backend: str, workdir: Path, stem: Path) -> Window:
    with database(backend, workdir) as url:
        write_queued(url, DRAIN_JOBS[backend])
        with _server(url, workdir) as server:
            time.sleep(2)  # past the generation processes' start-up
            window = spy_on(server, url, stem)
            window.load = f"{DRAIN_JOBS[backend]:,} noop jobs queued before the start"
            if not window.queued_after:
                window.remarks.append("the queue ran dry before the second window closed")
            return window


SCENARIOS: dict[str, Callable[[str, Path, Path], Window]] = {
    "submit": profile_submit,
    "dispatch": profile_dispatch,
    "drain": profile_drain,
}


def spy_on(server: Server, url: str, stem: Path) -> Window:
    """Sample the worker for SECONDS holding the GIL, then for SECONDS more with every
    thread; the caller keeps it loaded throughout. Jobs, CPU and PostgreSQL's figures are
    of the first window."""
    worker = server.pids()[1]
    before = _job_counts(url)
    postgres = _postgres_facts(url)
    cpu = _cpu_seconds(worker)
    started = time.monotonic()
    gil = _py_spy(worker, stem.with_suffix(".folded"), ["--gil", "--idle"], RATE)
    gil.finish()
    window = Window(gil=gil, seconds=time.monotonic() - started)
    window.cpu_seconds = _cpu_seconds(worker) - cpu
    if postgres is not None:
        pids, commits, rollbacks = postgres
        _, commits_after, rollbacks_after = _postgres_facts(url) or postgres
        window.server_cpu_seconds = sum(_cpu_seconds(pid) - cpu for pid, cpu in pids.items())
        window.commits = commits_after - commits
        window.rollbacks = rollbacks_after - rollbacks
    after = _job_counts(url)
    window.written = sum(after.values()) - sum(before.values())
    succeeded = JobStatus.SUCCEEDED.value
    window.finished = after.get(succeeded, 0) - before.get(succeeded, 0)
    idle = _py_spy(worker, Path(f"{stem}-idle.folded"), ["--idle", "--threads"], IDLE_RATE)
    idle.finish()
    window.idle = idle
    window.queued_after = _job_counts(url).get(JobStatus.QUEUED.value, 0)
    return window


def _py_spy(pid: int, output: Path, options: list[str], rate: int) -> Spy:
    executable = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    process = subprocess.Popen(
        [executable, "record", "--pid", str(pid), "--nonblocking", *options]
        + ["--rate", str(rate), "--duration", str(SECONDS), "--format", "raw"]
        + ["--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"RUST_LOG": "warn"},  # each unreadable sample, and why
    )
    return Spy(process, output, rate)


def _job_counts(url: str) -> dict[str, int]:
    engine = create_database_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(_columns.status, func.count()).group_by(_columns.status)
            ).all()
    finally:
        engine.dispose()
    return {status: count for status, count in rows}


def _postgres_facts(url: str) -> tuple[dict[int, float], int, int] | None:
    """On PostgreSQL: the CPU time so far of each backend connected to the bench database
    (the service's pool keeps its connections), and the database's commits and rollbacks
    (pg_stat_database: each backend reports them at most once a second, so a window's
    difference is approximate)."""
    if not url.startswith("postgresql"):
        return None
    engine = create_database_engine(url)
    try:
        with engine.connect() as connection:
            pids = connection.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
            commits, rollbacks = connection.execute(
                text(
                    "SELECT xact_commit, xact_rollback FROM pg_stat_database"
                    " WHERE datname = current_database()"
                )
            ).one()
    finally:
        engine.dispose()
    return {pid: _cpu_seconds(pid) for pid in pids}, commits, rollbacks


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (0 once it has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Stacks -------------------------------------------------------------------------------

Stack = list[str]


def read_folded(folded: Path) -> list[tuple[Stack, int]]:
    """(frames, count) per line of py-spy's raw output, line numbers dropped."""
    stacks = []
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack:
            continue  # a frame name broken over lines by py-spy (rare); not a sample
        stacks.append(([re.sub(r":\d+\)", ")", frame) for frame in stack.split(";")], int(count)))
    return stacks


def _file(frame: str) -> str:
    return frame.rpartition(" (")[2].rstrip(")")


# Database execution: a frame in one of these files, or one of store/driver_statements.py's
# statement runners.
_DB_FILES = ("sqlalchemy/engine/", "sqlalchemy/pool/", "sqlalchemy/dialects/", "psycopg")
_DB_FILES += ("sqlite3/",)
_HOT_RUNNERS = {
    f"{name} (app/generation/store/driver_statements.py)" for name in ("write", "read", "_rollback")
}
# The frames that call the sqlite3 module (C, statements run without the GIL): on SQLite,
# a thread whose innermost Python frame is one of these is in the database.
_SQLITE_CALLERS = _HOT_RUNNERS | {
    f"DefaultDialect.{name} (sqlalchemy/engine/default.py)"
    for name in ("do_execute", "do_executemany", "do_execute_no_params", "do_commit", "do_rollback")
}
_PSYCOPG_WAITS = ("Connection.wait (psycopg/connection.py)",)


def _in_statement(frame: str) -> bool:
    return frame in _HOT_RUNNERS or _file(frame).startswith(_DB_FILES)


def _package(frame: str) -> str:
    """The top-level package (or stdlib module) a frame's file is in."""
    path = _file(frame)
    if path.startswith("app/"):
        return "/".join(path.split("/")[:2]) if "/" in path[4:] else "app"
    return path.split("/")[0].removesuffix(".py") if path else "?"


def statement_shares(stacks: list[tuple[Stack, int]]) -> tuple[int, collections.Counter[str]]:
    """GIL samples inside database execution, and those samples by their innermost frame's
    package."""
    inside = 0
    by_leaf: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        if any(_in_statement(frame) for frame in frames):
            inside += count
            by_leaf[_package(frames[-1])] += count
    return inside, by_leaf


# Threads in the --idle profile: (role, busy?) from the stack.
def _role(frames: Stack) -> tuple[str | None, bool]:
    names = set(frames)
    if "_worker (concurrent/futures/thread.py)" in names:
        return "request", "_WorkItem.run (concurrent/futures/thread.py)" in names
    if "WorkerPool._work (app/generation/execution/workers.py)" in names:
        waiting_for_job = (
            "WorkerPool._claim (app/generation/execution/workers.py)" in names
            and _file(frames[-1]) in ("threading.py", "queue.py")
        )
        return "job", not waiting_for_job
    if (
        "_serve (app/generation/execution/deadline.py)" in names
    ):  # runs a job's generator, saves its result
        return "job call", "_Call.run (app/generation/execution/deadline.py)" in names
    return None, False


# The threads each path keeps busy, and what busy means for them.
ROLES = {
    "submit": ("request",),
    "dispatch": ("request", "job", "job call"),
    "drain": ("job", "job call"),
}
_BUSY = {
    "request": "serving a request",
    "job": "holding a job (claim to finish, the call included)",
    "job call": "in a job's call (the generator, then saving its result)",
}
WAITS = ("database", "group commit", "job call", "locks", "socket", "running or GIL")


def _wait(frames: Stack, backend: str) -> str:
    leaf = frames[-1]
    if leaf in _PSYCOPG_WAITS or _file(leaf) == "psycopg/waiting.py":
        return "database"
    if backend == SQLITE and leaf in _SQLITE_CALLERS:
        return "database"
    blocked = _file(leaf) in ("threading.py", "queue.py") or leaf.startswith("Handler.acquire")
    if blocked and any(frame.startswith("GroupCommit.") for frame in frames):
        return "group commit"
    if blocked and any(frame.startswith("call_with_deadline") for frame in frames):
        return "job call"
    if blocked:
        return "locks"
    if _file(leaf) in ("socket.py", "selectors.py", "gunicorn/util.py", "ssl.py"):
        return "socket"
    return "running or GIL"


def thread_shares(
    stacks: list[tuple[Stack, int]], backend: str
) -> dict[str, collections.Counter[str]]:
    """Per role, busy samples by what the thread was doing."""
    roles: dict[str, collections.Counter[str]] = {}
    for frames, count in stacks:
        role, busy = _role(frames)
        if role is None:
            continue
        counts = roles.setdefault(role, collections.Counter())
        counts["samples"] += count
        if busy:
            counts["busy"] += count
            counts[_wait(frames, backend)] += count
    return roles


# Summary ------------------------------------------------------------------------------


def code_version() -> str:
    """The commit the profiled app is at, and whether app/ differs from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %cd", "--date=format:%Y-%m-%d"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "app"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes in app/" if changed else "")


def summarise(
    window: Window, name: str, backend: str, load_before: float, code: str = "unknown"
) -> str:
    """The window's figures, then the inclusive and self shares of the busiest frames."""
    gil_stacks = read_folded(window.gil.output)
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in gil_stacks:
        total += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    gil, idle = window.gil, window.idle
    assert idle is not None
    # An instant whose GIL holder's stack could not be read had a holder: it counts as held
    # (py-spy's log says which instants failed how); one that failed before is left out.
    held = total + gil.stack_errors
    known = gil.taken - (gil.errors - gil.stack_errors)
    inside, by_leaf = statement_shares(gil_stacks)
    seconds = window.seconds
    lines = [
        f"# {name}: py-spy on the gunicorn worker, {SECONDS} s ({window.load})",
        "",
        f"code: {code}",
        f"window: {seconds:.1f} s wall, load average {load_before:.2f} before;"
        f" {window.written:,} jobs written ({window.written / seconds:,.0f}/s),"
        f" {window.finished:,} finished ({window.finished / seconds:,.0f}/s),"
        f" {window.queued_after:,} queued at the end",
        f"worker process CPU: {100 * window.cpu_seconds / seconds:.0f}% of one core"
        + _postgres_line(window),
        f"GIL held: {_pct(held, known)} of wall time ({held} of {known} samples at {RATE} Hz,"
        f" of which {gil.stack_errors} with a holder whose stack could not be read;"
        f" {gil.errors - gil.stack_errors} unreadable)",
        f"statement share: {_pct(inside, total)} of GIL samples inside database execution"
        f" (innermost frame in: {_shares(by_leaf, total)})",
        f"GIL samples by the innermost frame's package: {_shares(packages, total, 8)}",
    ]
    idle_stacks = read_folded(idle.output)
    instants = idle.taken - idle.errors
    shares = thread_shares(idle_stacks, backend)
    for role in ROLES[name.partition("-")[0]]:
        counts = shares.get(role, collections.Counter())
        busy = counts["busy"]
        lines.append(
            f"{role} threads' wall time while {_BUSY[role]} ({busy / max(1, instants):.1f}"
            f" threads on average, --idle at {IDLE_RATE} Hz): "
            + ", ".join(f"{wait} {_pct(counts[wait], busy)}" for wait in WAITS if counts[wait])
        )
    for remark in window.remarks + gil.remarks + idle.remarks:
        lines.append(f"note: {remark}")
    lines += ["", "## inclusive (time in the frame and below)"]
    lines += _top(inclusive, total)
    lines += ["", "## self (time in the frame itself)"]
    lines += _top(own, total)
    return "\n".join(lines) + "\n"


def _postgres_line(window: Window) -> str:
    if window.server_cpu_seconds is None or window.commits is None or window.rollbacks is None:
        return ""
    jobs = max(window.written, window.finished, 1)
    return (
        f"; PostgreSQL backends' CPU {100 * window.server_cpu_seconds / window.seconds:.0f}%;"
        f" ≈{window.commits / jobs:.2f} commits and ≈{window.rollbacks / jobs:.2f} rollbacks"
        " per job (pg_stat_database)"
    )


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def _shares(counts: collections.Counter[str], total: int, top: int = 5) -> str:
    return ", ".join(f"{key} {_pct(n, total)}" for key, n in counts.most_common(top))


# Frames every thread has (start-up, thread bootstrap): they say nothing about the path.
_PLUMBING = ("Thread.", "<module>", "_run_", "_bootstrap", "run (gunicorn/app", "Arbiter.")
_PLUMBING += ("thread (", "_worker (concurrent", "_WorkItem.run", "WorkerPool._loop")


def _top(counts: collections.Counter[str], total: int) -> list[str]:
    chosen = [(f, n) for f, n in counts.most_common() if not f.startswith(_PLUMBING)][:TOP]
    return [f"{100 * n / total:5.1f}%  {frame}" for frame, n in chosen]


if __name__ == "__main__":
    sys.exit(main())
