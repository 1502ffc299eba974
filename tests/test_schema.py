"""Migrations: they build exactly the models' schema on both backends, apply idempotently,
revert, and are what `flask --app wsgi db upgrade` runs. A stale schema stops the start.
A new SQLite database is built from the models at start, and must equal what they build."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from app import create_app
from app.config import Config
from app.generation import GenerationService
from app.generation.results.storage import FilesystemResultStore
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore
from app.generation.store.tables import Base
from app.wiring import get_service


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = create_database_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    else:
        engine = request.getfixturevalue("pg_engine")
    yield engine
    engine.dispose()


# A job as the first release wrote it.
OLD_JOB = (
    "INSERT INTO jobs (id, owner, generator, params, priority, status, progress_percent, "
    "attempts, lease_epoch, cancel_requested, created_at) VALUES ('old', 'anonymous', "
    "'images', '{}', 2, 'queued', 0, 0, 0, 0, '2026-01-01 00:00:00')"
)


def differences(engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_migrations_build_exactly_the_models(engine):
    schema.upgrade(engine)
    schema.upgrade(engine)  # a second run finds nothing to do
    assert schema.current_revision(engine) == schema.head_revision()
    assert differences(engine) == []


def test_the_head_revision_the_code_expects_is_the_newest_migration():
    newest = schema.head_revision()
    assert schema.HEAD_REVISION == newest, f"set HEAD_REVISION = {newest!r} in store/schema.py"


def sqlite_structure(engine) -> dict:
    """Every table's columns, indexes and foreign keys, as SQLite reports them. The
    indexes behind UNIQUE constraints (origin "u") are named by position, so they are
    compared by their columns only."""
    structure = {}
    with engine.connect() as connection:
        run = connection.exec_driver_sql
        tables = run("SELECT name FROM sqlite_master WHERE type = 'table'").scalars().all()
        for table in tables:
            columns = {row[1]: row[2:] for row in run(f"PRAGMA table_info('{table}')")}
            indexes = {
                (
                    name if origin == "c" else None,
                    unique,
                    partial,
                    tuple(row[2] for row in run(f"PRAGMA index_info('{name}')")),
                )
                for _, name, unique, origin, partial in run(f"PRAGMA index_list('{table}')")
            }
            keys = {row[2:] for row in run(f"PRAGMA foreign_key_list('{table}')")}
            structure[table] = (columns, indexes, keys)
    return structure


def test_a_new_sqlite_database_is_built_as_the_migrations_build_it(tmp_path):
    built = create_database_engine(f"sqlite:///{tmp_path / 'built.db'}")
    migrated = create_database_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    schema.prepare(built)
    schema.upgrade(migrated)
    assert sqlite_structure(built) == sqlite_structure(migrated)
    assert schema.current_revision(built) == schema.head_revision()
    assert differences(built) == []
    schema.upgrade(built)  # Alembic takes the stamp at its word: nothing left to apply
    assert sqlite_structure(built) == sqlite_structure(migrated)
    built.dispose()
    migrated.dispose()


def first_release_database(tmp_path):
    """A SQLite file at the first release's schema (0001), holding job "old"."""
    engine = create_database_engine(f"sqlite:///{tmp_path / 'old.db'}")
    schema.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text(OLD_JOB))
    return engine


def test_a_service_starting_on_an_older_sqlite_schema_migrates_it_keeping_its_jobs(tmp_path):
    engine = first_release_database(tmp_path)
    schema.prepare(engine)
    assert schema.current_revision(engine) == schema.head_revision()
    assert differences(engine) == []
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id FROM jobs")).scalars().all() == ["old"]
    engine.dispose()


def test_migrations_revert_to_an_empty_database_and_back(engine):
    schema.upgrade(engine)
    schema.downgrade(engine, "base")
    assert schema.current_revision(engine) is None
    schema.upgrade(engine)
    assert differences(engine) == []


def test_first_release_database_upgrades_keeping_its_jobs(tmp_path):
    engine = first_release_database(tmp_path)
    schema.upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id FROM jobs")).scalars().all() == ["old"]


def test_db_upgrade_command_migrates_without_starting_the_service(tmp_path):
    config = Config(database_url=f"sqlite:///{tmp_path / 'cli.db'}", results_dir=tmp_path)
    app = create_app(config)
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"database at revision {schema.head_revision()}" in result.output
    assert not get_service(app).accepting
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


def test_0003_keys_queued_jobs_by_age_and_priority_and_counts_them(engine):
    schema.upgrade(engine)
    schema.downgrade(engine, "0002")  # the release before, with a queued and a failed job
    job = OLD_JOB.replace("0, 0, 0, 0, '2026", "0, 0, 0, false, '2026")  # a real boolean
    with engine.begin() as connection:
        connection.execute(text(job))  # NORMAL, queued since 2026-01-01 00:00:00 UTC
        connection.execute(text(job.replace("'old'", "'done'").replace("queued", "failed")))
    schema.upgrade(engine)
    with engine.connect() as connection:
        keys = dict(connection.execute(text("SELECT id, sort_key FROM jobs")).all())
        counts = dict(connection.execute(text("SELECT name, n FROM queue_counts")).all())
    new_year = 1767225600.0  # 2026-01-01 00:00:00 UTC
    assert keys["old"] == pytest.approx(new_year + 60, abs=0.01)
    assert keys["done"] == pytest.approx(new_year + 60, abs=0.01)
    assert counts == {"in": 1, "out": 0}
