"""The job table's hot statements, executed on the driver's own connection.

A submit's INSERT, a claim, a run's outcome and a lookup by id run once or more per job.
Through SQLAlchemy's `Connection.execute` each cost 1.5 to 2.7 times the thread CPU they
cost on the driver (`python -m bench.statements_cpu`: INSERT 390 against 260 µs, claim
450 against 250, outcome 490 against 255, lookup 285 against 105, on a loaded machine):
the cache key walked per call, the execution context, the result wrapper. Here each
statement is compiled by SQLAlchemy once (the same SQL and the same type conversions as
its own path: the column types' bind and result processors) and then run with the
`sqlite3` module directly. Errors are raised as SQLAlchemy's (`OperationalError`,
`IntegrityError`), as its path would, so callers cannot tell the difference.

On PostgreSQL the same holds for psycopg (named parameters instead of positional ones):
a claim, an outcome, a progress write and a lookup run on a connection checked out of
SQLAlchemy's pool, which still replaces a connection the server dropped (store/engine.py); an error
that means the connection is gone invalidates it, as SQLAlchemy's own path would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Dialect, Engine, Float
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

_Processor = Callable[[Any], Any] | None
_REQUIRED = object()
FLOAT8_OID = 701


class Prepared:
    """One statement, compiled once: its SQL, how to bind a dict of values (in order for
    SQLite's positional parameters, by name for psycopg's), and how to convert the
    columns it returns."""

    def __init__(self, statement: ClauseElement, engine: Engine, returns: Sequence[Column]):
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self._named = compiled.positiontup is None
        names = (
            list(dict.fromkeys(compiled.bind_names.values()))
            if self._named
            else compiled.positiontup
        )
        self._binds: list[tuple[str, Any, _Processor]] = []
        for name in names:
            parameter = compiled.binds[name]
            if parameter.expanding:
                raise ValueError(f"{name}: an expanding parameter cannot be prepared once")
            fixed = _REQUIRED if parameter.required else parameter.effective_value
            processor = parameter.type.dialect_impl(dialect).bind_processor(dialect)
            self._binds.append((name, fixed, processor))
        self._results = [_result_processor(column, dialect) for column in returns]

    def bind(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        bound = []
        for name, fixed, processor in self._binds:
            value = values[name] if fixed is _REQUIRED else values.get(name, fixed)
            bound.append(value if processor is None else processor(value))
        if self._named:
            return {name: value for (name, _, _), value in zip(self._binds, bound, strict=True)}
        return tuple(bound)

    def convert(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            value if processor is None else processor(value)
            for value, processor in zip(row, self._results, strict=True)
        )


def _result_processor(column: Column, dialect: Dialect) -> _Processor:
    # psycopg's numeric processors ask which PostgreSQL type the driver returned; every
    # float column here is double precision (OID 701), which it returns as float.
    coltype = FLOAT8_OID if isinstance(column.type, Float) and dialect.name != "sqlite" else None
    return column.type.dialect_impl(dialect).result_processor(dialect, coltype)


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
    connection: Any,
    prepared: Prepared,
    values: Mapping[str, Any],
    *,
    dialect: Dialect,
    prelude: str | None = None,
    then: Callable[[Any], None] | None = None,
) -> tuple[Any, ...] | None:
    """Run `prepared` (after `prelude`, if any) in a transaction of its own and commit;
    the first row it returned (converted), or None. If it returned a row, `then` runs
    on the connection before the commit, in the same transaction. `connection` is the
    DB-API one."""
    parameters = prepared.bind(values)
    errors = dialect.loaded_dbapi.Error
    try:
        # The driver opens the transaction itself before the first statement (sqlite3:
        # the caller holds the process's writer lock, so a deferred BEGIN never has to
        # upgrade under contention).
        if prelude is not None:
            connection.execute(prelude)
        rows = connection.execute(prepared.sql, parameters).fetchall()
        if rows and then is not None:
            then(connection)
        connection.commit()
    except errors as error:
        _rollback(connection, errors)
        raise _wrapped(error, prepared, parameters, dialect, connection) from error
    return prepared.convert(rows[0]) if rows else None


def read(
    connection: Any, prepared: Prepared, values: Mapping[str, Any], *, dialect: Dialect
) -> tuple[Any, ...] | None:
    """The first row `prepared` selects (converted), or None. Ends the transaction the
    driver may have opened for it (psycopg does), so the connection goes back idle."""
    parameters = prepared.bind(values)
    errors = dialect.loaded_dbapi.Error
    try:
        row = connection.execute(prepared.sql, parameters).fetchone()
        if dialect.name != "sqlite":
            connection.rollback()
    except errors as error:
        _rollback(connection, errors)
        raise _wrapped(error, prepared, parameters, dialect, connection) from error
    return prepared.convert(row) if row else None


def _rollback(connection: Any, errors: type[Exception]) -> None:
    # The original error is the one to report; a connection too broken to roll back
    # fails the next statement on it the same way.
    with contextlib.suppress(errors):
        connection.rollback()


def _wrapped(
    error: Exception, prepared: Prepared, parameters: Any, dialect: Dialect, connection: Any
) -> DBAPIError:
    """The exception SQLAlchemy would have raised for `error` (OperationalError, ...),
    marked `connection_invalidated` when it means the connection is gone."""
    gone = dialect.is_disconnect(error, connection, None)
    return DBAPIError.instance(
        prepared.sql,
        parameters,
        error,
        dialect.loaded_dbapi.Error,
        connection_invalidated=gone,
    )
