"""Engine creation: one place that knows how each backend must be tuned, and how its
connections are borrowed.
The schema itself is made and changed by migrations (store/schema.py, store/migrate.py)."""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError

SQLITE_BUSY_TIMEOUT_MS = 5000
# SQLite checkpoints its WAL into the database file in whichever commit crosses this many
# pages (default 1,000): 10-14 ms in that commit, every hundred or so jobs, the tail of
# claim and dispatch latency. The service checkpoints from its scheduler thread instead
# (`checkpoint`, every tick); this larger bound only stops the WAL growing without one.
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10_000


def create_database_engine(url: str) -> Engine:
    """Create an engine for `url`, creating the SQLite file's folder if needed."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database)
    engine = create_engine(url, pool_size=10, max_overflow=20)
    event.listen(engine, "checkout", _check_idle_connection)
    return engine


def _check_idle_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Replace a pooled connection the server has dropped, without a round trip.

    `pool_pre_ping` sent a query on every checkout: a round trip before every transaction,
    several per job (claim, result, finish, relayed events; 10 % of a drained job's CPU).
    A connection idle in the pool receives nothing unless the server is ending it: a
    restart, `pg_terminate_backend` or a crash sends a FATAL message or closes the socket,
    and either makes the socket readable. So a readable (or already broken) connection is
    discarded (the pool then opens a fresh one), and a quiet one is used as is. A link cut
    without a word (a half-open socket) is not seen here, as a ping would not answer it
    either (it waits on TCP); the callers' retries cover a connection that dies in use."""
    if dbapi_connection.closed or dbapi_connection.broken:
        raise DisconnectionError("the connection was closed")
    # poll, not select: a busy process (WebSockets) has descriptors above select's 1024.
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server sent something to an idle connection")


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=20,
        max_overflow=40,
    )
    event.listen(engine, "connect", _tune_sqlite_connection)
    return engine


def _tune_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web threads read while a worker writes. synchronous=NORMAL keeps every
    # committed job across a process crash (kill -9); only an OS crash or power loss can
    # drop the last transactions, which is the usual trade for WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query. A pooled connection found
    dead on use (the server dropped it after the checkout's check) is replaced once."""
    for attempt in range(2):
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except DBAPIError as error:
            if attempt or not error.connection_invalidated:
                raise


def checkpoint(engine: Engine) -> tuple[int, int] | None:
    """Copy SQLite's WAL into the database file without waiting for anyone (PASSIVE):
    (frames in the WAL, frames copied). None on other databases."""
    if engine.dialect.name != "sqlite":
        return None
    with engine.connect() as connection:
        busy, logged, copied = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    return logged, copied


@contextmanager
def pooled_driver_connection(engine: Engine) -> Iterator[Any]:
    """A DB-API connection checked out of `engine`'s pool for one call, then returned.

    Unlike `engine.connect()`, `raw_connection()` lets the driver's own error out when
    the database cannot be reached: it is raised as SQLAlchemy's, like every other
    database error (the API's 503). One an error showed dead is invalidated, so the pool
    opens a fresh one instead of handing it out again."""
    driver_error = engine.dialect.loaded_dbapi.Error
    try:
        pooled = engine.raw_connection()
    except driver_error as error:
        raise DBAPIError.instance(None, None, error, driver_error) from error
    try:
        yield pooled.dbapi_connection
    except DBAPIError as error:
        if error.connection_invalidated:
            pooled.invalidate(error)
        raise
    finally:
        pooled.close()


class TableStore:
    """The base of a small table's repository: reads on their own short connections,
    writes in `writing()` transactions (JobStore.writing: on SQLite, this process's
    writers take turns, so a repository's write never waits on the file lock)."""

    def __init__(
        self,
        engine: Engine,
        writing: Callable[[], AbstractContextManager[Connection]] | None = None,
    ) -> None:
        self._engine = engine
        self._writing = writing or engine.begin
        self._postgres = engine.dialect.name == "postgresql"


def insert_unless_present(table: Table, postgres: bool) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` into `table` (add `.values(...)`): a row whose
    key is taken is skipped. The dialect is imported on use: PostgreSQL's is memory a
    process on SQLite would hold for nothing (tests/test_start_up_imports.py)."""
    if postgres:
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()
