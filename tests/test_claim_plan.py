"""The queue's statements read O(1) rows whatever the depth: their plans, asserted.

PostgreSQL: `EXPLAIN (ANALYZE, BUFFERS)` of the claim and of the admitting INSERT with
1,000 and with 100,000 queued rows. Neither may sort the queued set, each must read its
partial index, and what they read (rows, buffers) must not grow with the queue. This is
structure, not timing: the figures are counts of rows and pages. SQLite: the same
statements' plans search the partial indexes instead of scanning.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from app.generation.queue.claim_postgres import CLAIM
from app.generation.queue.postgres import QUEUE_DEPTH
from app.generation.store import schema
from app.generation.store.admission_postgres import ADMISSION_READ, INSERT_ROWS, group_columns
from app.generation.store.engine import create_database_engine
from app.generation.store.job_writes import INSERT_SQLITE
from app.generation.store.jobs import JobStore
from app.generation.store.overview import FINISHED_IN, JobOverview, failed_lately
from app.generation.store.tables import JobRow

DEPTHS = (1_000, 100_000)
# Slack for what grows with log(depth), not with the depth: a B-tree one or two levels
# deeper at 100,000 rows, per index the statement reads or (an INSERT) writes.
SLACK_BUFFERS_PER_INDEX = 2

FILL = """
INSERT INTO jobs (id, owner, generator, params, priority, status, created_at, sort_key,
                  progress_percent, attempts, lease_epoch, cancel_requested)
SELECT md5(n::text || :salt), 'owner-' || (n % 50), 'noop', '{}', 1 + n % 3, 'queued',
       now(), extract(epoch from now()) + n * 0.01 + (n % 3) * 60, 0, 0, 0, false
FROM generate_series(1, :count) AS n
"""


def fill(connection: Connection, count: int) -> None:
    connection.execute(text(FILL), {"count": count, "salt": uuid.uuid4().hex})
    connection.execute(text("ANALYZE jobs"))


def explain(connection: Connection, statement: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The executed plan of `statement` (its effects rolled back by the caller)."""
    compiled = statement.compile(dialect=connection.dialect)
    sql = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + compiled.string
    bound = compiled.construct_params(params)
    processors = compiled._bind_processors
    bound = {k: processors[k](v) if k in processors else v for k, v in bound.items()}
    [[document]] = connection.exec_driver_sql(sql, bound).all()
    document = json.loads(document) if isinstance(document, str) else document
    return document[0]["Plan"]


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def reads(plan: dict[str, Any]) -> tuple[int, int]:
    """(rows the scans produced, shared buffers touched) over the whole plan."""
    scans = [node for node in nodes(plan) if "Scan" in node["Node Type"]]
    rows = sum(node["Actual Rows"] * node.get("Actual Loops", 1) for node in scans)
    return rows, plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]


def measured(engine: Engine, statement: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The statement's plan at each depth, each run in a transaction rolled back."""
    plans = []
    filled = 0
    for depth in DEPTHS:
        with engine.begin() as connection:
            fill(connection, depth - filled)
        filled = depth
        with engine.connect() as connection, connection.begin():
            for _ in range(2):  # the first warms the cache; the second is measured
                with connection.begin_nested() as undone:
                    plan = explain(connection, statement, params)
                    undone.rollback()
            plans.append(plan)
    return plans


def claim_params(engine: Engine) -> dict[str, Any]:
    return JobStore(engine).claim_params("w", datetime.now(UTC))


def new_row() -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "owner": "owner-7",
        "generator": "noop",
        "params": {},
        "priority": 2,
        "status": "queued",
        "created_at": datetime.now(UTC),
        "sort_key": datetime.now(UTC).timestamp() + 60,
        "progress_percent": 0.0,
        "attempts": 0,
        "lease_epoch": 0,
        "cancel_requested": False,
        "idempotency_key": None,
        "request_hash": None,
        "webhook_url": None,
        "webhook_host": None,
        "webhook_events": None,
        "webhook_key_id": None,
    }


def test_the_postgres_claim_reads_one_index_entry_at_any_depth(pg_engine):
    shallow, deep = measured(pg_engine, CLAIM, claim_params(pg_engine))
    for plan in (shallow, deep):
        types = [node["Node Type"] for node in nodes(plan)]
        assert "Sort" not in types and "Seq Scan" not in types
        indexes = {node.get("Index Name") for node in nodes(plan)}
        assert "ix_jobs_queued_sort_key" in indexes
    (rows_shallow, buffers_shallow), (rows_deep, buffers_deep) = reads(shallow), reads(deep)
    assert rows_deep <= rows_shallow
    # It reads two indexes (the queue order, the primary key) and, as its UPDATE changes
    # indexed columns (not HOT), writes the running row into every index whose predicate
    # that row meets: the non-partial ones. Each may be a level deeper at 100,000 rows.
    touched = 2 + non_partial_indexes(pg_engine)
    assert buffers_deep <= buffers_shallow + touched * SLACK_BUFFERS_PER_INDEX


