"""The PostgreSQL admission: a group of jobs checked against the queue's bounds and
inserted in one transaction.

**Admission** (run in the group commit's transaction, queue/postgres.py): one statement,
`ADMISSION_READ`, locks admissions and reads the queue's depth, the server's clock and
each (owner, priority)'s queued tail; `insert_group` then keys the group in Python with
the policy's own function (scheduling.admission_key: jobs of one owner keyed one after
another, as if admitted one by one) and writes it with one INSERT (`INSERT_ROWS`). The
server's clock (`clock_timestamp()`) is the same for every machine however their own
clocks drift. These statements live here, away from store/job_writes.py, because a service on
SQLite never needs them (tests/test_start_up_imports.py).

The claim, which takes jobs out again, is the queue's (queue/claim_postgres.py).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Double, cast, func, select, text

from ..errors import QueueFullError, TooManyJobsError
from ..job import Job
from ..scheduling.policy import admission_key
from .job_writes import Row as ValuesRow
from .job_writes import new_row
from .tables import QUEUED_PREDICATE, JobRow

_jobs = JobRow.__table__
_c = _jobs.c


DATABASE_CLOCK = select(cast(func.extract("epoch", func.clock_timestamp()), Double()))
# Each (owner, priority) pair of `:owners` / `:priorities`, in order, and its largest
# queued key: a backward probe of the partial index (owner, priority, sort_key) per pair,
# whatever the depth.
_PAIRS = (
    "unnest(CAST(:owners AS text[]), CAST(:priorities AS integer[])) "
    "WITH ORDINALITY AS pair(owner, priority, number)"
)
_TAIL = (
    "(SELECT max(jobs.sort_key) FROM jobs WHERE jobs.status = 'queued' "
    "AND jobs.owner = pair.owner AND jobs.priority = pair.priority)"
)
TAILS = text(f"SELECT pair.owner, pair.priority, {_TAIL} FROM {_PAIRS} ORDER BY pair.number")
# What an admission reads, in one round trip: it locks the `in` count (every admission
# holds that lock, so the depth is exact or, counting a claim that committed while it
# waited as still queued, one too high, never too low), reads the depth, the server's
# clock and each pair's tail, and rings the workers' doorbell (NOTIFY is delivered at
# commit, and ringing for a group that writes nothing only wakes them).
ADMISSION_READ = text(
    "WITH admitting AS (SELECT n FROM queue_counts WHERE name = 'in' FOR UPDATE) "
    "SELECT admitting.n - (SELECT n FROM queue_counts WHERE name = 'out'), "
    "CAST(extract(epoch from clock_timestamp()) AS double precision), "
    f"ARRAY(SELECT {_TAIL} FROM {_PAIRS} ORDER BY pair.number), "
    "pg_notify(:channel, '') "
    "FROM admitting"
)
# Ids bound in one read of queued jobs' params (PostgreSQL binds at most 65,535).
PARAMS_PER_READ = 10_000
# A submission waiting for its group: (job, share, the owner's quota or None).
Admitted = tuple[Job, float, int | None]
# A group's rows as one array per column: one statement whatever the group's size, so
# psycopg prepares it once (a multi-row VALUES differs with every size, and was parsed
# again each time). Rows go in array order, so primary keys rise in admission order; a
# row whose (owner, idempotency key) is taken is skipped and returns nothing.
INSERT_ROWS = text(
    "INSERT INTO jobs (id, owner, generator, params, priority, status, created_at, "
    "idempotency_key, request_hash, webhook_url, webhook_host, webhook_events, "
    "webhook_key_id, sort_key, progress_percent, attempts, lease_epoch, cancel_requested) "
    "SELECT r.id, r.owner, r.generator, r.params, r.priority, 'queued', r.created_at, "
    "r.idempotency_key, r.request_hash, r.webhook_url, r.webhook_host, r.webhook_events, "
    "r.webhook_key_id, r.sort_key, 0, 0, 0, false "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:owners AS varchar[]), "
    "CAST(:generators AS varchar[]), CAST(:params AS json[]), CAST(:priorities AS integer[]), "
    "CAST(:created AS timestamptz[]), CAST(:idempotency_keys AS varchar[]), "
    "CAST(:request_hashes AS varchar[]), CAST(:webhook_urls AS text[]), "
    "CAST(:webhook_hosts AS varchar[]), CAST(:webhook_events AS varchar[]), "
    "CAST(:webhook_key_ids AS varchar[]), CAST(:sort_keys AS double precision[])) "
    "AS r(id, owner, generator, params, priority, created_at, idempotency_key, "
    "request_hash, webhook_url, webhook_host, webhook_events, webhook_key_id, sort_key) "
    "ON CONFLICT (owner, idempotency_key) DO NOTHING RETURNING id, pk"
)


def admit_group(
    connection: Connection,
    group: list[Admitted],
    *,
    capacity: int,
    aging_seconds: float,
    database_clock: bool,
    channel: str,
) -> list[Job | None | BaseException]:
    """Write a group of submissions in `connection`'s transaction: lock admissions; read
    the depth, the clock and the owners' tails (and ring `channel`: NOTIFY is delivered at
    commit); refuse, in order, what does not fit; key and write the rest in one INSERT.
    One outcome per submission: its job, None (its idempotency key was taken), or the
    error that refused it alone."""
    pairs = sorted({(job.owner, int(job.priority)) for job, _, _ in group})
    read = {
        "owners": [owner for owner, _ in pairs],
        "priorities": [priority for _, priority in pairs],
        "channel": channel,
    }
    depth, now, tail_list, _ = connection.execute(ADMISSION_READ, read).one()
    outcomes: list[Job | None | BaseException] = list(_refusals(connection, group, depth, capacity))
    admitted = [number for number, refusal in enumerate(outcomes) if refusal is None]
    written = insert_group(
        connection,
        [(group[number][0], group[number][1]) for number in admitted],
        now if database_clock else None,
        aging_seconds,
        dict(zip(pairs, tail_list, strict=True)),
    )
    for number, job in zip(admitted, written, strict=True):
        outcomes[number] = job
    return outcomes


def _refusals(
    connection: Connection, group: list[Admitted], depth: int, capacity: int
) -> list[BaseException | None]:
    """For each submission in order, what refuses it (its owner's quota, then a full
    queue), or None if it fits, counting the ones admitted before it."""
    quota_owners = sorted({job.owner for job, _, limit in group if limit is not None})
    queued = queued_per_owner(connection, quota_owners) if quota_owners else {}
    refusals: list[BaseException | None] = []
    for job, _, limit in group:
        if limit is not None and queued.get(job.owner, 0) >= limit:
            refusals.append(TooManyJobsError(limit))
        elif depth >= capacity:
            refusals.append(QueueFullError(capacity))
        else:
            depth += 1
            queued[job.owner] = queued.get(job.owner, 0) + 1
            refusals.append(None)
    return refusals


def insert_group(
    connection: Connection,
    admitted: list[tuple[Job, float]],
    now: float | None,
    aging_seconds: float,
    tails: dict[tuple[str, int], float | None] | None = None,
) -> list[Job | None]:
    """Key and write `(job, share)` pairs in order, in one INSERT; each job as stored,
    or None where its owner's idempotency key was taken. `now`: the database's clock
    (None: each job's own created_at); `tails`: each (owner, priority)'s largest queued
    key, if the caller read them already."""
    if not admitted:
        return []
    if tails is None:
        tails = tail_keys(
            connection, sorted({(job.owner, int(job.priority)) for job, _ in admitted})
        )
    rows = []
    for job, share in admitted:
        pair = (job.owner, int(job.priority))
        at = job.created_at.timestamp() if now is None else now
        tails[pair] = admission_key(at, pair[1], aging_seconds, tails[pair], max(0.0, share))
        rows.append(new_row(job) | {"sort_key": tails[pair]})
    written = dict(connection.execute(INSERT_ROWS, group_columns(rows)).all())
    return [
        Job.from_row(ValuesRow(row | {"pk": written[row["id"]]})) if row["id"] in written else None
        for row in rows
    ]


def group_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """INSERT_ROWS's arrays: each column of `rows`, in order (params as JSON text, as the
    column type writes them)."""
    return {
        "ids": [row["id"] for row in rows],
        "owners": [row["owner"] for row in rows],
        "generators": [row["generator"] for row in rows],
        "params": [json.dumps(row["params"]) for row in rows],
        "priorities": [row["priority"] for row in rows],
        "created": [row["created_at"] for row in rows],
        "idempotency_keys": [row["idempotency_key"] for row in rows],
        "request_hashes": [row["request_hash"] for row in rows],
        "webhook_urls": [row["webhook_url"] for row in rows],
        "webhook_hosts": [row["webhook_host"] for row in rows],
        "webhook_events": [row["webhook_events"] for row in rows],
        "webhook_key_ids": [row["webhook_key_id"] for row in rows],
        "sort_keys": [row["sort_key"] for row in rows],
    }


def tail_keys(
    connection: Connection, pairs: list[tuple[str, int]]
) -> dict[tuple[str, int], float | None]:
    """The largest queued key of each (owner, priority) pair (None where none is queued)."""
    owners, priorities = [owner for owner, _ in pairs], [priority for _, priority in pairs]
    rows = connection.execute(TAILS, {"owners": owners, "priorities": priorities})
    return {(owner, priority): tail for owner, priority, tail in rows}


def queued_per_owner(connection: Connection, owners: list[str]) -> dict[str, int]:
    """How many jobs each of `owners` has queued."""
    query = (
        select(_c.owner, func.count())
        .where(QUEUED_PREDICATE, _c.owner.in_(owners))
        .group_by(_c.owner)
    )
    return dict(connection.execute(query).all())


def queued_params(connection: Connection, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The params of `job_ids`, read in slices (a statement binds at most 65,535 values;
    a deep queue read at start has more jobs than that)."""
    params: dict[str, dict[str, Any]] = {}
    for first in range(0, len(job_ids), PARAMS_PER_READ):
        chunk = job_ids[first : first + PARAMS_PER_READ]
        query = select(_c.id, _c.params).where(_c.id.in_(chunk))
        params |= dict(connection.execute(query).all())
    return params
