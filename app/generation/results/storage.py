"""Result storage: each successful run leaves one ZIP of its files plus `manifest.json`.

A result is keyed by job id AND lease epoch, so a run that lost its claim (a zombie)
writes a ZIP nobody will ever serve instead of overwriting the winner's.

Backends: `FilesystemResultStore` (here; the embedded default) writes the ZIP to a
temporary name and renames it into place, so a reader never sees half a file and a crash
leaves at most a stray `.tmp`. `DatabaseResultStore` (results/database.py; the default on
PostgreSQL) keeps it in the database, where every machine can read it.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..generators.base import OutputFile
from .files import FileStore, FilesystemFileStore

MANIFEST_NAME = "manifest.json"
# A ZIP up to this size is built in memory and written with one call: zipfile seeks back
# to patch each entry's header, and every seek of a file flushes it (a write system call).
MEMORY_ZIP_BYTES = 256 * 1024


class GeneratorOutputError(Exception):
    """A generator produced something that is not a valid result file."""


@dataclass(frozen=True)
class ResultInfo:
    bytes: int
    files: list[dict[str, Any]]


@dataclass(frozen=True)
class StagedResult:
    """A result built for a run's outcome. `write`, when set, stores it on a database
    connection inside the outcome's transaction (so both commit or neither does); None
    when the store saved it already. `close` frees what holds it meanwhile."""

    info: ResultInfo
    write: Callable[[Any], None] | None = None
    close: Callable[[], None] = lambda: None


class ResultStore(abc.ABC):
    """Where result ZIPs live. Implementations: filesystem (default), database. Each
    keeps the files of running jobs beside its ZIPs, in `files` (files.py)."""

    files: FileStore

    @abc.abstractmethod
    def save(
        self, job_id: str, epoch: int, files: Iterable[OutputFile], manifest: dict[str, Any]
    ) -> ResultInfo:
        """Write the ZIP of `files` plus a manifest; consume `files` lazily."""

    def stage(
        self, job_id: str, epoch: int, files: Iterable[OutputFile], manifest: dict[str, Any]
    ) -> StagedResult:
        """Build the ZIP for the run's outcome to store with it (a store in the job
        database: one transaction for both); this one saves it now."""
        return StagedResult(self.save(job_id, epoch, files, manifest))

    @abc.abstractmethod
    def open(self, job_id: str, epoch: int) -> IO[bytes]:
        """Open a saved ZIP for reading; FileNotFoundError if there is none."""

    def open_file(self, job_id: str, epoch: int, name: str) -> IO[bytes]:
        """One file of a saved ZIP, streamed from its place in it (files are stored, not
        compressed); FileNotFoundError if the ZIP or the file is missing."""
        stream = self.open(job_id, epoch)
        try:
            archive = zipfile.ZipFile(stream)
            entry = archive.open(name)
        except KeyError:
            stream.close()
            raise FileNotFoundError(f"the result of job {job_id} has no {name!r}") from None
        except BaseException:
            stream.close()
            raise
        return io.BufferedReader(_EntryReader(entry, archive, stream))

    @abc.abstractmethod
    def size(self, job_id: str, epoch: int) -> int:
        """Bytes of a saved ZIP; FileNotFoundError if there is none."""

    @abc.abstractmethod
    def delete(self, job_id: str, epoch: int) -> None:
        """Remove a ZIP if present."""

    def discard_run(self, job_id: str, epoch: int) -> None:
        """Remove all a run that will never be served left: its ZIP, if it got that far,
        and the files and preview it stored as it went."""
        try:
            self.delete(job_id, epoch)
        finally:  # the files go even if the ZIP could not
            self.files.delete(job_id, epoch)


class FilesystemResultStore(ResultStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._prefix = os.path.join(self.root, "")  # a str: pathlib costs µs per call
        self.files = FilesystemFileStore(self.root / "files")

    def save(
        self, job_id: str, epoch: int, files: Iterable[OutputFile], manifest: dict[str, Any]
    ) -> ResultInfo:
        stem = f"{self._prefix}{job_id}.{epoch}"
        temporary = stem + ".tmp"
        try:
            with SpillFile(temporary, MEMORY_ZIP_BYTES) as target:
                entries = write_zip(target, files, manifest)
                size = target.tell()
            os.replace(temporary, stem + ".zip")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return ResultInfo(bytes=size, files=entries)

    def open(self, job_id: str, epoch: int) -> IO[bytes]:
        return self._path(job_id, epoch).open("rb")

    def size(self, job_id: str, epoch: int) -> int:
        return self._path(job_id, epoch).stat().st_size

    def delete(self, job_id: str, epoch: int) -> None:
        self._path(job_id, epoch).unlink(missing_ok=True)

    def _path(self, job_id: str, epoch: int) -> Path:
        # Job ids are generated by the service (hex), so they are safe file names.
        return self.root / f"{job_id}.{epoch}.zip"


def write_zip(
    target: IO[bytes], files: Iterable[OutputFile], manifest: dict[str, Any]
) -> list[dict[str, Any]]:
    """Write the result ZIP of `files` plus a manifest to `target`; return the entries."""
    with zipfile.ZipFile(target, "w") as archive:
        entries = [_write_entry(archive, item) for item in files]
        if not entries:
            raise GeneratorOutputError("the generator produced no files")
        # Without `indent`, json uses its C encoder (a pretty manifest cost 50 µs a job).
        document = json.dumps(manifest | {"files": entries}, separators=(", ", ": "))
        archive.writestr(MANIFEST_NAME, document + "\n", zipfile.ZIP_DEFLATED)
    return entries


class _EntryReader(io.RawIOBase):
    """A ZIP entry being read; closing it closes the archive and the stream under it."""

    def __init__(self, entry: IO[bytes], archive: zipfile.ZipFile, stream: IO[bytes]) -> None:
        self._entry, self._archive, self._stream = entry, archive, stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._entry.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._entry.close()
            self._archive.close()
            self._stream.close()
        super().close()


class SpillFile:
    """A file being written that stays in memory until it outgrows `limit` bytes; then,
    and at the latest when closed, it goes to `path`. Just the methods zipfile uses."""

    def __init__(self, path: str, limit: int) -> None:
        self._path = path
        self._limit = limit
        self._memory: io.BytesIO | None = io.BytesIO()
        self._target: IO[bytes] = self._memory

    def write(self, data: bytes) -> int:
        if self._memory is not None and self._memory.tell() + len(data) > self._limit:
            self._spill()
        return self._target.write(data)

    def tell(self) -> int:
        return self._target.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._target.seek(offset, whence)

    def flush(self) -> None:
        self._target.flush()

    def __enter__(self) -> SpillFile:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None and self._memory is not None:
            self._spill()
        if self._target is not self._memory:
            self._target.close()

    def _spill(self) -> None:
        assert self._memory is not None
        position = self._memory.tell()
        self._target = open(self._path, "wb")  # noqa: SIM115 - closed by __exit__
        self._target.write(self._memory.getbuffer())
        self._target.seek(position)
        self._memory = None


def check_output(item: object, taken: Container[str] = ()) -> OutputFile:
    """`item` if it is a file a result may hold; GeneratorOutputError naming what is wrong."""
    if not isinstance(item, OutputFile) or not isinstance(item.data, bytes):
        raise GeneratorOutputError(f"expected OutputFile with bytes, got {type(item).__name__}")
    if item.name in taken or item.name == MANIFEST_NAME or not safe_name(item.name):
        raise GeneratorOutputError(f"bad or duplicate output file name {item.name!r}")
    return item


def _write_entry(archive: zipfile.ZipFile, item: object) -> dict[str, Any]:
    item = check_output(item, archive.NameToInfo)
    archive.writestr(item.name, item.data, zipfile.ZIP_STORED)
    return {
        "name": item.name,
        "bytes": len(item.data),
        "sha256": hashlib.sha256(item.data).hexdigest(),
    }


def safe_name(name: str) -> bool:
    parts = name.split("/")
    return (
        bool(name)
        and len(name) <= 200
        and "\\" not in name
        and "\x00" not in name
        and all(part not in ("", ".", "..") for part in parts)
    )
