"""`flask --app wsgi db ...`: database commands, run by Fly's release_command on deploy."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from .generation.db import create_database_engine, create_schema

db = AppGroup("db", help="Manage the job database.")


@db.command("upgrade")
def upgrade() -> None:
    """Bring the database schema up to date (creates missing tables)."""
    config = current_app.config["SERVICE_CONFIG"]
    engine = create_database_engine(config.database_url)
    try:
        create_schema(engine)
    finally:
        engine.dispose()
    click.echo(f"database schema is up to date ({engine.url.render_as_string()})")
