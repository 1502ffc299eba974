"""Flask CLI commands: `flask --app wsgi db ...` (run by Fly's release_command on deploy)
and `flask --app wsgi keys ...` (API keys).

These commands only touch the database: the app factory builds the generation service
without starting it, so no worker thread runs here.
"""

from __future__ import annotations

from datetime import timedelta

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import Engine

from .generation import MachineNotFoundError
from .generation.intake.keys import ApiKey, KeyStore, Tier
from .generation.notify.signing import new_secret
from .generation.notify.targets import UnsafeTarget, check_target
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


@db.command("release")
def release() -> None:
    """What a deploy's release machine runs (fly.toml): apply the migrations to a shared
    database (PostgreSQL). With SQLite there is nothing to do there: the release
    machine has no volume, and the service migrates the file on its own at start."""
    if current_app.config["SERVICE_CONFIG"].is_sqlite:
        click.echo("SQLite: nothing to migrate here; the service migrates its file at start.")
        return
    engine = _engine()
    schema.upgrade(engine)
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
@click.option(
    "--webhook",
    "webhook_url",
    default=None,
    help="A default webhook target for this key's jobs (https URL).",
)
@click.option("--admin", is_flag=True, help="An operator's key: may call /api/v1/admin.")
def create_key(name: str, tier: str, webhook_url: str | None, admin: bool) -> None:
    """Create a key for NAME (the owner of the jobs it submits); print it once, with
    the secret that signs its jobs' webhooks."""
    if webhook_url is not None:
        _check_webhook(webhook_url)
    keys = _store()
    try:
        record, key = keys.create(name, Tier(tier), webhook_url=webhook_url, admin=admin)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="NAME") from None
    role = ", admin" if record.admin else ""
    click.echo(f"Created key {record.key_id} for {record.name} ({record.tier}{role}).", err=True)
    click.echo("Store it now: it is not stored anywhere and cannot be shown again.", err=True)
    # The key stays stdout's last line (scripts take it from there); the secret that
    # signs its webhooks goes with the other messages, to stderr.
    secret = keys.webhook_secrets(record.key_id)[0]
    click.echo(f"Its webhook signing secret (receivers verify with it): {secret}", err=True)
    click.echo(key)


@keys_cli.command("rotate-webhook-secret")
@click.argument("key_id")
@click.option(
    "--overlap-hours",
    type=click.FloatRange(0, 24 * 30),
    default=24.0,
    show_default=True,
    help="How long the old secret keeps signing too, while receivers switch.",
)
def rotate_webhook_secret(key_id: str, overlap_hours: float) -> None:
    """Give KEY_ID a new webhook signing secret and print it; both sign for a while."""
    secret = _store().rotate_webhook_secret(
        key_id.removeprefix("gsk_"), timedelta(hours=overlap_hours)
    )
    if secret is None:
        raise click.ClickException(f"no key with id {key_id!r} (see `keys list --all`)")
    click.echo(f"New secret; the old one signs too for {overlap_hours:g} hours.", err=True)
    click.echo(secret)


@keys_cli.command("set-webhook")
@click.argument("key_id")
@click.argument("url", required=False)
def set_webhook(key_id: str, url: str | None) -> None:
    """Set KEY_ID's default webhook target to URL (none given: clear it)."""
    if url is not None:
        _check_webhook(url)
    record = _store().set_webhook_url(key_id.removeprefix("gsk_"), url)
    if record is None:
        raise click.ClickException(f"no key with id {key_id!r} (see `keys list --all`)")
    click.echo(f"Key {record.key_id}: default webhook {url or 'cleared'}.")


queue_cli = AppGroup(
    "queue", help="Pause and resume the queue (every process and machine); drain a machine."
)


@queue_cli.command("pause")
def pause_queue() -> None:
    """Pause the queue: submissions get 503 `paused`, no job starts, running jobs finish."""
    service = get_service(current_app)
    schema.prepare(service.store.engine)
    paused = service.pause_queue(by="cli")
    click.echo(f"Queue paused (since {paused.at:%Y-%m-%d %H:%M:%S} UTC, by {paused.by}).")


@queue_cli.command("resume")
def resume_queue() -> None:
    """Resume a paused queue."""
    service = get_service(current_app)
    schema.prepare(service.store.engine)
    resumed = service.resume_queue()
    click.echo("Queue resumed." if resumed else "The queue was not paused.")


@queue_cli.command("drain")
@click.argument("machine", required=False)
def drain_machine(machine: str | None) -> None:
    """Drain MACHINE (default: this one): its workers finish their jobs and claim no more,
    until `queue undrain`; the other machines go on."""
    service = get_service(current_app)
    schema.prepare(service.store.engine)
    machine = machine or service.machine
    try:
        service.ops.steering.drain(machine, by="cli")
    except MachineNotFoundError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Machine {machine} drained: its running jobs finish, it starts no more.")


@queue_cli.command("undrain")
@click.argument("machine", required=False)
def undrain_machine(machine: str | None) -> None:
    """End MACHINE's drain (default: this one's)."""
    service = get_service(current_app)
    schema.prepare(service.store.engine)
    machine = machine or service.machine
    ended = service.ops.steering.undrain(machine)
    click.echo(f"Machine {machine} undrained." if ended else f"Machine {machine} was not drained.")


webhooks_cli = AppGroup("webhooks", help="Webhook signing secrets.")


@webhooks_cli.command("new-secret")
def new_webhook_secret() -> None:
    """Print a new whsec_ secret, for WEBHOOK_SECRET (open mode's signing secret)."""
    click.echo(new_secret())


@webhooks_cli.command("secret")
def open_mode_secret() -> None:
    """Print the secret that signs open mode's webhooks (from WEBHOOK_SECRET or
    SECRET_KEY); receivers verify deliveries with it."""
    secrets = get_service(current_app).settings.webhooks.open_secrets
    if not secrets:
        raise click.ClickException(
            "no signing secret: set WEBHOOK_SECRET (`flask --app wsgi webhooks new-secret`)"
        )
    click.echo(secrets[0])


def _check_webhook(url: str) -> None:
    settings = get_service(current_app).settings.webhooks
    try:
        check_target(url, allow_http=settings.allow_http, allow_private=settings.allow_private)
    except UnsafeTarget as refused:
        raise click.BadParameter(str(refused), param_hint="--webhook / URL") from None


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
    status += ", admin" if record.admin else ""
    return f"{record.key_id:<10} {record.name:<24} {record.tier.value:<9} {created:<20} {status}"
