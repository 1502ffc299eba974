"""Scale-out on PostgreSQL: leases of running jobs, owners' turns for claims in SQL, and
results kept in the database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "owner_turns",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column(
            "last_served", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_owner_turns")),
    )
    op.create_table(
        "result_chunks",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "epoch", "number", name=op.f("pk_result_chunks")),
    )


def downgrade() -> None:
    op.drop_table("result_chunks")
    op.drop_table("owner_turns")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_expires_at")
