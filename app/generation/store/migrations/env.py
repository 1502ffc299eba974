"""Alembic environment. Run through app/generation/store/migrate.py (by store/schema.py, or by
`flask --app wsgi db ...`), which hands over an open connection, so there is no
alembic.ini and no URL here."""

from __future__ import annotations

from alembic import context

from app.generation.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
