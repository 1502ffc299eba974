"""Faults: hung generators, a full results disk, the database down at submit.

In each, the job that hit the fault ends in a recorded state, nothing half-written is
left behind, and the service goes on serving the next job.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from app import create_app, logs
from app.generation import GenerationService, JobStatus
from app.generation.generators import GeneratorRegistry, OutputFile
from app.generation.generators.images import ImagesGenerator
from app.generation.results.storage import FilesystemResultStore, ResultInfo, ResultStore
from app.generation.settings import ServiceSettings
from app.generation.store import engine as db
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore

from .conftest import wait_for
from .cpu_generators import StubbornGenerator
from .generators import GateGenerator, HangingGenerator, RecordingGenerator


@pytest.fixture
def hang() -> Iterator[HangingGenerator]:
    hang = HangingGenerator()
    yield hang
    hang.unblock.set()


class LogContextProbe(GateGenerator):
    """A gate that notes the `job_id` log field its run thread sees."""

    name = "probe"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str | None] = []

    def run(self, params, context):
        self.seen.append(logs.job_id.get())
        return super().run(params, context)


@pytest.fixture
def probe() -> Iterator[LogContextProbe]:
    probe = LogContextProbe()
    yield probe
    probe.release()


@pytest.fixture
def registry(recorder, gate, hang, probe) -> GeneratorRegistry:
    return GeneratorRegistry([ImagesGenerator(), recorder, gate, hang, probe, StubbornGenerator()])


def test_a_job_past_its_timeout_fails_and_the_worker_moves_on(make_service, gate):
    service = make_service(job_timeout=0.3)
    service.start()
    stuck = service.submit("gate", {})  # checks for cancellation, never finishes by itself
    follower = service.submit("record", {"tag": "next"})
    failed = wait_for(service, stuck.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == "timed out after 0.3 seconds (JOB_TIMEOUT_SECONDS)"
    assert wait_for(service, follower.id).status is JobStatus.SUCCEEDED
    assert service.stats()["abandoned_runs"] == 0


def test_a_generator_that_ignores_cancellation_is_abandoned_not_waited_for(
    make_service, hang, config
):
    service = make_service(job_timeout=0.2)  # one worker
    service.start()
    subscription = service.bus.subscribe()
    stuck = service.submit("hang", {})
    follower = service.submit("record", {"tag": "next"})
    failed = wait_for(service, stuck.id)
    assert failed.status is JobStatus.FAILED
    assert "did not stop when asked and was abandoned" in failed.error
    assert wait_for(service, follower.id).status is JobStatus.SUCCEEDED  # the worker lives
    assert service.stats()["abandoned_runs"] == 1

    hang.unblock.set()  # the abandoned run finally returns, long after its deadline
    deadline = time.monotonic() + 5
    while service.stats()["abandoned_runs"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.stats()["abandoned_runs"] == 0
    assert service.get(stuck.id).status is JobStatus.FAILED  # its late result is not taken
    assert not list(config.results_dir.glob(f"{stuck.id}.*"))
    stuck_events = []
    while (event := subscription.get(timeout=0.1)) is not None:
        if event.job_id == stuck.id:
            stuck_events.append(event.type)
    assert stuck_events[-1] == "failed" and "progress" not in stuck_events


def test_a_stubborn_job_in_a_worker_process_is_killed_at_its_timeout(make_service):
    service = make_service(cpu_isolation="process", job_timeout=0.5)
    service.start()
    stuck = service.submit("stubborn", {"seconds": 60})
    failed = wait_for(service, stuck.id, timeout=30)
    assert failed.status is JobStatus.FAILED
    assert failed.error == "timed out after 0.5 seconds (JOB_TIMEOUT_SECONDS)"
    assert service.stats()["abandoned_runs"] == 0  # a process is killed, not abandoned
    follower = service.submit("record", {"tag": "next"})  # in-thread: no process to respawn
    assert wait_for(service, follower.id, timeout=30).status is JobStatus.SUCCEEDED


def test_a_run_under_a_deadline_keeps_the_jobs_log_context(make_service, probe):
    service = make_service(job_timeout=60)
    service.observers.add(logs.JobLogContext())
    service.start()
    job = service.submit("probe", {})
    probe.release()
    assert wait_for(service, job.id).status is JobStatus.SUCCEEDED
    assert probe.seen == [job.id]


class FillingDisk(ResultStore):
    """A result store whose disk fills up while a ZIP is written, until `full` is False."""

    def __init__(self, inner: ResultStore) -> None:
        self.inner = inner
        self.files = inner.files
        self.full = True

    def save(
        self, job_id: str, epoch: int, files: Iterable[OutputFile], manifest: dict[str, Any]
    ) -> ResultInfo:
        return self.inner.save(job_id, epoch, self._filling(files), manifest)

    def _filling(self, files: Iterable[OutputFile]) -> Iterator[OutputFile]:
        for number, item in enumerate(files):
            if self.full and number == 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            yield item

    def open(self, job_id: str, epoch: int) -> IO[bytes]:
        return self.inner.open(job_id, epoch)

    def size(self, job_id: str, epoch: int) -> int:
        return self.inner.size(job_id, epoch)

    def delete(self, job_id: str, epoch: int) -> None:
        self.inner.delete(job_id, epoch)


@pytest.fixture
def full_disk_service(config, registry) -> Iterator[tuple[GenerationService, FillingDisk]]:
    engine = create_database_engine(config.database_url)
    schema.upgrade(engine)
    disk = FillingDisk(FilesystemResultStore(config.results_dir))
    service = GenerationService(JobStore(engine), disk, registry, ServiceSettings(workers=1))
    service.start()
    yield service, disk
    service.shutdown(wait=True, timeout=0.5)


def test_a_full_results_disk_fails_the_job_clearly_and_the_service_goes_on(
    full_disk_service, config
):
    service, disk = full_disk_service
    client = create_app(config, service=service).test_client()
    body = {"generator": "images", "params": {"prompt": "x", "count": 3, "width": 64}}
    job_id = client.post("/api/v1/jobs", json=body).json["id"]
    failed = wait_for(service, job_id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == "the results disk is full (ENOSPC): the result could not be saved"
    # No half-written ZIP or .tmp, and no file of the failed run left to serve.
    assert [path.name for path in config.results_dir.iterdir()] in ([], ["files"])
    assert list((config.results_dir / "files").glob("*")) == []
    assert client.get("/ready").status_code == 200

    disk.full = False
    retry = client.post("/api/v1/jobs", json=body).json["id"]
    assert wait_for(service, retry).status is JobStatus.SUCCEEDED
    with client.get(f"/api/v1/jobs/{retry}/result") as download:
        assert download.status_code == 200 and download.data[:2] == b"PK"


def assert_nothing_was_written(response, service):
    assert response.status_code == 503
    assert response.json["error"]["code"] == "database_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert service.stats()["queue_size"] == 0  # the reserved slot was given back


def test_a_locked_sqlite_database_at_submit_is_503_and_writes_nothing(
    make_service, config, monkeypatch
):
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    service = make_service()
    service.start()
    client = create_app(config, service=service).test_client()
    locker = sqlite3.connect(config.database_url.removeprefix("sqlite:///"), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        refused = client.post("/api/v1/jobs", json={"generator": "record"})
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert_nothing_was_written(refused, service)
    assert service.stats()["total_requests"] == 0

    accepted = client.post("/api/v1/jobs", json={"generator": "record"})
    assert accepted.status_code == 202
    assert wait_for(service, accepted.json["id"]).status is JobStatus.SUCCEEDED


@pytest.fixture
def postgres() -> Iterator[tuple[str, Any, str]]:
    """A fresh database on the local server: (url, admin engine, name); dropped after."""
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    name = f"gs_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {error}")
        pytest.skip(f"PostgreSQL is not available: {error}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", admin, name
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def set_database_up(admin, name: str, up: bool) -> None:
    with admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(up)}'))
        if not up:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )


def test_postgres_down_at_submit_is_503_and_writes_nothing_then_recovers(
    postgres, config, tmp_path
):
    url, admin, name = postgres
    engine = create_database_engine(url)
    schema.upgrade(engine)
    recorder = RecordingGenerator()
    service = GenerationService(
        JobStore(engine),
        FilesystemResultStore(tmp_path / "pg-results"),
        GeneratorRegistry([recorder, GateGenerator()]),
        ServiceSettings(workers=1),
    )
    service.start()
    try:
        client = create_app(config, service=service).test_client()
        set_database_up(admin, name, False)
        refused = client.post("/api/v1/jobs", json={"generator": "record", "params": {"tag": 1}})
        assert client.get("/ready").status_code == 503
        assert client.get("/health").status_code == 200
        set_database_up(admin, name, True)
        assert_nothing_was_written(refused, service)
        assert service.stats()["total_requests"] == 0

        accepted = client.post("/api/v1/jobs", json={"generator": "record", "params": {"tag": 2}})
        assert accepted.status_code == 202
        assert wait_for(service, accepted.json["id"]).status is JobStatus.SUCCEEDED
        assert recorder.ran == [2]
    finally:
        service.shutdown(wait=True, timeout=1)
        engine.dispose()
