"""Static scheduling keys: a key per job fixed at admission and partial indexes over
queued rows (the claim reads one index entry), queue counts kept by triggers on
PostgreSQL (admission reads two rows instead of counting), owners' turns dropped (fair
share now lives in the key).

Rows queued before this revision are keyed by their age and priority alone (no fair
share between their owners), with PRIORITY_AGING_SECONDS as the release sees it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")

# One function for every move into or out of the queued state; the row of queue_counts
# it bumps is the trigger's argument. Row triggers fire only for rows that really moved
# (their WHEN), so progress updates and the like never touch the counts.
COUNT_FUNCTION = """
CREATE FUNCTION gs_count_queue_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE queue_counts SET n = n + 1 WHERE name = TG_ARGV[0];
    RETURN NULL;
END $$
"""
# Inserts are counted once per statement (a group commit inserts many rows at once).
COUNT_INSERTS_FUNCTION = """
CREATE FUNCTION gs_count_queued_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    added bigint;
BEGIN
    SELECT count(*) INTO added FROM inserted WHERE status = 'queued';
    IF added > 0 THEN
        UPDATE queue_counts SET n = n + added WHERE name = 'in';
    END IF;
    RETURN NULL;
END $$
"""
TRIGGERS = {
    "jobs_count_inserts": "AFTER INSERT ON jobs REFERENCING NEW TABLE AS inserted "
    "FOR EACH STATEMENT EXECUTE FUNCTION gs_count_queued_inserts()",
    "jobs_count_leaving": "AFTER UPDATE OF status ON jobs FOR EACH ROW "
    "WHEN (OLD.status = 'queued' AND NEW.status <> 'queued') "
    "EXECUTE FUNCTION gs_count_queue_move('out')",
    "jobs_count_returning": "AFTER UPDATE OF status ON jobs FOR EACH ROW "
    "WHEN (OLD.status <> 'queued' AND NEW.status = 'queued') "
    "EXECUTE FUNCTION gs_count_queue_move('in')",
    "jobs_count_deletes": "AFTER DELETE ON jobs FOR EACH ROW "
    "WHEN (OLD.status = 'queued') EXECUTE FUNCTION gs_count_queue_move('out')",
}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sort_key", sa.Double(), nullable=True))
    aging = float(os.environ.get("PRIORITY_AGING_SECONDS", "60"))
    epoch = (
        "extract(epoch from created_at)"
        if postgres
        else "(julianday(created_at) - 2440587.5) * 86400.0"
    )
    op.execute(f"UPDATE jobs SET sort_key = {epoch} + (priority - 1) * {aging}")
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("sort_key", existing_type=sa.Double(), nullable=False)
    op.create_index(
        "ix_jobs_queued_sort_key",
        "jobs",
        ["sort_key", "pk"],
        sqlite_where=QUEUED,
        postgresql_where=QUEUED,
    )
    op.create_index(
        "ix_jobs_queued_owner_priority_sort_key",
        "jobs",
        ["owner", "priority", "sort_key"],
        sqlite_where=QUEUED,
        postgresql_where=QUEUED,
    )
    op.drop_table("owner_turns")
    op.create_table(
        "queue_counts",
        sa.Column("name", sa.String(length=8), nullable=False),
        sa.Column("n", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_queue_counts")),
    )
    op.execute(
        "INSERT INTO queue_counts (name, n) "
        "SELECT 'in', count(*) FROM jobs WHERE status = 'queued' UNION ALL SELECT 'out', 0"
    )
    if postgres:
        op.execute(COUNT_FUNCTION)
        op.execute(COUNT_INSERTS_FUNCTION)
        for name, definition in TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {definition}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER {name} ON jobs")
        op.execute("DROP FUNCTION gs_count_queued_inserts()")
        op.execute("DROP FUNCTION gs_count_queue_move()")
    op.drop_table("queue_counts")
    op.create_table(
        "owner_turns",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column(
            "last_served", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_owner_turns")),
    )
    op.drop_index("ix_jobs_queued_owner_priority_sort_key", table_name="jobs")
    op.drop_index("ix_jobs_queued_sort_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("sort_key")
