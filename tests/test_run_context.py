"""What a run tells the world (execution/run_context.py): previews are throttled, sized,
kept out of memory, and go when the run ends; files are stored before they are passed on."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime

import pytest

from app.generation.events.bus import EventBus, EventType
from app.generation.execution.run_context import CancelToken, RunContext
from app.generation.generators import OutputFile
from app.generation.job import Job, JobStatus, Priority
from app.generation.results.files import MAX_PREVIEW_BYTES, FilesystemFileStore
from app.generation.results.storage import GeneratorOutputError


def running(job_id: str) -> Job:
    now = datetime.now(UTC)
    return Job(0, job_id, "alice", "images", {}, Priority.NORMAL, JobStatus.RUNNING, now)


@pytest.fixture
def files(tmp_path):
    return FilesystemFileStore(tmp_path / "files")


def context_for(job_id, bus, files, service):
    return RunContext(running(job_id), service.store, bus, CancelToken(), files)


def kinds(bus, job_id):
    return [event.type for event in bus.history(job_id)]


def test_a_fast_generator_cannot_flood_watchers_with_previews(service, files):
    bus = EventBus()
    context = context_for("j1", bus, files, service)
    for frame in range(50):
        context.preview(bytes([frame]) * 100)
    assert kinds(bus, "j1") == [EventType.PREVIEW]  # one per PREVIEW_INTERVAL
    landed, stream = files.open_preview("j1", 0)
    assert stream.read() == bytes([0]) * 100


def test_the_latest_preview_offered_too_soon_is_shown_when_the_run_checks_in(
    service, files, monkeypatch
):
    bus = EventBus()
    context = context_for("j1", bus, files, service)
    for frame in range(3):
        context.preview(bytes([frame]) * 10)
    monkeypatch.setattr("app.generation.execution.run_context.PREVIEW_INTERVAL", 0.0)
    context.progress("working", 50)  # the generator checks in: the latest frame shows
    assert kinds(bus, "j1") == [EventType.PREVIEW, EventType.PREVIEW, EventType.PROGRESS]
    assert files.open_preview("j1", 0)[1].read() == bytes([2]) * 10
    context.progress("working", 60)
    assert kinds(bus, "j1")[-1] == EventType.PROGRESS  # frame 1 was replaced, not queued


def test_an_oversized_or_odd_preview_is_refused(service, files, caplog):
    bus = EventBus()
    context = context_for("j1", bus, files, service)
    context.preview(b"x" * (MAX_PREVIEW_BYTES + 1))
    context.preview(b"<html>", "text/html")
    assert kinds(bus, "j1") == []
    assert "preview refused" in caplog.text
    with pytest.raises(FileNotFoundError):
        files.open_preview("j1", 0)


def test_a_hundred_jobs_previewing_at_once_hold_no_previews_in_memory(service, files):
    bus = EventBus()
    contexts = [context_for(f"job{n}", bus, files, service) for n in range(100)]
    tracemalloc.start()
    try:
        for context in contexts:
            # A frame of its own, made while traced: kept by the run, 100 would be 20 MB.
            context.preview(b"\x89PNG" + bytes(200_000))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert sum(kinds(bus, f"job{n}") == [EventType.PREVIEW] for n in range(100)) == 100
    assert held < 2_000_000
    for context in contexts:
        context.end()
    assert list((files.root).glob("*/preview")) == []


@pytest.fixture
def live_at_once(monkeypatch):
    monkeypatch.setattr("app.generation.execution.run_context.LIVE_AFTER_SECONDS", 0.0)


def test_each_file_is_stored_and_announced_before_it_is_passed_on(service, files, live_at_once):
    bus = EventBus()
    context = context_for("j1", bus, files, service)
    passed = []
    for item in context.land([OutputFile("a.png", b"1"), OutputFile("b.png", b"22")]):
        assert [f.name for f in files.list("j1", 0)][-1] == item.name
        assert bus.history("j1")[-1].data["name"] == item.name
        passed.append(item.name)
    assert passed == ["a.png", "b.png"]


def test_a_short_runs_files_are_announced_with_its_result_not_stored(service, files):
    bus = EventBus()
    context = context_for("j1", bus, files, service)
    assert [f.name for f in context.land([OutputFile("a.png", b"1")])] == ["a.png"]
    assert files.list("j1", 0) == [] and kinds(bus, "j1") == []
    context.announce_result([{"name": "a.png", "bytes": 1, "sha256": "ab" * 32}])
    [event] = bus.history("j1")
    assert (event.type, event.data["name"], event.data["content_type"]) == (
        EventType.OUTPUT,
        "a.png",
        "image/png",
    )


def test_a_held_file_is_stored_once_the_run_checks_in_after_a_while(service, files, monkeypatch):
    context = context_for("j1", EventBus(), files, service)
    landing = context.land([OutputFile("a.png", b"1"), OutputFile("b.png", b"2")])
    next(landing)
    context.check_cancelled()
    assert files.list("j1", 0) == []  # too soon: the run may end any moment
    monkeypatch.setattr("app.generation.execution.run_context.LIVE_AFTER_SECONDS", 0.0)
    context.check_cancelled()  # the generator checks in while it works on the next file
    assert [f.name for f in files.list("j1", 0)] == ["a.png"]


def test_a_bad_or_repeated_file_name_fails_before_it_is_stored(service, files, live_at_once):
    context = context_for("j1", EventBus(), files, service)
    with pytest.raises(GeneratorOutputError):
        list(context.land([OutputFile("a.png", b"1"), OutputFile("a.png", b"2")]))
    with pytest.raises(GeneratorOutputError):
        list(context.land([OutputFile("../x", b"1")]))
    assert [f.name for f in files.list("j1", 0)] == ["a.png"]
