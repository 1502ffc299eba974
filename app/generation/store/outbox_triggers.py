"""The triggers that write a job's webhook deliveries with the change they report.

A delivery must be written in the transaction that changes what it reports, so a crash
between the two can neither lose one nor invent one. Jobs change status in many places
(a claim, an outcome, a cancel, a lease taken back, a deadline), so the database itself
writes the outbox rows, as part of the very UPDATE that moves `status`:

- `started` when a run starts (a job run again after a crash starts again);
- `output`, when a job succeeds, for each of its files (`result_files`), before its
  `completed`. A file stored while the job ran was reported then (store/deliveries.py)
  under the same id, `msg_<job>_<epoch>_<position>`, so it is not reported twice;
- `completed` when it ends: succeeded, failed or cancelled.

Each trigger fires only for rows that moved and carry a webhook (its WHEN), so jobs
without one and progress updates (which do not set `status`) pay nothing. The events a
job asked for are a comma-separated list (`webhook_events`); the other deliveries' ids,
their Standard Webhooks `webhook-id`, are random.
"""

from __future__ import annotations

TRIGGER = "jobs_webhook_outbox"
FUNCTION = "gs_webhook_outbox"
_COLUMNS = (
    "id, job_id, owner, key_id, event, url, host, detail, status, attempts, "
    "next_attempt_at, created_at"
)

SQLITE_TRIGGER = f"""
CREATE TRIGGER {TRIGGER} AFTER UPDATE OF status ON jobs
FOR EACH ROW WHEN NEW.webhook_url IS NOT NULL AND NEW.status <> OLD.status
BEGIN
    INSERT OR IGNORE INTO webhook_deliveries ({_COLUMNS})
    SELECT 'msg_' || NEW.id || '_' || NEW.lease_epoch || '_' || file.key, NEW.id, NEW.owner,
        NEW.webhook_key_id, 'output', NEW.webhook_url, NEW.webhook_host, file.value,
        'pending', 0, NEW.finished_at, NEW.finished_at
    FROM json_each(NEW.result_files) AS file
    WHERE NEW.status = 'succeeded' AND NEW.finished_at IS NOT NULL
        AND instr(',' || NEW.webhook_events || ',', ',output,') > 0;
    INSERT INTO webhook_deliveries ({_COLUMNS})
    SELECT 'msg_' || lower(hex(randomblob(16))), NEW.id, NEW.owner, NEW.webhook_key_id,
        moved.event, NEW.webhook_url, NEW.webhook_host, NULL, 'pending', 0, moved.at, moved.at
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
    asked text := ',' || NEW.webhook_events || ',';
BEGIN
    IF NEW.status = 'running' THEN
        happened := 'started';
    ELSIF NEW.status IN ('succeeded', 'failed', 'cancelled') THEN
        happened := 'completed';
    ELSE
        RETURN NULL;
    END IF;
    IF NEW.status = 'succeeded' AND position(',output,' IN asked) > 0 THEN
        INSERT INTO webhook_deliveries ({_COLUMNS})
        SELECT 'msg_' || NEW.id || '_' || NEW.lease_epoch || '_' || (file.n - 1), NEW.id,
            NEW.owner, NEW.webhook_key_id, 'output', NEW.webhook_url, NEW.webhook_host,
            file.value, 'pending', 0, now(), now()
        FROM json_array_elements(NEW.result_files::json) WITH ORDINALITY AS file(value, n)
        ON CONFLICT (id) DO NOTHING;
    END IF;
    IF position(',' || happened || ',' IN asked) > 0 THEN
        INSERT INTO webhook_deliveries ({_COLUMNS})
        VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, NEW.owner,
            NEW.webhook_key_id, happened, NEW.webhook_url, NEW.webhook_host, NULL, 'pending',
            0, now(), now());
    END IF;
    RETURN NULL;
END $$
"""
POSTGRES_TRIGGER = (
    f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF status ON jobs FOR EACH ROW "
    "WHEN (NEW.webhook_url IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status) "
    f"EXECUTE FUNCTION {FUNCTION}()"
)


def create_statements(dialect: str) -> list[str]:
    """The DDL that makes the outbox trigger on `dialect` (after both tables exist)."""
    if dialect == "postgresql":
        return [POSTGRES_FUNCTION, POSTGRES_TRIGGER]
    return [SQLITE_TRIGGER]


def drop_statements(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [f"DROP TRIGGER {TRIGGER} ON jobs", f"DROP FUNCTION {FUNCTION}()"]
    return [f"DROP TRIGGER {TRIGGER}"]
