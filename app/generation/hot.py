"""The job table's hot statements on SQLite, executed on the driver's own connection.

A submit's INSERT, a claim, a run's outcome and a lookup by id run once or more per job.
Through SQLAlchemy's `Connection.execute` each cost 1.5 to 2.7 times the thread CPU they
cost on the driver (`python -m bench.statements_cpu`: INSERT 390 against 260 µs, claim
450 against 250, outcome 490 against 255, lookup 285 against 105, on a loaded machine):
the cache key walked per call, the execution context, the result wrapper. Here each
statement is compiled by SQLAlchemy once (the same SQL and the same type conversions as
its own path: the column types' bind and result processors) and then run with the
`sqlite3` module directly. Errors are raised as SQLAlchemy's (`OperationalError`,
`IntegrityError`), as its path would, so callers cannot tell the difference.

PostgreSQL keeps SQLAlchemy's path: there the round trips dominate, and its pool is what
replaces a connection the server dropped (db.py).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

_Processor = Callable[[Any], Any] | None
_REQUIRED = object()


class Prepared:
    """One statement, compiled once for SQLite: its SQL, how to bind a dict of values in
    order, and how to convert the columns it returns."""

    def __init__(self, statement: ClauseElement, engine: Engine, returns: Sequence[Column]):
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        if compiled.positiontup is None:
            raise ValueError(f"{dialect.name} does not bind positionally")
        self.sql = compiled.string
        self._binds: list[tuple[str, Any, _Processor]] = []
        for name in compiled.positiontup:
            parameter = compiled.binds[name]
            if parameter.expanding:
                raise ValueError(f"{name}: an expanding parameter cannot be prepared once")
            fixed = _REQUIRED if parameter.required else parameter.effective_value
            processor = parameter.type.dialect_impl(dialect).bind_processor(dialect)
            self._binds.append((name, fixed, processor))
        self._results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in returns
        ]

    def bind(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        bound = []
        for name, fixed, processor in self._binds:
            value = values[name] if fixed is _REQUIRED else values.get(name, fixed)
            bound.append(value if processor is None else processor(value))
        return tuple(bound)

    def convert(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            value if processor is None else processor(value)
            for value, processor in zip(row, self._results, strict=True)
        )


class Statements:
    """Each statement prepared on first use (the statements are built once by their
    modules, so the cache holds a handful)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._prepared: dict[ClauseElement, Prepared] = {}

    def get(self, statement: ClauseElement, returns: Sequence[Column]) -> Prepared:
        prepared = self._prepared.get(statement)
        if prepared is None:
            prepared = self._prepared[statement] = Prepared(statement, self._engine, returns)
        return prepared


def write(
    connection: sqlite3.Connection, prepared: Prepared, values: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """Run `prepared` in a transaction of its own and commit; the first row it returned
    (converted), or None."""
    parameters = prepared.bind(values)
    try:
        # sqlite3 opens the transaction itself before a write; the caller holds the
        # process's writer lock, so a deferred BEGIN never has to upgrade under contention.
        rows = connection.execute(prepared.sql, parameters).fetchall()
        connection.commit()
    except sqlite3.Error as error:
        _rollback(connection)
        raise _wrapped(error, prepared, parameters) from error
    return prepared.convert(rows[0]) if rows else None


def read(
    connection: sqlite3.Connection, prepared: Prepared, values: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """The first row `prepared` selects (converted), or None. No transaction is opened."""
    parameters = prepared.bind(values)
    try:
        row = connection.execute(prepared.sql, parameters).fetchone()
    except sqlite3.Error as error:
        raise _wrapped(error, prepared, parameters) from error
    return prepared.convert(row) if row else None


def _rollback(connection: sqlite3.Connection) -> None:
    # The original error is the one to report; a connection too broken to roll back
    # fails the next statement on it the same way.
    with contextlib.suppress(sqlite3.Error):
        connection.rollback()


def _wrapped(error: sqlite3.Error, prepared: Prepared, parameters: tuple[Any, ...]) -> DBAPIError:
    """The exception SQLAlchemy would have raised for `error` (OperationalError, ...)."""
    return DBAPIError.instance(prepared.sql, parameters, error, sqlite3.Error)
