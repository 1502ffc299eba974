"""A run's files and preview kept in the database (`result_files`), one row each, so
every machine serves every file of a job that runs on any of them (files.py says why
files are kept apart from the ZIP). Each write commits at once without waiting for the
disk: a file lost in a database crash belongs to a run that had not finished, which
runs again under a new epoch."""

from __future__ import annotations

import io
from typing import IO, Any

from sqlalchemy import Engine, and_, delete, select

from ..generators.base import OutputFile
from ..store.job_writes import skip_flush
from ..store.tables import ResultFileRow
from .files import FileStore, LandedFile, landed

_table = ResultFileRow.__table__
_columns = _table.c
_DESCRIPTION = (_columns.name, _columns.bytes, _columns.content_type, _columns.sha256)
PREVIEW_NAME = ""  # no file may have an empty name (storage.check_output)


class DatabaseFileStore(FileStore):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, job_id: str, epoch: int, position: int, item: OutputFile) -> LandedFile:
        described = landed(item, position)
        self._upsert(job_id, epoch, described, item.data)
        return described

    def list(self, job_id: str, epoch: int) -> list[LandedFile]:
        query = (
            select(*_DESCRIPTION, _columns.position)
            .where(_key(job_id, epoch), _columns.name != PREVIEW_NAME)
            .order_by(_columns.position)
        )
        with self._engine.connect() as connection:
            return [_landed(row) for row in connection.execute(query)]

    def open(self, job_id: str, epoch: int, name: str) -> tuple[LandedFile, IO[bytes]]:
        if name == PREVIEW_NAME:
            raise FileNotFoundError("no file has an empty name")
        return self._read(job_id, epoch, name)

    def put_preview(self, job_id: str, epoch: int, data: bytes, content_type: str) -> LandedFile:
        version = select(_columns.position).where(
            _key(job_id, epoch), _columns.name == PREVIEW_NAME
        )
        with self._engine.connect() as connection:
            previous = connection.execute(version).scalar_one_or_none()
        described = landed(OutputFile(PREVIEW_NAME, data), (previous or 0) + 1, content_type)
        self._upsert(job_id, epoch, described, data)
        return described

    def open_preview(self, job_id: str, epoch: int) -> tuple[LandedFile, IO[bytes]]:
        return self._read(job_id, epoch, PREVIEW_NAME)

    def delete_preview(self, job_id: str, epoch: int) -> None:
        self._delete(_key(job_id, epoch), _columns.name == PREVIEW_NAME)

    def delete(self, job_id: str, epoch: int) -> None:
        self._delete(_key(job_id, epoch))

    def _read(self, job_id: str, epoch: int, name: str) -> tuple[LandedFile, IO[bytes]]:
        query = select(*_DESCRIPTION, _columns.position, _columns.data).where(
            _key(job_id, epoch), _columns.name == name
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            raise FileNotFoundError(f"job {job_id} has no file {name!r}")
        return _landed(row), io.BytesIO(bytes(row.data))

    def _upsert(self, job_id: str, epoch: int, described: LandedFile, data: bytes) -> None:
        values = {
            "job_id": job_id,
            "epoch": epoch,
            "name": described.name,
            "position": described.position,
            "content_type": described.content_type,
            "bytes": described.bytes,
            "sha256": described.sha256,
            "data": data,
        }
        statement = _upsert_statement(self._engine.dialect.name).values(values)
        replaced = {name: statement.excluded[name] for name in values if name in _REPLACED}
        statement = statement.on_conflict_do_update(index_elements=_PRIMARY_KEY, set_=replaced)
        with self._engine.begin() as connection:
            skip_flush(connection)
            connection.execute(statement)

    def _delete(self, *conditions: Any) -> None:
        with self._engine.begin() as connection:
            connection.execute(delete(_table).where(*conditions))


_PRIMARY_KEY = ["job_id", "epoch", "name"]
_REPLACED = frozenset({"position", "content_type", "bytes", "sha256", "data"})


def _upsert_statement(dialect: str) -> Any:
    # Each dialect's own INSERT, loaded on first use: a process on SQLite never loads
    # SQLAlchemy's PostgreSQL dialect (tests/test_start_up_imports.py).
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(_table)


def _key(job_id: str, epoch: int) -> Any:
    return and_(_columns.job_id == job_id, _columns.epoch == epoch)


def _landed(row: Any) -> LandedFile:
    return LandedFile(row.name, row.bytes, row.content_type, row.sha256, row.position)
