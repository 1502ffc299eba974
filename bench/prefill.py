"""Queued rows written straight into the jobs table, as `submit()` would write them.

Scenarios that measure the workers (drain) or the cost of a deep queue (depth) fill the
queue before the server starts: submitting 100,000 jobs over the API would take minutes
and measure the submit path instead. `write_queued` is the one place that knows what a
queued row holds. It is a plain INSERT (in chunks, one transaction), never COPY, so that
whatever the schema attaches to an INSERT (triggers, defaults) sees these rows as it
sees a submit's.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert

from app.config import Config
from app.generation.generators import default_registry
from app.generation.job import JobStatus, Priority
from app.generation.scheduling.policy import offset
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.generation.store.tables import JobRow

CHUNK_ROWS = 5_000
# The service's default PRIORITY_AGING_SECONDS; bench servers run with the defaults.
AGING_SECONDS = Config.priority_aging_seconds
_table = JobRow.__table__


def write_queued(
    url: str,
    count: int,
    *,
    priority: Priority = Priority.NORMAL,
    owner: str = "anonymous",
    generator: str = "noop",
    params: Mapping[str, Any] | None = None,
) -> None:
    """Write `count` queued jobs of `generator` (default: `noop` with ms=0) to the database
    at `url`, migrating it first. `params` are validated by the generator, as a submit's
    are. Every row gets the same `created_at` (now)."""
    checked, errors = default_registry().get(generator).validate(params or {})
    if errors:
        raise ValueError(f"invalid {generator} params for the benchmark: {errors}")
    now = datetime.now(UTC)
    common = {
        "owner": owner,
        "generator": generator,
        "params": checked,
        "priority": int(priority),
        "status": JobStatus.QUEUED.value,
        "created_at": now,
        **scheduling_columns(now, priority),
    }
    engine = create_database_engine(url)
    try:
        schema.upgrade(engine)
        with engine.begin() as connection:
            for start in range(0, count, CHUNK_ROWS):
                size = min(CHUNK_ROWS, count - start)
                rows = [{"id": uuid.uuid4().hex, **common} for _ in range(size)]
                connection.execute(insert(_table), rows)
    finally:
        engine.dispose()


def scheduling_columns(created_at: datetime, priority: Priority) -> dict[str, float]:
    """The scheduling key a submit at `created_at` gets when its owner has nothing else
    queued at that priority (scheduling/policy.py): equal keys, so the rows run in pk order."""
    return {"sort_key": created_at.timestamp() + offset(priority, AGING_SECONDS)}
