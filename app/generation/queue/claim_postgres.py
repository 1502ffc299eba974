"""The PostgreSQL claim: an idle worker takes the best queued job.

An idle worker claims exactly one job, the first by the scheduling policy, with

    WITH next AS MATERIALIZED (
        SELECT pk FROM jobs WHERE status = 'queued'
        ORDER BY sort_key, pk LIMIT 1 FOR UPDATE SKIP LOCKED)
    UPDATE jobs SET status = 'running', lease_epoch = lease_epoch + 1, ...
    FROM next WHERE jobs.pk = next.pk RETURNING jobs.*

The key is fixed at admission (scheduling/policy.py), so the order is the partial index
`ix_jobs_queued_sort_key (sort_key, pk) WHERE status = 'queued'`: the claim reads its
first entry, whatever the queue's depth (tests/test_claim_plan.py holds the plan to it),
as Oban, River and graphile-worker claim. The predicate is spelled as a literal so the
planner can prove the partial index applies. `SKIP LOCKED` lets concurrent claimers pass
over each other's rows instead of queueing behind them. The candidate is chosen in a
materialised CTE because a `LIMIT` subquery inside `UPDATE ... WHERE pk IN (...)` may be
re-evaluated by the planner and lock (and claim) more rows than it returns. There is no
prefetch: a worker claims only when it is idle, so a HIGH job submitted anywhere is the
next one any idle worker in the cluster starts. The job leaving the queue is counted by
a trigger (`queue_counts`, migration 0003) in the same transaction.

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

from sqlalchemy import select, update

from ..store.job_writes import claim_values
from ..store.tables import QUEUED_PREDICATE, JobRow

_jobs = JobRow.__table__
_c = _jobs.c


def claim_statement() -> Any:
    """The claim above, built once (building and cache-keying it per claim cost more
    than running it). Bound values: `claim_values()`'s."""
    candidate = (
        select(_c.pk)
        .where(QUEUED_PREDICATE)
        .order_by(_c.sort_key, _c.pk)
        .limit(1)
        .with_for_update(skip_locked=True)
        .cte("next")
        .prefix_with("MATERIALIZED")
    )
    return update(_jobs).where(_c.pk == candidate.c.pk).values(**claim_values()).returning(*_jobs.c)


CLAIM = claim_statement()
