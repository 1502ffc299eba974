import shutil
import sqlite3
import threading
import time
from contextlib import closing

from sqlalchemy import make_url, text

from app.generation.execution import engine as execution
from app.generation.store.engine import (
    SQLITE_WAL_AUTOCHECKPOINT_PAGES,
    checkpoint,
    create_database_engine,
)

from .conftest import wait_for


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    engine = create_database_engine(f"sqlite:///{tmp_path / 'sub' / 'jobs.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    assert (tmp_path / "sub").is_dir()


def test_sqlite_checkpoints_in_the_background_not_in_every_thousandth_commit(tmp_path):
    engine = create_database_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    with engine.connect() as connection:
        pages = connection.execute(text("PRAGMA wal_autocheckpoint")).scalar()
    assert pages == SQLITE_WAL_AUTOCHECKPOINT_PAGES > 1000
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (n INTEGER)"))
    for n in range(20):
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
    logged, copied = checkpoint(engine)
    assert logged >= 20 and copied == logged
    engine.dispose()


def test_the_services_scheduler_step_checkpoints_the_wal(make_service, config, tmp_path):
    service = make_service()
    service.start()
    done = wait_for(service, service.submit("record", {}).id)
    service.tick()
    # The database file alone (without its -wal) holds only what was checkpointed.
    main_file = tmp_path / "checkpointed.db"
    shutil.copyfile(make_url(config.database_url).database, main_file)
    with closing(sqlite3.connect(main_file)) as copy:
        row = copy.execute("SELECT status FROM jobs WHERE id = ?", (done.id,)).fetchone()
    assert row == ("succeeded",)


def test_scheduler_steps_never_overlap(service, monkeypatch):
    """A second checkpoint at once would return without copying (PASSIVE does not wait)."""
    inside, overlapped, guard = [], threading.Event(), threading.Lock()

    def checkpoint_that_lingers(engine):
        with guard:
            inside.append(threading.current_thread().name)
            if len(inside) > 1:
                overlapped.set()
        overlapped.wait(0.2)  # room for another step to come in, if it could
        with guard:
            inside.pop()

    monkeypatch.setattr(execution, "checkpoint", checkpoint_that_lingers)
    callers = [threading.Thread(target=service.tick) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert not overlapped.is_set()


def test_a_pooled_connection_the_server_dropped_is_replaced_at_checkout(pg_engine):
    """What a database restart does to an idle pool, found without a ping per checkout."""
    with pg_engine.connect() as connection:
        dropped = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    killer = create_database_engine(pg_engine.url.render_as_string(hide_password=False))
    try:
        with killer.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped})
            gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
            deadline = time.monotonic() + 10
            # Each look ends its transaction: pg_stat_activity is a per-transaction snapshot.
            while connection.execute(gone, {"pid": dropped}).scalar():
                connection.rollback()
                assert time.monotonic() < deadline, "the backend did not exit"
                time.sleep(0.01)
    finally:
        killer.dispose()
    with pg_engine.connect() as connection:  # the pool's only connection was the dropped one
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != dropped
