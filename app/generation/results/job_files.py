"""A job's files, wherever they are now: stored one by one while its run goes on
(files.py), in its ZIP once it has succeeded (storage.py). Clients ask by name and get
the same answer through the switch; a failed or cancelled job has none."""

from __future__ import annotations

from typing import IO, Any

from ..job import Job, JobStatus
from .files import LandedFile, content_type_of
from .storage import ResultStore


class JobFiles:
    def __init__(self, results: ResultStore) -> None:
        self._results = results

    def list(self, job: Job) -> list[LandedFile]:
        """The job's files so far, in the order they landed."""
        if job.status is JobStatus.SUCCEEDED:
            return [_from_entry(n, entry) for n, entry in enumerate(job.result_files or [])]
        if job.status is JobStatus.RUNNING:
            return self._results.files.list(job.id, job.lease_epoch)
        return []

    def open(self, job: Job, name: str) -> tuple[LandedFile, IO[bytes]]:
        """One file and a stream of it; FileNotFoundError if the job has no such file
        (now: a running job's file may not have landed yet)."""
        if job.status is JobStatus.RUNNING:
            return self._results.files.open(job.id, job.lease_epoch, name)
        if job.status is not JobStatus.SUCCEEDED:
            raise FileNotFoundError(f"job {job.id} is {job.status.value}: it has no files")
        for number, entry in enumerate(job.result_files or []):
            if entry["name"] == name:  # the manifest is the ZIP's, not a file of the job
                stream = self._results.open_file(job.id, job.lease_epoch, name)
                return _from_entry(number, entry), stream
        raise FileNotFoundError(f"job {job.id} has no file {name!r}")


def _from_entry(number: int, entry: dict[str, Any]) -> LandedFile:
    """A file of a finished job, described from its ZIP entry (the job's result_files)."""
    name = entry["name"]
    return LandedFile(name, entry["bytes"], content_type_of(name), entry["sha256"], number)
