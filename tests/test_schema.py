"""Migrations: they build exactly the models' schema on both backends, apply idempotently,
revert, and are what `flask --app wsgi db upgrade` runs. A stale schema stops the start."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from app import create_app
from app.config import Config
from app.generation import GenerationService, schema
from app.generation.db import create_database_engine
from app.generation.jobs import JobStore
from app.generation.models import Base
from app.generation.results import FilesystemResultStore


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = create_database_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    else:
        engine = request.getfixturevalue("pg_engine")
    yield engine
    engine.dispose()


def differences(engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_migrations_build_exactly_the_models(engine):
    schema.upgrade(engine)
    schema.upgrade(engine)  # a second run finds nothing to do
    assert schema.current_revision(engine) == schema.head_revision()
    assert differences(engine) == []


def test_migrations_revert_to_an_empty_database_and_back(engine):
    schema.upgrade(engine)
    schema.downgrade(engine, "base")
    assert schema.current_revision(engine) is None
    schema.upgrade(engine)
    assert differences(engine) == []


def test_first_release_database_upgrades_keeping_its_jobs(tmp_path):
    engine = create_database_engine(f"sqlite:///{tmp_path / 'old.db'}")
    schema.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, owner, generator, params, priority, status, "
                "progress_percent, attempts, lease_epoch, cancel_requested, created_at) "
                "VALUES ('old', 'anonymous', 'images', '{}', 2, 'queued', 0, 0, 0, 0, "
                "'2026-01-01 00:00:00')"
            )
        )
    schema.upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id FROM jobs")).scalars().all() == ["old"]


def test_db_upgrade_command_migrates_without_starting_the_service(tmp_path):
    config = Config(database_url=f"sqlite:///{tmp_path / 'cli.db'}", results_dir=tmp_path)
    app = create_app(config)
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"database at revision {schema.head_revision()}" in result.output
    assert not app.extensions["generation"].accepting
    current = app.test_cli_runner().invoke(args=["db", "current"])
    assert f"current: {schema.head_revision()}" in current.output


def test_a_database_made_before_migrations_is_adopted(tmp_path):
    engine = create_database_engine(f"sqlite:///{tmp_path / 'legacy.db'}")
    schema.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))  # as create_all left it
    schema.upgrade(engine)
    assert schema.current_revision(engine) == schema.head_revision()
    assert differences(engine) == []


def test_a_service_on_sqlite_brings_its_schema_up_to_date(make_service, config):
    engine = create_database_engine(config.database_url)
    service = make_service()
    schema.downgrade(engine, "base")
    service.start()
    assert schema.current_revision(engine) == schema.head_revision()
    engine.dispose()


def test_a_service_on_postgresql_refuses_a_stale_schema(pg_engine, registry, tmp_path):
    service = GenerationService(JobStore(pg_engine), FilesystemResultStore(tmp_path), registry)
    schema.downgrade(pg_engine, "0001")
    try:
        with pytest.raises(schema.SchemaError, match="flask --app wsgi db upgrade"):
            service.start()
    finally:
        schema.upgrade(pg_engine)
