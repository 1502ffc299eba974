"""Results kept in the database, in slices, so every machine can serve any result.

A ZIP is written to a local temporary file first (never whole in memory), then stored as
CHUNK_BYTES rows of `result_chunks` in one transaction, so a result is either all there
or not there. A run's result is stored in the transaction of its outcome (`stage`:
the fenced UPDATE first, the chunks only if it matched, one commit): a run that lost its
claim writes nothing, and a job costs one commit fewer. Reading streams it back a slice
at a time: a download holds one slice in memory, whatever the ZIP's size. Chunked rows
work the same on PostgreSQL and SQLite, unlike large objects, and need no cleanup beyond
deleting rows.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable
from typing import IO, Any

from sqlalchemy import Engine, bindparam, delete, func, insert, select

from ..generators.base import OutputFile
from ..store import driver_statements as hot
from ..store.job_writes import skip_flush
from ..store.tables import ResultChunkRow
from .files_database import DatabaseFileStore
from .storage import ResultInfo, ResultStore, StagedResult, write_zip

CHUNK_BYTES = 1024 * 1024

_table = ResultChunkRow.__table__
_columns = _table.c
# Built once: building a Core statement per call cost more than running it.
_KEY = (_columns.job_id == bindparam("job_id"), _columns.epoch == bindparam("epoch"))
_DELETE = delete(_table).where(*_KEY)
_INSERT = insert(_table).values(
    job_id=bindparam("job_id"),
    epoch=bindparam("epoch"),
    number=bindparam("number"),
    data=bindparam("data", type_=_columns.data.type),
)


class DatabaseResultStore(ResultStore):
    def __init__(self, engine: Engine, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._engine = engine
        self._chunk_bytes = chunk_bytes
        self._statements = hot.Statements(engine)
        self.files = DatabaseFileStore(engine)

    def stage(
        self, job_id: str, epoch: int, files: Iterable[OutputFile], manifest: dict[str, Any]
    ) -> StagedResult:
        spool = tempfile.TemporaryFile()
        try:
            entries = write_zip(spool, files, manifest)
        except BaseException:
            spool.close()
            raise
        info = ResultInfo(bytes=spool.tell(), files=entries)
        key = {"job_id": job_id, "epoch": epoch}

        def write(connection: Any) -> None:
            # Run again from the start if the outcome's write is retried.
            spool.seek(0)
            self._execute(connection, _DELETE, key)
            number = 0
            while chunk := spool.read(self._chunk_bytes):
                self._execute(connection, _INSERT, key | {"number": number, "data": chunk})
                number += 1

        return StagedResult(info, write, spool.close)

    def save(
        self, job_id: str, epoch: int, files: Iterable[OutputFile], manifest: dict[str, Any]
    ) -> ResultInfo:
        with tempfile.TemporaryFile() as spool:
            entries = write_zip(spool, files, manifest)
            size = spool.tell()
            spool.seek(0)
            key = {"job_id": job_id, "epoch": epoch}
            with self._engine.begin() as connection:
                # No wait for the disk: the run's outcome is written next, synchronously,
                # and PostgreSQL's WAL is one sequence, so that flush carries this commit
                # with it. A crash before it loses nothing the job needs: the run did not
                # finish, the job runs again under a new epoch.
                skip_flush(connection)
                connection.execute(_DELETE, key)
                number = 0
                while chunk := spool.read(self._chunk_bytes):
                    connection.execute(_INSERT, key | {"number": number, "data": chunk})
                    number += 1
        return ResultInfo(bytes=size, files=entries)

    def open(self, job_id: str, epoch: int) -> IO[bytes]:
        """A seekable stream (a file of the ZIP is read from its place in it)."""
        size = self.size(job_id, epoch)
        reader = _ChunkReader(self._engine, job_id, epoch, self._chunk_bytes, size)
        return io.BufferedReader(reader, buffer_size=64 * 1024)

    def size(self, job_id: str, epoch: int) -> int:
        query = select(func.sum(func.length(_columns.data))).where(*_key(job_id, epoch))
        with self._engine.connect() as connection:
            total = connection.execute(query).scalar_one()
        if total is None:
            raise FileNotFoundError(f"no stored result for job {job_id} (epoch {epoch})")
        return int(total)

    def _execute(self, connection: Any, statement: Any, values: dict[str, Any]) -> None:
        """Run a prebuilt statement on the DB-API `connection` (the outcome's,
        store/driver_statements.py)."""
        prepared = self._statements.get(statement, ())
        connection.execute(prepared.sql, prepared.bind(values))

    def delete(self, job_id: str, epoch: int) -> None:
        with self._engine.begin() as connection:
            connection.execute(_DELETE, {"job_id": job_id, "epoch": epoch})


class _ChunkReader(io.RawIOBase):
    """Reads a stored ZIP one chunk row at a time, from any position: every chunk but the
    last holds `chunk_bytes` (how `stage` and `save` write them)."""

    def __init__(self, engine: Engine, job_id: str, epoch: int, chunk_bytes: int, size: int):
        self._engine = engine
        self._key = _key(job_id, epoch)
        self._chunk_bytes = chunk_bytes
        self._size = size
        self._position = 0
        self._number = -1  # the chunk held in `_chunk`
        self._chunk = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        if self._position >= self._size:
            return 0
        number, start = divmod(self._position, self._chunk_bytes)
        if number != self._number:
            self._chunk = self._fetch(number)
            self._number = number
        count = min(len(buffer), len(self._chunk) - start)
        buffer[:count] = self._chunk[start : start + count]
        self._position += count
        return count

    def _fetch(self, number: int) -> bytes:
        query = select(_columns.data).where(*self._key, _columns.number == number)
        with self._engine.connect() as connection:
            data = connection.execute(query).scalar_one_or_none()
        if data is None:
            raise FileNotFoundError("the stored result was deleted while it was read")
        return bytes(data)


def _key(job_id: str, epoch: int) -> tuple[Any, Any]:
    return (_columns.job_id == job_id, _columns.epoch == epoch)
