"""Databases to benchmark on: a fresh SQLite file, or a fresh PostgreSQL database.

Each `database()` block gets an empty database of its own and removes it afterwards, so
runs never see each other's jobs. PostgreSQL is reached through BENCH_POSTGRES_URL
(default: the local server, user `postgres`); a uniquely named database is created in it
and dropped at the end. Its schema is migrated first, as a deployment's release command
does (`flask --app wsgi db upgrade`): a service refuses a PostgreSQL database without it.
SQLite files migrate themselves when the service starts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from app.config import normalize_database_url
from app.generation.store import schema
from app.generation.store.engine import create_database_engine

SQLITE = "sqlite"
POSTGRES = "postgres"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_admin_url() -> str:
    return normalize_database_url(os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))


def postgres_available() -> bool:
    engine = create_engine(postgres_admin_url())
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    """A SQLAlchemy URL of a new, empty database on `backend`."""
    if backend == SQLITE:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir.resolve() / f"bench-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for leftover in workdir.glob(path.name + "*"):
                leftover.unlink()
        return
    if backend != POSTGRES:
        raise ValueError(f"backend must be {SQLITE!r} or {POSTGRES!r}, got {backend!r}")
    name = f"gs_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
        migrate(url)
        try:
            yield url
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def migrate(url: str) -> None:
    engine = create_database_engine(url)
    try:
        schema.upgrade(engine)
    finally:
        engine.dispose()
