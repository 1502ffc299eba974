"""On SQLite the job table's hot statements bypass SQLAlchemy's execution
(store/driver_statements.py): the rows they write and the jobs they return must be exactly
what SQLAlchemy's path gives."""

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import OperationalError

from app.generation import Job, JobStatus, Priority
from app.generation.job import Progress
from app.generation.store import driver_statements as hot
from app.generation.store import engine as db
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.generation.store.jobs import JobStore
from app.generation.store.tables import JobRow

# One timestamp with microseconds and one without: SQLite stores text, and a format that
# dropped ".000000" would sort wrongly against the other path's rows.
T0 = datetime(2026, 11, 26, 1, 2, 3, tzinfo=UTC)
T1 = datetime(2026, 11, 26, 1, 2, 4, 567891, tzinfo=UTC)


def make_store(folder: Path, *, hot_path: bool, monkeypatch: pytest.MonkeyPatch) -> JobStore:
    engine = create_database_engine(f"sqlite:///{folder / 'jobs.db'}")
    schema.upgrade(engine)
    store = JobStore(engine)
    if not hot_path:
        monkeypatch.setattr(store, "_hot", None)  # SQLAlchemy's own execution path
    return store


def new_job(job_id: str, key: str | None = None) -> Job:
    return Job(
        pk=0,
        id=job_id,
        owner="ana",
        generator="noop",
        params={"ms": 5, "nested": {"list": [1, 2.5, None, "é"]}, "big": 2**70},
        priority=Priority.HIGH,
        status=JobStatus.QUEUED,
        created_at=T0,
        idempotency_key=key,
        request_hash="h" * 64 if key else None,
    )


def life_of_jobs(store: JobStore) -> list[Job | None]:
    """Every hot statement, in the order a service runs them; what each returned."""
    seen: list[Job | None] = [store.insert(new_job("a" * 32, key="k1")), store.insert(new_job("b"))]
    claimed = store.claim("a" * 32, "worker-1", T1)
    seen += [claimed, store.claim("a" * 32, "worker-2", T1)]  # no longer queued: None
    assert claimed is not None
    seen.append(store.record_progress(claimed, Progress(40.0, "x")))
    files = [{"name": "out.txt", "bytes": 3}]
    seen.append(store.finish(claimed, JobStatus.SUCCEEDED, T1, result_bytes=3, result_files=files))
    seen.append(store.finish(claimed, JobStatus.FAILED, T1))  # already finished: None
    seen.append(store.cancel_queued("b", T0 + timedelta(seconds=1)))
    seen += [store.get("a" * 32), store.get("missing")]
    seen += [store.find_by_idempotency_key("ana", "k1"), store.find_by_idempotency_key("x", "k1")]
    return seen


def stored_rows(store: JobStore) -> list[tuple]:
    """The rows as SQLite holds them (text timestamps, JSON text)."""
    path = store.engine.url.database
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT * FROM jobs ORDER BY pk").fetchall()


def test_the_hot_path_writes_and_returns_what_sqlalchemy_does(tmp_path, monkeypatch):
    (tmp_path / "hot").mkdir()
    (tmp_path / "core").mkdir()
    fast = make_store(tmp_path / "hot", hot_path=True, monkeypatch=monkeypatch)
    reference = make_store(tmp_path / "core", hot_path=False, monkeypatch=monkeypatch)

    assert life_of_jobs(fast) == life_of_jobs(reference)
    assert stored_rows(fast) == stored_rows(reference)
    assert fast.get("a" * 32).params["big"] == 2**70
    assert fast.get("a" * 32).finished_at == T1  # aware UTC, microseconds kept


def test_the_hot_path_is_used_on_sqlite(tmp_path, monkeypatch):
    store = make_store(tmp_path, hot_path=True, monkeypatch=monkeypatch)
    # SQLAlchemy's execution path would go through Connection.execute; forbid it.
    monkeypatch.setattr(
        "sqlalchemy.engine.base.Connection.execute",
        lambda *a, **k: pytest.fail("the hot path went through SQLAlchemy's execute"),
    )
    job = store.insert(new_job("c"))
    assert store.claim(job.id, "w", T1).status is JobStatus.RUNNING
    assert store.get(job.id).worker == "w"


def test_a_taken_idempotency_key_writes_nothing_and_says_so(tmp_path, monkeypatch):
    store = make_store(tmp_path, hot_path=True, monkeypatch=monkeypatch)
    store.insert(new_job("d", key="same"))
    assert store.insert(new_job("e", key="same")) is None
    assert store.get("e") is None
    assert store.insert(new_job("f")).id == "f"  # the connection is usable after


def test_a_locked_database_is_sqlalchemys_operational_error(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    store = make_store(tmp_path, hot_path=True, monkeypatch=monkeypatch)
    job = store.insert(new_job("g"))
    locker = sqlite3.connect(store.engine.url.database, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OperationalError, match="locked"):
            store.claim(job.id, "w", T1)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert store.claim(job.id, "w", T1).status is JobStatus.RUNNING


def test_a_statement_with_an_expanding_parameter_is_refused(tmp_path, monkeypatch):
    store = make_store(tmp_path, hot_path=True, monkeypatch=monkeypatch)
    table = JobRow.__table__
    query = select(table).where(table.c.id.in_(bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="expanding"):
        hot.Prepared(query, store.engine, table.c)


def test_the_postgres_hot_path_writes_and_returns_what_sqlalchemy_does(pg_engine, monkeypatch):
    def life_and_rows(hot_path: bool) -> tuple[list[Job | None], list[tuple]]:
        with pg_engine.begin() as connection:
            connection.execute(text("TRUNCATE jobs RESTART IDENTITY"))
            connection.execute(text("UPDATE queue_counts SET n = 0"))
        store = JobStore(pg_engine, database_clock=False)
        if not hot_path:
            monkeypatch.setattr(store, "_hot", None)
        seen = life_of_jobs(store)
        with pg_engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM jobs ORDER BY pk")).all()
        return seen, [tuple(row) for row in rows]

    assert life_and_rows(hot_path=True) == life_and_rows(hot_path=False)
