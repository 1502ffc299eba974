"""`make rehearse`: the real image, built from the Dockerfile with podman, run as Fly runs it.

Scenarios, each printing one PASS/FAIL line with its figures (exit status 1 if any fails):

1. start: a container starts on an empty volume, `/ready` answers, a job runs to a ZIP,
   and the server runs as an unprivileged uid;
2. sigterm: SIGTERM (as a deploy sends) mid-job puts the job back in the queue; a new
   container on the same volume finishes it;
3. postgres: two containers share one PostgreSQL queue (the host's); `podman kill -s
   KILL` of one mid-job loses nothing: the other takes its job back and runs everything;
4. idle: with IDLE_STOP_SECONDS the container ends by itself (exit 0) once idle; a job
   queued while it is stopped runs when a new one starts on the same volume.

podman needs root, runc and cgroupfs here, and a stand-in for the `python:3.11-slim`
base, built once from Debian's packages (../shared/DESIGN.md has the recipe, done below
on first use). Not part of `make test` (root, a few minutes); `.ci/run` runs it after.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

from app.generation import Job, JobStatus, Priority
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore

ROOT = Path(__file__).resolve().parent.parent
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
BASE = "docker.io/library/python:3.11-slim-bookworm"
IMAGE = "localhost/generation-service:rehearsal"
POSTGRES_ADMIN = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# Open mode keeps the scenarios to the container's behaviour; keys are tested elsewhere.
COMMON_ENV = {"AUTH_MODE": "open", "LOG_LEVEL": "INFO", "GENERATION_WORKERS": "1"}


def podman(*args: str, check: bool = True, timeout: float = 600) -> str:
    done = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:2])} failed: {done.stderr.strip()[-800:]}")
    return done.stdout.strip()


def ensure_base() -> None:
    """The stand-in base image, built from Debian's packages on first use."""
    if subprocess.run([*PODMAN, "image", "exists", BASE], check=False).returncode == 0:
        return
    print("building the stand-in base image (once; a few minutes)", flush=True)
    rootfs = Path(tempfile.mkdtemp(prefix="rehearse-rootfs-"))
    subprocess.run(
        ["debootstrap", "--variant=minbase",
         "--include=python3,python3-pip,python3-venv,ca-certificates",
         "bookworm", str(rootfs), "http://deb.debian.org/debian"],
        check=True, capture_output=True,
    )  # fmt: skip
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
    (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")
    pip = rootfs / "usr/local/bin/pip"
    pip.write_text('#!/bin/sh\nexec /usr/bin/python3 -m pip "$@"\n')
    pip.chmod(0o755)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/")
    if Path("/etc/pip.conf").exists():
        shutil.copy("/etc/pip.conf", rootfs / "etc/pip.conf")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run([*PODMAN, "import", "-", BASE], stdin=tar.stdout, check=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)


def build() -> float:
    started = time.monotonic()
    podman("build", "--pull=never", "--network", "host", *LIMITS, "-t", IMAGE, str(ROOT))
    return time.monotonic() - started


class Container:
    """One container of the image on the host's network, on a port of its own."""

    def __init__(self, name: str, port: int, env: dict[str, str], volume: Path | None) -> None:
        self.name, self.port = f"rehearse-{name}-{uuid.uuid4().hex[:6]}", port
        options = ["--name", self.name, "--hostname", self.name, "--network", "host", *LIMITS]
        for key, value in (COMMON_ENV | env | {"PORT": str(port)}).items():
            options += ["-e", f"{key}={value}"]
        if volume is not None:
            options += ["-v", f"{volume}:/data"]
        podman("run", "-d", *options, IMAGE)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with suppress(requests.RequestException):
                if requests.get(self.url + "/ready", timeout=2).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.logs()[-2000:]}")

    def submit(self, generator: str, params: dict) -> str:
        answer = requests.post(
            self.url + "/api/v1/jobs", json={"generator": generator, "params": params}, timeout=10
        )
        answer.raise_for_status()
        return answer.json()["id"]

    def job(self, job_id: str) -> dict:
        return requests.get(f"{self.url}/api/v1/jobs/{job_id}", timeout=10).json()

    def wait_job(self, job_id: str, statuses: set[str], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            time.sleep(0.1)
        raise RuntimeError(f"job {job_id} still {job['status']} after {timeout}s")

    def uid_of_pid_1(self) -> int:
        status = podman("exec", self.name, "cat", "/proc/1/status")
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:")))

    def stop(self, timeout: int = 40) -> tuple[int, float]:
        """SIGTERM (as Fly sends it), then the exit code and how long it took."""
        started = time.monotonic()
        podman("stop", "-t", str(timeout), self.name)
        return self.exit_code(), time.monotonic() - started

    def wait_exit(self, timeout: float) -> int:
        podman("wait", self.name, timeout=timeout)
        return self.exit_code()

    def exit_code(self) -> int:
        return int(podman("inspect", "-f", "{{.State.ExitCode}}", self.name))

    def kill(self) -> None:
        podman("kill", "-s", "KILL", self.name)

    def logs(self) -> str:
        return podman("logs", self.name, check=False)

    def remove(self) -> None:
        podman("rm", "-f", self.name, check=False)


def scenario_start(volume: Path) -> str:
    box = Container("start", 8301, {}, volume)
    try:
        ready = box.wait_ready()
        job_id = box.submit(
            "images", {"prompt": "rehearsal", "count": 1, "width": 64, "height": 64}
        )
        job = box.wait_job(job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        archive = requests.get(f"{box.url}/api/v1/jobs/{job_id}/result", timeout=10)
        names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
        assert "manifest.json" in names, names
        uid = box.uid_of_pid_1()
        assert uid != 0, "the server runs as root"
        code, took = box.stop()
        assert code == 0, code
        return (
            f"ready in {ready:.1f} s, ZIP of {len(names)} files, uid {uid}, stopped in {took:.1f} s"
        )
    finally:
        box.remove()


def scenario_sigterm(volume: Path) -> str:
    env = {"DRAIN_TIMEOUT_SECONDS": "1"}
    first = Container("sigterm-1", 8302, env, volume)
    try:
        first.wait_ready()
        job_id = first.submit("noop", {"ms": 6000})
        first.wait_job(job_id, {"running"})
        code, took = first.stop()
        assert code == 0, code
    finally:
        first.remove()
    second = Container("sigterm-2", 8302, env, volume)
    try:
        second.wait_ready()
        job = second.wait_job(job_id, {"succeeded", "failed"})
        assert (job["status"], job["attempts"]) == ("succeeded", 2), job
        return f"drained in {took:.1f} s, the job back in the queue, finished after the restart"
    finally:
        second.remove()


def scenario_postgres(_volume: Path) -> str:
    name = f"gs_rehearse_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name
    engine = create_database_engine(url)
    schema.upgrade(engine)
    env = {"DATABASE_URL": url.replace("+psycopg", ""), "JOB_LEASE_SECONDS": "3"}
    boxes = [Container(f"pg-{n}", 8303 + n, env, None) for n in (1, 2)]
    try:
        for box in boxes:
            box.wait_ready()
        jobs = [boxes[0].submit("noop", {"ms": 1500}) for _ in range(6)]
        victim = _running_on(boxes, jobs)
        victim.kill()
        survivor = next(box for box in boxes if box is not victim)
        finished = [survivor.wait_job(job, {"succeeded", "failed"}, timeout=90) for job in jobs]
        assert all(job["status"] == "succeeded" for job in finished), finished
        retried = sum(job["attempts"] > 1 for job in finished)
        return f"6 jobs on 2 containers, one killed mid-job: 6 succeeded ({retried} taken back)"
    finally:
        for box in boxes:
            box.remove()
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _running_on(boxes: list[Container], jobs: list[str]) -> Container:
    """A container running one of `jobs` now (its /status counts a busy worker)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for box in boxes:
            status = requests.get(box.url + "/status", timeout=5).json()
            if status["generation_service"]["local"]["active_workers"]:
                return box
        time.sleep(0.05)
    raise RuntimeError(f"none of {len(jobs)} jobs started")


def scenario_idle(volume: Path) -> str:
    env = {"IDLE_STOP_SECONDS": "3"}
    box = Container("idle", 8305, env, volume)
    try:
        box.wait_ready()
        started = time.monotonic()
        code = box.wait_exit(timeout=60)
        took = time.monotonic() - started
        assert code == 0, code
        assert "stopping this process: idle" in box.logs()
    finally:
        box.remove()
    job_id = _queue_directly(volume)  # while no container runs
    again = Container("idle-2", 8305, env, volume)
    try:
        again.wait_ready()
        job = again.wait_job(job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        return f"exited 0 by itself {took:.1f} s after ready; a job queued meanwhile ran on restart"
    finally:
        again.remove()


def _queue_directly(volume: Path) -> str:
    """A queued row written into the volume's database, as if submitted before a stop."""
    engine = create_database_engine(f"sqlite:///{volume / 'generation.db'}")
    try:
        job = JobStore(engine).insert(
            Job(
                pk=0,
                id=uuid.uuid4().hex,
                owner="anonymous",
                generator="noop",
                params={"ms": 0},
                priority=Priority.NORMAL,
                status=JobStatus.QUEUED,
                created_at=datetime.now(UTC),
            )
        )
    finally:
        engine.dispose()
    owner = (volume / "generation.db").stat()
    for path in volume.glob("generation.db*"):  # the app user must write them too
        os.chown(path, owner.st_uid, owner.st_gid)
    return job.id


SCENARIOS: list[tuple[str, Callable[[Path], str]]] = [
    ("start", scenario_start),
    ("sigterm", scenario_sigterm),
    ("postgres", scenario_postgres),
    ("idle", scenario_idle),
]


def main() -> int:
    began = time.monotonic()
    ensure_base()
    print(f"image built in {build():.0f} s", flush=True)
    failures = 0
    for name, scenario in SCENARIOS:
        volume = Path(tempfile.mkdtemp(prefix=f"rehearse-{name}-"))
        volume.chmod(0o777)
        try:
            print(f"PASS {name}: {scenario(volume)}", flush=True)
        except Exception as error:  # noqa: BLE001 - report every scenario, then fail
            failures += 1
            print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
        finally:
            shutil.rmtree(volume, ignore_errors=True)
    print(json.dumps({"scenarios": len(SCENARIOS), "failed": failures,
                      "seconds": round(time.monotonic() - began)}))  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
