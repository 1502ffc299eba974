"""The Alembic half of the schema: applying, reverting and writing migrations.

Migrations live in `migrations/versions/` (0001 is the schema releases had before
migrations; a database they made is adopted as 0001). Several processes may migrate at
once (Fly's release command on one machine, a service starting on another), so on
PostgreSQL an upgrade holds an advisory lock: the first applies, the others find nothing
to do.

Alembic and what it imports (Mako, Pygments, its DDL and autogenerate packages) take
about 10 MB, so only `store/schema.py` imports this module, and only when a schema must change
or a `flask --app wsgi db` command asks: a service starting on a current schema never
loads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any fixed number shared by every process of this service ("gs" + "schema").
UPGRADE_LOCK_KEY = 0x67_73_5C_48_45_4D_41
FIRST_REVISION = "0001"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` (idempotent)."""
    with _migrating(engine) as config:
        connection = config.attributes["connection"]
        if _made_before_migrations(connection):
            command.stamp(config, FIRST_REVISION)
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    with _migrating(engine) as config:
        command.downgrade(config, revision)


def new_revision(engine: Engine, message: str, *, autogenerate: bool = True) -> None:
    """Write a new migration file, by default diffing the models against the database."""
    with _migrating(engine) as config:
        command.revision(config, message=message, autogenerate=autogenerate)


def head_revision() -> str:
    """The newest revision in `migrations/versions/`, as Alembic reads it."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "migrations/versions holds no migration"
    return head


def _alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    return config


@contextmanager
def _migrating(engine: Engine) -> Iterator[AlembicConfig]:
    with engine.begin() as connection:
        _lock_out_other_migrators(connection)
        config = _alembic_config()
        config.attributes["connection"] = connection
        yield config


def _made_before_migrations(connection: Connection) -> bool:
    tables = inspect(connection).get_table_names()
    return "jobs" in tables and "alembic_version" not in tables


def _lock_out_other_migrators(connection: Connection) -> None:
    # SQLite serialises writers by itself; PostgreSQL needs this so that processes
    # starting together do not race to create the same tables.
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
