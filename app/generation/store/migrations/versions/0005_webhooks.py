"""Webhooks: a job's target and events, a key's default target and signing secrets, and
the outbox of deliveries, written by triggers in the transaction that moves a job's status.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.generation.store.outbox_triggers import create_statements, drop_statements

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("webhook_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("webhook_host", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("webhook_events", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("webhook_key_id", sa.String(length=16), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("webhook_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("webhook_secret", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("webhook_previous_secret", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("webhook_previous_until", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=True),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("id", name=op.f("uq_webhook_deliveries_id")),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next_attempt_at",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"])
    op.create_index(
        "ix_webhook_deliveries_owner_status_pk", "webhook_deliveries", ["owner", "status", "pk"]
    )
    for statement in create_statements(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_statements(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("api_keys") as batch:
        for column in (
            "webhook_previous_until",
            "webhook_previous_secret",
            "webhook_secret",
            "webhook_url",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("jobs") as batch:
        for column in ("webhook_key_id", "webhook_events", "webhook_host", "webhook_url"):
            batch.drop_column(column)
