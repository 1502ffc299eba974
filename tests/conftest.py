"""Shared fixtures: a service on a temporary SQLite file with test generators, an app,
a client. The service is started by the fixtures that need it and always shut down.

PostgreSQL fixtures use a database of their own on the local server, created for the
test session and dropped after it. Without a server those tests skip, except in CI
(`CI=true`), where they fail.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from app import create_app
from app.config import Config
from app.generation import GenerationService, Job, JobStatus
from app.generation.generators import GeneratorRegistry
from app.generation.generators.images import ImagesGenerator
from app.generation.generators.noop import NoopGenerator
from app.generation.intake.keys import Tier
from app.generation.results.storage import FilesystemResultStore
from app.generation.settings import ServiceSettings
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore
from app.wiring import build_service
from tests.servers import wsgi_server

from .generators import (
    ChattyGenerator,
    CountingGenerator,
    FailingGenerator,
    GarbageGenerator,
    GateGenerator,
    PacedImagesGenerator,
    RecordingGenerator,
    SleepGenerator,
    StepperGenerator,
)
from .openapi_check import assert_conforms


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
        results_dir=tmp_path / "results",
        generation_workers=1,
        generation_queue_size=10,
    )


class FakeClock:
    """A wall clock that only moves when told to."""

    def __init__(self, start: datetime = datetime(2030, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder() -> RecordingGenerator:
    return RecordingGenerator()


@pytest.fixture
def gate() -> Iterator[GateGenerator]:
    gate = GateGenerator()
    yield gate
    gate.release()


@pytest.fixture
def stepper() -> Iterator[StepperGenerator]:
    stepper = StepperGenerator()
    yield stepper
    stepper.advance(1000)


@pytest.fixture
def paced() -> Iterator[PacedImagesGenerator]:
    paced = PacedImagesGenerator()
    yield paced
    paced.advance(1000)


@pytest.fixture
def registry(
    recorder: RecordingGenerator,
    gate: GateGenerator,
    stepper: StepperGenerator,
    paced: PacedImagesGenerator,
    tmp_path: Path,
) -> GeneratorRegistry:
    counter = CountingGenerator(tmp_path / "executions.log", "test")
    return GeneratorRegistry(
        [
            ImagesGenerator(),
            NoopGenerator(),
            recorder,
            gate,
            stepper,
            ChattyGenerator(),
            paced,
            FailingGenerator(),
            GarbageGenerator(),
            SleepGenerator(),
            counter,
        ]
    )


SETTINGS = {field.name for field in dataclasses.fields(ServiceSettings)}


@pytest.fixture
def make_service(
    config: Config, registry: GeneratorRegistry
) -> Iterator[Callable[..., GenerationService]]:
    """Build services on the test database; every one built is shut down at the end."""
    built: list[GenerationService] = []

    def make(**overrides: object) -> GenerationService:
        engine = create_database_engine(config.database_url)
        schema.upgrade(engine)
        settings = {
            "workers": config.generation_workers,
            "queue_size": config.generation_queue_size,
            "max_queued_per_key": config.max_queued_per_key,
        }
        parts = {}  # the service's parts (bus, listener, clock, name); the rest are settings
        for name, value in overrides.items():
            (settings if name in SETTINGS else parts)[name] = value
        service = GenerationService(
            JobStore(engine),
            FilesystemResultStore(config.results_dir),
            registry,
            ServiceSettings(**settings),
            **parts,
        )
        built.append(service)
        return service

    yield make
    for service in built:
        service.shutdown(wait=True, timeout=0.5)


@pytest.fixture
def service(make_service: Callable[..., GenerationService]) -> GenerationService:
    service = make_service()
    service.start()
    return service


@pytest.fixture
def app(config: Config, service: GenerationService) -> Flask:
    app = create_app(config, service=service)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


TEST_SECRET_KEY = "a-test-secret-key-that-is-long-enough"


@pytest.fixture
def keyed_app(config: Config, service: GenerationService) -> Flask:
    """The app in AUTH_MODE=keys, on the same service as `app`."""
    keyed = dataclasses.replace(
        config, auth_mode="keys", secret_key=TEST_SECRET_KEY, rate_limit="1000/second"
    )
    app = create_app(keyed, service=service)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def keyed_client(keyed_app: Flask) -> FlaskClient:
    return keyed_app.test_client()


@pytest.fixture
def issue_key(keyed_app: Flask) -> Callable[..., dict[str, str]]:
    """Create a key; returns the request headers that authenticate with it."""

    def issue(name: str, tier: str = "standard") -> dict[str, str]:
        _, key = keyed_app.extensions["keys"].create(name, Tier(tier))
        return {"Authorization": f"Bearer {key}"}

    return issue


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """`app` on a real, threaded HTTP server (WebSockets need one): its `host:port`."""
    server = wsgi_server(app)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="live-server", daemon=True
    )
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        app.extensions["sockets"].close_all()
        server.shutdown()
        thread.join(5)


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    with serving(app) as address:
        yield address


@pytest.fixture
def keyed_live_server(keyed_app: Flask) -> Iterator[str]:
    with serving(keyed_app) as address:
        yield address


POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def empty_postgres_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards. Without PostgreSQL the test
    is skipped, or fails in CI (CI=true), which must run every test."""
    name = f"gs_test_{uuid.uuid4().hex}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        admin.dispose()
        reason = f"no PostgreSQL at {POSTGRES_ADMIN_URL}: {error.orig}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, migrated database for this test session."""
    with empty_postgres_database() as url:
        engine = create_database_engine(url)
        schema.upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on the session's PostgreSQL database, emptied for this test."""
    engine = create_database_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "TRUNCATE jobs, result_chunks, result_files, api_keys, webhook_deliveries, "
                "service_processes, queue_samples, queue_state "
                "RESTART IDENTITY"
            )
        )
        # TRUNCATE fires no row triggers: the queue's counts start again by hand.
        connection.execute(text("UPDATE queue_counts SET n = 0"))
    yield engine
    engine.dispose()


@pytest.fixture
def make_pg_service(
    postgres_url: str, pg_engine: Engine, tmp_path: Path, registry: GeneratorRegistry
) -> Iterator[Callable[..., GenerationService]]:
    """Started services on the session's PostgreSQL database, wired as in production
    (`build_service`, results in the database), each named; `config` overrides the
    Config's fields. Every one is shut down at the end."""
    built: list[GenerationService] = []

    def make(name: str, **config: object) -> GenerationService:
        settings: dict[str, object] = {
            "database_url": postgres_url,
            "results_dir": tmp_path / name,
            "results_store": "database",
            "generation_workers": 1,
        }
        service = build_service(Config(**(settings | config)), registry, name=name)
        built.append(service)
        service.start()
        return service

    yield make
    for service in built:
        service.shutdown(wait=True, timeout=1)


def wait_for(
    service: GenerationService,
    job_id: str,
    statuses: set[JobStatus] | None = None,
    timeout: float = 10,
) -> Job:
    """Poll until the job reaches one of `statuses` (default: any terminal one)."""
    deadline = time.monotonic() + timeout
    while True:
        job = service.get(job_id)
        if (job.status in statuses) if statuses else job.status.is_terminal:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")
        time.sleep(0.01)


def hold_worker(service, gate):
    """Occupy the single worker so that later submissions queue up."""
    blocker = service.submit("gate", {})
    assert gate.started.wait(5)
    return blocker


@pytest.fixture
def call(app, client):
    def call(method: str, url: str, **kwargs):
        response = client.open(url, method=method, **kwargs)
        assert_conforms(app, method, url, response)
        return response

    return call
