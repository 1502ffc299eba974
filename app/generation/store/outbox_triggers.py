"""The triggers that write a job's `started` and `completed` webhook deliveries.

A delivery must be written in the transaction that changes what it reports, so a crash
between the two can neither lose one nor invent one. Jobs change status in many places
(a claim, an outcome, a cancel, a lease taken back, a deadline), so the database itself
writes the outbox row, as part of the very UPDATE that moves `status`. Each trigger
fires only for rows that moved and carry a webhook (its WHEN), so jobs without one and
progress updates (which do not set `status`) pay nothing.

The events a job asked for are a comma-separated list (`webhook_events`); the delivery's
id is its Standard Webhooks `webhook-id`, random and kept on every retry.
"""

from __future__ import annotations

TRIGGER = "jobs_webhook_outbox"
FUNCTION = "gs_webhook_outbox"

# A job running again after its run was lost starts again: receivers hear `started` once
# per attempt. Terminal statuses are reported once, as `completed`.
SQLITE_TRIGGER = f"""
CREATE TRIGGER {TRIGGER} AFTER UPDATE OF status ON jobs
FOR EACH ROW WHEN NEW.webhook_url IS NOT NULL AND NEW.status <> OLD.status
BEGIN
    INSERT INTO webhook_deliveries
        (id, job_id, owner, key_id, event, url, status, attempts, next_attempt_at, created_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), NEW.id, NEW.owner, NEW.webhook_key_id,
        moved.event, NEW.webhook_url, 'pending', 0, moved.at, moved.at
    FROM (
        SELECT 'started' AS event, coalesce(NEW.started_at, NEW.created_at) AS at
        WHERE NEW.status = 'running'
        UNION ALL
        SELECT 'completed', coalesce(NEW.finished_at, NEW.started_at, NEW.created_at)
        WHERE NEW.status IN ('succeeded', 'failed', 'cancelled')
    ) AS moved
    WHERE instr(',' || NEW.webhook_events || ',', ',' || moved.event || ',') > 0;
END
"""

POSTGRES_FUNCTION = f"""
CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    happened text;
BEGIN
    IF NEW.status = 'running' THEN
        happened := 'started';
    ELSIF NEW.status IN ('succeeded', 'failed', 'cancelled') THEN
        happened := 'completed';
    ELSE
        RETURN NULL;
    END IF;
    IF position(',' || happened || ',' IN ',' || NEW.webhook_events || ',') = 0 THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries
        (id, job_id, owner, key_id, event, url, status, attempts, next_attempt_at, created_at)
    VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, NEW.owner,
        NEW.webhook_key_id, happened, NEW.webhook_url, 'pending', 0, now(), now());
    RETURN NULL;
END $$
"""
POSTGRES_TRIGGER = (
    f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF status ON jobs FOR EACH ROW "
    "WHEN (NEW.webhook_url IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status) "
    f"EXECUTE FUNCTION {FUNCTION}()"
)


def create_statements(dialect: str) -> list[str]:
    """The DDL that makes the outbox triggers on `dialect` (after both tables exist)."""
    if dialect == "postgresql":
        return [POSTGRES_FUNCTION, POSTGRES_TRIGGER]
    return [SQLITE_TRIGGER]


def drop_statements(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [f"DROP TRIGGER {TRIGGER} ON jobs", f"DROP FUNCTION {FUNCTION}()"]
    return [f"DROP TRIGGER {TRIGGER}"]
