"""The database schema's version, and what a starting service does about it.

The schema is made and changed by Alembic migrations (`migrations/versions/`, applied by
store/migrate.py): `flask --app wsgi db upgrade` runs them (Fly's release_command). A service
starting on SQLite (one process owns the file) brings its schema up to date itself; on
PostgreSQL it refuses to start on a schema that is not at the head revision, since other
machines share it and migrating is a deliberate, release-time step.

Starting needs Alembic only when a schema must change. Reading the version is one query,
and an empty SQLite database is built from the models and stamped with the head
revision, as Alembic's cookbook does ("Building an Up to Date Database from Scratch";
tests/test_schema.py checks that this builds what the migrations build). So Alembic
(about 10 MB of modules) stays out of a service that starts on a current or a new
database: store/migrate.py loads on first use of `upgrade`, `downgrade`, `new_revision` or
`head_revision`.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    insert,
    inspect,
    select,
)

from .tables import Base

# The newest migration's revision. tests/test_schema.py fails until a new migration's
# revision is written here.
HEAD_REVISION = "0007"

# Alembic's own version table, as Alembic defines it (alembic.ddl.impl.version_table_impl).
VERSION_TABLE = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


class SchemaError(RuntimeError):
    """The database schema is not the one this code expects."""


def prepare(engine: Engine) -> None:
    """Make sure the schema is current before a service starts (see the module docstring)."""
    if engine.dialect.name != "sqlite":
        check_current(engine)
        return
    with engine.begin() as connection:
        # The write lock first, so that two processes starting on one new file (a server
        # and a `flask keys` command) do not both build it.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        if not inspect(connection).get_table_names():
            _build_current(connection)
            return
        current = _stamped_revision(connection)
    if current != HEAD_REVISION:
        upgrade(engine)


def check_current(engine: Engine) -> None:
    """Raise SchemaError unless the database is at the head revision."""
    current = current_revision(engine)
    if current != HEAD_REVISION:
        raise SchemaError(
            f"the database schema is at revision {current or 'none (empty database)'} but "
            f"this code needs {HEAD_REVISION}: run `flask --app wsgi db upgrade`"
        )


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return _stamped_revision(connection)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` (idempotent)."""
    from . import migrate  # Alembic: loaded only when a schema changes (module docstring)

    migrate.upgrade(engine, revision)


def downgrade(engine: Engine, revision: str) -> None:
    from . import migrate

    migrate.downgrade(engine, revision)


def new_revision(engine: Engine, message: str, *, autogenerate: bool = True) -> None:
    """Write a new migration file, by default diffing the models against the database."""
    from . import migrate

    migrate.new_revision(engine, message, autogenerate=autogenerate)


def head_revision() -> str:
    """The newest revision in `migrations/versions/`, as Alembic reads it (HEAD_REVISION
    is what the code expects; the tests keep the two equal)."""
    from . import migrate

    return migrate.head_revision()


def _build_current(connection: Connection) -> None:
    Base.metadata.create_all(connection)
    VERSION_TABLE.create(connection)
    connection.execute(insert(VERSION_TABLE).values(version_num=HEAD_REVISION))


def _stamped_revision(connection: Connection) -> str | None:
    """The revision Alembic recorded (None before any migration); several heads, which
    this linear history never makes, are joined so that they compare unequal."""
    if not inspect(connection).has_table(VERSION_TABLE.name):
        return None
    heads = connection.execute(select(VERSION_TABLE.c.version_num)).scalars().all()
    return ", ".join(sorted(heads)) or None