def non_partial_indexes(engine: Engine) -> int:
    query = text(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'jobs' AND indexdef NOT LIKE '%WHERE%'"
    )
    with engine.connect() as connection:
        return connection.execute(query).scalar_one()


def test_the_postgres_admission_reads_the_owners_tail_and_two_counts_at_any_depth(pg_engine):
    read = {"owners": ["owner-7", "owner-8"], "priorities": [2, 3], "channel": "plan_test"}
    shallow, deep = measured(pg_engine, ADMISSION_READ, read)
    for plan in (shallow, deep):
        types = [node["Node Type"] for node in nodes(plan)]
        assert "Sort" not in types and "Seq Scan" not in types
        indexes = {node.get("Index Name") for node in nodes(plan)}
        assert indexes >= {"ix_jobs_queued_owner_priority_sort_key"}
    assert reads(deep)[0] <= reads(shallow)[0]  # two counts, one index entry per pair
    assert reads(deep)[1] <= reads(shallow)[1] + 2 * SLACK_BUFFERS_PER_INDEX

    shallow, deep = measured(pg_engine, INSERT_ROWS, group_columns([new_row()]))
    # An INSERT writes an entry in every index of the table.
    indexes = len(JobRow.__table__.indexes) + 2  # + the primary key and `id`'s unique
    assert reads(deep)[1] <= reads(shallow)[1] + indexes * SLACK_BUFFERS_PER_INDEX

    with pg_engine.connect() as connection:
        depth = connection.execute(QUEUE_DEPTH).scalar_one()
        counted = connection.execute(text("SELECT count(*) FROM jobs WHERE status = 'queued'"))
        assert depth == counted.scalar_one() >= DEPTHS[-1]  # the triggers' count is exact


def test_sqlite_keys_a_job_from_the_owners_tail_in_the_partial_index(tmp_path):
    engine = create_database_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    schema.upgrade(engine)
    compiled = INSERT_SQLITE.compile(dialect=engine.dialect)
    with engine.connect() as connection:
        plan = connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + compiled.string, tuple(None for _ in compiled.positiontup)
        ).all()
    details = " | ".join(row[-1] for row in plan)
    assert "ix_jobs_queued_owner_priority_sort_key" in details
    assert "SCAN jobs" not in details


FILL_FINISHED = """
INSERT INTO jobs (id, owner, generator, params, priority, status, created_at, started_at,
                  finished_at, sort_key, progress_percent, attempts, lease_epoch,
                  cancel_requested)
SELECT md5(n::text || 'finished'), 'owner-' || (n % 50), 'noop', '{}', 2,
       (ARRAY['succeeded', 'failed', 'cancelled'])[1 + n % 3],
       now() - make_interval(secs => n + 2), now() - make_interval(secs => n + 1),
       now() - make_interval(secs => n), 0, 100, 1, 1, false
FROM generate_series(1, :count) AS n
"""


def test_the_consoles_reads_of_finished_jobs_use_the_retention_index(pg_engine):
    """The history's per-interval read and the recent failures read a range of an index
    the job's writes already keep, not the table: 30,000 finished rows, 10 s asked."""
    with pg_engine.begin() as connection:
        connection.execute(text(FILL_FINISHED), {"count": 30_000})
        connection.execute(text("ANALYZE jobs"))
    now = datetime.now(UTC)
    window = {"start": now - timedelta(seconds=10), "end": now}
    overview = JobOverview(pg_engine)
    with pg_engine.connect() as connection:
        plans = [explain(connection, query, window) for query in FINISHED_IN.values()]
        plans.append(explain(connection, failed_lately(10), {}))
    for plan in plans:
        types = [node["Node Type"] for node in nodes(plan)]
        assert "Seq Scan" not in types and "Sort" not in types
        indexes = {node.get("Index Name") for node in nodes(plan)}
        assert "ix_jobs_status_expired_at_finished_at" in indexes
        assert reads(plan)[0] <= 10  # the rows asked for, not the 30,000
    assert len(overview.finished_between(window["start"], window["end"])) in (9, 10)
