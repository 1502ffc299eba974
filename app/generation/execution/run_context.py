"""What one run tells the world while it goes: its progress, its files as they land
and its live preview (`RunContext`, the generator's `GeneratorContext`), and the token
that tells the run to stop (`CancelToken`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator

from sqlalchemy.exc import SQLAlchemyError

from ..errors import JobCancelled
from ..events.bus import EventBus, EventType
from ..events.observers import JobObserver
from ..generators.base import OutputFile
from ..job import Job, Progress
from ..results.files import MAX_PREVIEW_BYTES, PREVIEW_TYPES, FileStore, content_type_of
from ..results.storage import check_output
from ..store.jobs import JobStore

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL = 0.5
PREVIEW_INTERVAL = 0.2
# A run's files are stored as they land once it has run this long: a client may be
# watching. A run that ends sooner hands all of them over with its outcome instead.
LIVE_AFTER_SECONDS = 0.25


class CancelToken:
    """Set once, by a cancel request or a shutdown; `reason` says which."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class RunContext:
    """The `GeneratorContext` of one run: what the run tells the world.

    Progress goes to the bus at once and to the row at most every
    PROGRESS_WRITE_INTERVAL seconds (stage changes and 100 % always). Each file the
    generator yields is checked before the ZIP takes it and, once the run has gone on
    for LIVE_AFTER_SECONDS, stored (results/files.py) and announced (`output`). A
    preview replaces the run's one preview and is announced (`preview`), at most every
    PREVIEW_INTERVAL seconds: a generator may offer them as fast as it likes, sockets
    and the database see a few a second. What was stored goes when the run ends."""

    def __init__(
        self,
        job: Job,
        store: JobStore,
        bus: EventBus,
        token: CancelToken,
        files: FileStore,
        observer: JobObserver | None = None,
    ) -> None:
        self._job = job
        self._observer = observer or JobObserver()
        self._store = store
        self._bus = bus
        self.token = token
        self._files = files
        self._percent = 0.0
        self._stage: str | None = None
        self._written_at = 0.0
        self._previewed_at = float("-inf")  # monotonic; -inf: never, so nothing to delete
        self._refused_preview = False
        # A preview offered within PREVIEW_INTERVAL of the last one shown: at most one per
        # run (a few MB at most per worker thread), dropped if a newer one comes first.
        self._waiting_preview: tuple[bytes, str] | None = None
        self._started = time.monotonic()
        self._announced: set[str] = set()  # files stored (and announced) while running
        self._held: list[tuple[int, OutputFile]] = []  # landed, not stored yet

    def progress(
        self,
        stage: str,
        percent: float,
        message: str = "",
        *,
        step: int | None = None,
        total: int | None = None,
    ) -> None:
        if self.token.is_set():  # a run told to stop reports nothing more
            return
        self._store_if_due()
        self._show_preview_if_due()
        self._percent = max(self._percent, min(100.0, max(0.0, float(percent))))
        progress = Progress(
            round(self._percent, 2), str(stage)[:64], str(message)[:500], step, total
        )
        self._bus.publish(self._job.id, EventType.PROGRESS, **progress.event_data())
        now = time.monotonic()
        if (
            stage != self._stage
            or self._percent >= 100
            or now - self._written_at >= PROGRESS_WRITE_INTERVAL
        ):
            self._stage = stage
            self._written_at = now
            self._write(progress)

    def preview(self, data: bytes, content_type: str = "image/png") -> None:
        if self.token.is_set() or not self._previewable(data, content_type):
            return
        # The latest wins: one offered too soon waits (replacing any that waited) and is
        # shown once the interval has passed and the generator checks in again.
        self._waiting_preview = (bytes(data), content_type)
        self._show_preview_if_due()

    def _show_preview_if_due(self) -> None:
        now = time.monotonic()
        if self._waiting_preview is None or now - self._previewed_at < PREVIEW_INTERVAL:
            return
        data, content_type = self._waiting_preview
        self._waiting_preview = None
        self._previewed_at = now
        job = self._job
        try:
            stored = self._files.put_preview(job.id, job.lease_epoch, data, content_type)
        except (OSError, SQLAlchemyError) as error:
            log.warning("could not store a preview of job %s: %s", job.id, error)
            return
        data_fields = stored.event_data() | {"version": stored.position}
        del data_fields["name"]
        self._bus.publish(job.id, EventType.PREVIEW, **data_fields)

    def land(self, files: Iterable[object]) -> Iterator[OutputFile]:
        """`files`, each checked and passed on; once the run has gone on for
        LIVE_AFTER_SECONDS, each is first stored and announced (`output`), so clients see
        it before the job ends. Files of a run that ends sooner are announced with its
        outcome (`announce_result`) and served from its ZIP, like every finished job's:
        storing them one by one would cost a short job a write it does not need."""
        names: set[str] = set()
        for position, item in enumerate(files):
            self.check_cancelled()  # a run told to stop (or abandoned) lands nothing more
            output = check_output(item, names)
            names.add(output.name)
            self._held.append((position, output))
            self._waiting_preview = None  # it showed work that has now landed
            self._store_if_due()
            yield output

    def announce_result(self, files: list[dict[str, object]]) -> None:
        """The run succeeded with `files` (the ZIP's entries): announce those not announced
        yet; all are served from the ZIP from now on."""
        for entry in files:
            name = str(entry["name"])
            if name not in self._announced:
                data = {"name": name, "bytes": entry["bytes"], "sha256": entry["sha256"]}
                self._bus.publish(
                    self._job.id, EventType.OUTPUT, **data, content_type=content_type_of(name)
                )

    def end(self) -> None:
        """The run is over: its preview and the files stored while it ran go (a finished
        job's files are served from its ZIP; a failed one has none)."""
        job = self._job
        try:
            if self._announced:
                self._files.delete(job.id, job.lease_epoch)
            elif self._previewed_at != float("-inf"):
                self._files.delete_preview(job.id, job.lease_epoch)
        except (OSError, SQLAlchemyError) as error:
            log.warning("could not delete the live files of job %s: %s", job.id, error)

    def _store_if_due(self) -> None:
        """Store the files held so far once the run has gone on for LIVE_AFTER_SECONDS.
        Called with each file and whenever the generator reports or checks in, so a file
        waits no longer than that for a generator that checks in between its files."""
        if not self._held or time.monotonic() - self._started < LIVE_AFTER_SECONDS:
            return
        job = self._job
        for position, output in self._held:
            stored = self._files.put(job.id, job.lease_epoch, position, output)
            self._announced.add(output.name)
            self._bus.publish(job.id, EventType.OUTPUT, **stored.event_data())
            self._observer.landed(job, stored.event_data(), position)
        self._held.clear()

    def _previewable(self, data: bytes, content_type: str) -> bool:
        problem = None
        if content_type not in PREVIEW_TYPES:
            problem = f"type {content_type!r} is not one of {sorted(PREVIEW_TYPES)}"
        elif not isinstance(data, (bytes, bytearray)) or len(data) > MAX_PREVIEW_BYTES:
            problem = f"a preview is bytes, at most {MAX_PREVIEW_BYTES} of them"
        if problem and not self._refused_preview:  # said once a run, not per frame
            self._refused_preview = True
            log.warning("job %s: preview refused: %s", self._job.id, problem)
        return problem is None

    def check_cancelled(self) -> None:
        if self.token.is_set():
            raise JobCancelled(self.token.reason)
        self._store_if_due()
        self._show_preview_if_due()

    def _write(self, progress: Progress) -> None:
        try:
            row = self._store.record_progress(self._job, progress)
        except SQLAlchemyError as error:
            log.warning("could not store progress of job %s: %s", self._job.id, error)
            return
        if row is None:
            self.token.cancel("lease_lost")
        elif row.cancel_requested:
            self.token.cancel("cancelled")
