"""Flask CLI commands: `flask --app wsgi db ...` (run by Fly's release_command on deploy)
and `flask --app wsgi keys ...` (API keys).

These commands only touch the database: the app factory builds the generation service
without starting it, so no worker thread runs here.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import Engine

from .generation.intake.keys import ApiKey, KeyStore, Tier
from .generation.store import schema
from .generation.store.engine import create_database_engine
from .wiring import get_service

db = AppGroup("db", help="Manage the database schema (Alembic migrations).")


def _engine() -> Engine:
    return create_database_engine(current_app.config["SERVICE_CONFIG"].database_url)


@db.command("upgrade")
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: the latest). Safe to run repeatedly."""
    engine = _engine()
    schema.upgrade(engine, revision)
    click.echo(f"database at revision {schema.current_revision(engine)}")


@db.command("downgrade")
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Revert migrations down to REVISION ("base" empties the database)."""
    engine = _engine()
    schema.downgrade(engine, revision)
    click.echo(f"database at revision {schema.current_revision(engine) or 'base'}")


@db.command("current")
def current() -> None:
    """Print the database's revision and the latest one this code knows."""
    click.echo(f"current: {schema.current_revision(_engine()) or 'none'}")
    click.echo(f"head:    {schema.head_revision()}")


@db.command("revision")
@click.option("-m", "--message", required=True, help="What the migration changes.")
@click.option("--empty", is_flag=True, help="Do not diff the models against the database.")
def revision(message: str, empty: bool) -> None:
    """Write a new migration file from the difference between the models and the database."""
    schema.new_revision(_engine(), message, autogenerate=not empty)


keys_cli = AppGroup("keys", help="Create, list and revoke API keys.")


def _store() -> KeyStore:
    # SQLite: create the tables; PostgreSQL: check that they are current.
    schema.prepare(get_service(current_app).store.engine)
    return current_app.extensions["keys"]


@keys_cli.command("create")
@click.argument("name")
@click.option(
    "--tier",
    type=click.Choice([tier.value for tier in Tier]),
    default=Tier.STANDARD.value,
    show_default=True,
    help="premium may ask for high priority, standard for normal, free for low.",
)
def create_key(name: str, tier: str) -> None:
    """Create a key for NAME (the owner of the jobs it submits); print it once."""
    try:
        record, key = _store().create(name, Tier(tier))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="NAME") from None
    click.echo(f"Created key {record.key_id} for {record.name} ({record.tier}).", err=True)
    click.echo("Store it now: it is not stored anywhere and cannot be shown again.", err=True)
    click.echo(key)


@keys_cli.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
def list_keys(include_revoked: bool) -> None:
    """List keys (ids, owners and tiers; never the keys themselves)."""
    records = _store().all(include_revoked=include_revoked)
    click.echo(f"{'KEY ID':<10} {'NAME':<24} {'TIER':<9} {'CREATED (UTC)':<20} STATUS")
    for record in records:
        click.echo(_row(record))


@keys_cli.command("revoke")
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    """Revoke the key KEY_ID (as `keys list` shows it); it stops working at once."""
    record = _store().revoke(key_id.removeprefix("gsk_"))
    if record is None:
        raise click.ClickException(f"no live key with id {key_id!r} (see `keys list --all`)")
    click.echo(f"Revoked key {record.key_id} of {record.name}.")


def _row(record: ApiKey) -> str:
    created = record.created_at.strftime("%Y-%m-%d %H:%M:%S")
    status = "revoked " + record.revoked_at.strftime("%Y-%m-%d") if record.revoked_at else "live"
    return f"{record.key_id:<10} {record.name:<24} {record.tier.value:<9} {created:<20} {status}"
