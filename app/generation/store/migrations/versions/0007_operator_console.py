"""The operators' console: the registry of running services, the queue's history, and
room in `queue_state` for machine drains.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_processes",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("machine", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workers", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_processes")),
    )
    op.create_table(
        "queue_samples",
        sa.Column("at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("queued_high", sa.Integer(), nullable=False),
        sa.Column("queued_normal", sa.Integer(), nullable=False),
        sa.Column("queued_low", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("cancelled", sa.Integer(), nullable=False),
        sa.Column("wait_p50", sa.Double(), nullable=True),
        sa.Column("wait_p95", sa.Double(), nullable=True),
        sa.Column("run_p50", sa.Double(), nullable=True),
        sa.Column("run_p95", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("at", name=op.f("pk_queue_samples")),
    )
    with op.batch_alter_table("queue_state") as batch:
        batch.alter_column("name", existing_type=sa.String(length=16), type_=sa.String(length=160))


def downgrade() -> None:
    with op.batch_alter_table("queue_state") as batch:
        batch.alter_column("name", existing_type=sa.String(length=160), type_=sa.String(length=16))
    op.drop_table("queue_samples")
    op.drop_table("service_processes")
