"""A run's files as they land, and its live preview, readable while the job still runs.

The result ZIP (storage.py) exists only once a run has succeeded. So that a client can
look at each file before that, a run that goes on for more than a moment also puts each
file here as it lands (execution/run_context.py), keyed like the ZIP by job id and lease
epoch (a zombie's files are never served), and announces it with an `output` event. A
generator may also publish a *preview* of work in progress: one per run, the latest
replacing the one before, never part of the ZIP.

All of it is deleted when the run ends (a run whose process died: when its job is taken
back, execution/leases.py): a finished job's files are read from its ZIP (job_files.py),
so nothing is kept twice. Backends: `FilesystemFileStore` (here, beside the filesystem
result store) and `DatabaseFileStore` (files_database.py: one row per file, so every
machine serves every file of a running job).
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import io
import json
import mimetypes
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from ..generators.base import OutputFile

# A preview larger than this is refused (the generator is told in the log): previews are
# for a glance, and one per running job is held wherever results are.
MAX_PREVIEW_BYTES = 2 * 1024 * 1024
PREVIEW_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
_FALLBACK_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class LandedFile:
    """One stored file of a run (or its preview: `name` is empty)."""

    name: str
    bytes: int
    content_type: str
    sha256: str
    position: int  # landing order; a preview's version (each replacement counts one up)

    def event_data(self) -> dict[str, object]:
        """The fields of an `output` (or `preview`) event, without the url."""
        return {
            "name": self.name,
            "bytes": self.bytes,
            "content_type": self.content_type,
            "sha256": self.sha256,
        }


def content_type_of(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or _FALLBACK_TYPE


def landed(item: OutputFile, position: int, content_type: str | None = None) -> LandedFile:
    return LandedFile(
        name=item.name,
        bytes=len(item.data),
        content_type=content_type or content_type_of(item.name),
        sha256=hashlib.sha256(item.data).hexdigest(),
        position=position,
    )


class FileStore(abc.ABC):
    """Where a run's files and preview live while (and, for files, after) it runs."""

    @abc.abstractmethod
    def put(self, job_id: str, epoch: int, position: int, item: OutputFile) -> LandedFile:
        """Store one file (its name already checked); a repeated name replaces it."""

    @abc.abstractmethod
    def list(self, job_id: str, epoch: int) -> list[LandedFile]:
        """The run's files so far, in landing order."""

    @abc.abstractmethod
    def open(self, job_id: str, epoch: int, name: str) -> tuple[LandedFile, IO[bytes]]:
        """One file and a stream of its bytes; FileNotFoundError if there is none."""

    @abc.abstractmethod
    def put_preview(self, job_id: str, epoch: int, data: bytes, content_type: str) -> LandedFile:
        """Replace the run's preview (size and type checked by the caller)."""

    @abc.abstractmethod
    def open_preview(self, job_id: str, epoch: int) -> tuple[LandedFile, IO[bytes]]:
        """The run's preview; FileNotFoundError if there is none (now)."""

    @abc.abstractmethod
    def delete_preview(self, job_id: str, epoch: int) -> None:
        """Remove the run's preview, if any (its run ended)."""

    @abc.abstractmethod
    def delete(self, job_id: str, epoch: int) -> None:
        """Remove the run's files and preview, if any."""


class FilesystemFileStore(FileStore):
    """`<root>/<job id>.<epoch>/`: each file's bytes and its description side by side,
    under the SHA-256 of its name (a generator's names may hold `/`; these never do),
    each written to a temporary name and renamed, so a reader sees all of it or none."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)  # made by the first file

    def put(self, job_id: str, epoch: int, position: int, item: OutputFile) -> LandedFile:
        described = landed(item, position)
        self._write(self._folder(job_id, epoch), _stem(item.name), item.data, described)
        return described

    def list(self, job_id: str, epoch: int) -> list[LandedFile]:
        folder = self._folder(job_id, epoch)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name.endswith(".json") and name != "preview.json":
                with contextlib.suppress(FileNotFoundError):
                    found.append(_read_description(folder / name))
        return sorted(found, key=lambda file: file.position)

    def open(self, job_id: str, epoch: int, name: str) -> tuple[LandedFile, IO[bytes]]:
        return self._open(self._folder(job_id, epoch), _stem(name))

    def put_preview(self, job_id: str, epoch: int, data: bytes, content_type: str) -> LandedFile:
        folder = self._folder(job_id, epoch)
        version = 1
        with contextlib.suppress(FileNotFoundError):
            version = _read_description(folder / "preview.json").position + 1
        described = landed(OutputFile("", data), version, content_type)
        self._write(folder, "preview", data, described)
        return described

    def open_preview(self, job_id: str, epoch: int) -> tuple[LandedFile, IO[bytes]]:
        folder = self._folder(job_id, epoch)
        for _ in range(3):  # a preview replaced between the two reads is read again
            described = _read_description(folder / "preview.json")
            data = (folder / "preview").read_bytes()
            if hashlib.sha256(data).hexdigest() == described.sha256:
                return described, io.BytesIO(data)
        raise FileNotFoundError("the preview is being replaced")

    def delete_preview(self, job_id: str, epoch: int) -> None:
        folder = self._folder(job_id, epoch)
        for name in ("preview.json", "preview"):
            (folder / name).unlink(missing_ok=True)

    def delete(self, job_id: str, epoch: int) -> None:
        shutil.rmtree(self._folder(job_id, epoch), ignore_errors=True)

    def _folder(self, job_id: str, epoch: int) -> Path:
        # Job ids are generated by the service (hex), so they are safe file names.
        return self.root / f"{job_id}.{epoch}"

    def _write(self, folder: Path, stem: str, data: bytes, described: LandedFile) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        # The bytes first: a description names only a file that is all there.
        _replace(folder / stem, data)
        _replace(folder / f"{stem}.json", json.dumps(asdict(described)).encode())

    def _open(self, folder: Path, stem: str) -> tuple[LandedFile, IO[bytes]]:
        return _read_description(folder / f"{stem}.json"), (folder / stem).open("rb")


def _stem(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:40]


def _read_description(path: Path) -> LandedFile:
    return LandedFile(**json.loads(path.read_bytes()))


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
