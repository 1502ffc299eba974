"""The PostgreSQL claim: one statement that takes the best queued job for a worker.

An idle worker claims exactly one job, the best by the scheduling policy, with

    WITH next AS MATERIALIZED (
        SELECT jobs.pk, jobs.owner FROM jobs LEFT JOIN owner_turns USING (owner)
        WHERE status = 'queued'
        ORDER BY <effective priority>, coalesce(owner_turns.last_served, 0), jobs.pk
        LIMIT 1 FOR UPDATE OF jobs SKIP LOCKED)
    UPDATE jobs SET status = 'running', lease_epoch = lease_epoch + 1, ...
    FROM next WHERE jobs.pk = next.pk RETURNING jobs.*

and, in the same statement (a data-modifying CTE), gives the owner the next turn in
`owner_turns`. `SKIP LOCKED` lets concurrent claimers pass over each other's rows
instead of queueing behind them. The candidate is chosen in a materialised CTE, as Oban,
Solid Queue and graphile-worker do, because a `LIMIT` subquery inside `UPDATE ... WHERE
pk IN (...)` may be re-evaluated by the planner and lock (and claim) more rows than it
returns. There is no prefetch: a worker claims only when it is idle, so a HIGH job
submitted anywhere is the next one any idle worker in the cluster starts. The ORDER BY
reads every queued row (aging is a function of the clock, so no index can hold that
order); the queue is bounded by GENERATION_QUEUE_SIZE, which bounds this too.

The claim commits synchronously (it waits for its WAL to reach the disk), unlike lease
renewals and progress. Skipping that wait looks safe, since a claim lost in a database
crash leaves the job queued, but it is not: the fence of every later write is
`lease_epoch`, and a lost claim is an epoch handed out twice. Worker A claims (epoch 1,
commit not yet on disk), the database crashes and comes back with the job queued at
epoch 0, worker B claims it again at epoch 1, and A, still running, finishes with a write
fenced on epoch 1: it passes, A's result (keyed by job and epoch, like B's) can be
replaced or deleted by B, and B's own finish then fails. A synchronous commit makes every
epoch a worker sees durable, so epochs never repeat. It costs one WAL flush per claim
(0.1 ms on this machine's disk; measured in docs/performance.md).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from .job_writes import claim_values
from .models import JobRow, JobStatus, OwnerTurnRow
from .scheduling import effective_priority_sql_bound

_jobs = JobRow.__table__
_c = _jobs.c
_turns = OwnerTurnRow.__table__
_queued = _c.status == JobStatus.QUEUED.value


def claim_statement() -> Any:
    """The claim above and the owner's next turn, as one statement built once (one round
    trip; building and cache-keying it per claim cost more than running it). Bound
    values: `claim_values()`'s and `aging_cutoffs(now, aging_seconds)`."""
    level = effective_priority_sql_bound(_c.priority, _c.created_at)
    candidate = (
        select(_c.pk)
        .select_from(_jobs.outerjoin(_turns, _turns.c.owner == _c.owner))
        .where(_queued)
        .order_by(level, func.coalesce(_turns.c.last_served, 0), _c.pk)
        .limit(1)
        .with_for_update(skip_locked=True, of=_jobs)
        .cte("next")
        .prefix_with("MATERIALIZED")
    )
    claimed = (
        update(_jobs)
        .where(_c.pk == candidate.c.pk)
        .values(**claim_values())
        .returning(*_jobs.c)
        .cte("claimed")
    )
    # A data-modifying CTE runs whether or not the outer query reads it.
    turn = next_turn_statement(select(claimed.c.owner)).cte("turn")
    return select(claimed).add_cte(turn)


def next_turn_statement(owners: Select[Any]) -> Any:
    """Give the owner `owners` selects the next turn: one past the latest turn anyone
    was given."""
    latest = select(func.coalesce(func.max(_turns.c.last_served), 0) + 1).scalar_subquery()
    chosen = owners.add_columns(latest.label("last_served"))
    statement = pg_insert(_turns).from_select(["owner", "last_served"], chosen)
    return statement.on_conflict_do_update(
        index_elements=[_turns.c.owner], set_={"last_served": statement.excluded.last_served}
    )


CLAIM = claim_statement()
