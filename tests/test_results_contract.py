"""The result store contract, run against every backend: files on disk, chunked rows in
SQLite, chunked rows in PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.generation.generators import OutputFile
from app.generation.results.database import DatabaseResultStore
from app.generation.results.storage import FilesystemResultStore, GeneratorOutputError, ResultStore
from app.generation.store import schema
from app.generation.store.engine import create_database_engine


@pytest.fixture(params=["filesystem", "database-sqlite", "database-postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultStore]:
    if request.param == "filesystem":
        yield FilesystemResultStore(tmp_path / "results")
        return
    if request.param == "database-sqlite":
        engine = create_database_engine(f"sqlite:///{tmp_path / 'results.db'}")
        schema.upgrade(engine)
    else:
        engine = request.getfixturevalue("pg_engine")
    # Small chunks, so that every result spans several rows.
    yield DatabaseResultStore(engine, chunk_bytes=1000)
    engine.dispose()


def files(*names: str, size: int = 2500) -> list[OutputFile]:
    return [OutputFile(name, bytes([n]) * size) for n, name in enumerate(names)]


class TestResultStoreContract:
    def test_saved_zip_holds_the_files_and_a_manifest(self, store):
        info = store.save("job1", 1, files("a.png", "b.png"), {"job_id": "job1"})
        assert [entry["name"] for entry in info.files] == ["a.png", "b.png"]
        assert store.size("job1", 1) == info.bytes
        with store.open("job1", 1) as stream:
            archive = zipfile.ZipFile(io.BytesIO(stream.read()))
        assert archive.namelist() == ["a.png", "b.png", "manifest.json"]
        assert archive.read("b.png") == bytes([1]) * 2500

    def test_results_are_streamed_in_small_reads(self, store):
        info = store.save("job1", 1, files("a.png", size=10_000), {})
        with store.open("job1", 1) as stream:
            pieces = list(iter(lambda: stream.read(300), b""))
        assert max(map(len, pieces)) <= 300
        assert sum(map(len, pieces)) == info.bytes

    def test_each_epoch_has_its_own_result(self, store):
        store.save("job1", 1, [OutputFile("out.txt", b"zombie")], {})
        store.save("job1", 2, [OutputFile("out.txt", b"winner")], {})
        store.delete("job1", 1)
        with store.open("job1", 2) as stream:
            assert zipfile.ZipFile(io.BytesIO(stream.read())).read("out.txt") == b"winner"
        with pytest.raises(FileNotFoundError):
            store.open("job1", 1)

    def test_missing_result_raises_file_not_found(self, store):
        with pytest.raises(FileNotFoundError):
            store.open("nope", 1)
        with pytest.raises(FileNotFoundError):
            store.size("nope", 1)
        store.delete("nope", 1)  # deleting nothing is fine

    def test_bad_output_saves_nothing(self, store):
        with pytest.raises(GeneratorOutputError):
            store.save("job1", 1, [OutputFile("../escape", b"x")], {})
        with pytest.raises(GeneratorOutputError):
            store.save("job1", 1, [], {})
        with pytest.raises(FileNotFoundError):
            store.open("job1", 1)


class TestFileStoreContract:
    """Files as they land and the live preview (results/files.py), on every backend."""

    def test_files_are_listed_in_landing_order_and_read_back(self, store):
        landed = [store.files.put("job1", 1, n, item) for n, item in enumerate(files("b", "a/c"))]
        assert [item.name for item in store.files.list("job1", 1)] == ["b", "a/c"]
        described, stream = store.files.open("job1", 1, "a/c")
        with stream:
            assert stream.read() == bytes([1]) * 2500
        assert described == landed[1]
        assert (described.bytes, described.content_type) == (2500, "application/octet-stream")
        assert described.sha256 == hashlib.sha256(bytes([1]) * 2500).hexdigest()

    def test_a_files_content_type_follows_its_name(self, store):
        png = store.files.put("job1", 1, 0, OutputFile("x/y.png", b"\x89PNG"))
        svg = store.files.put("job1", 1, 1, OutputFile("y.svg", b"<svg/>"))
        assert (png.content_type, svg.content_type) == ("image/png", "image/svg+xml")

    def test_missing_files_and_other_epochs_are_not_found(self, store):
        store.files.put("job1", 1, 0, OutputFile("a", b"1"))
        assert store.files.list("job1", 2) == [] == store.files.list("job2", 1)
        for job, epoch, name in [("job1", 2, "a"), ("job1", 1, "b"), ("job1", 1, "")]:
            with pytest.raises(FileNotFoundError):
                store.files.open(job, epoch, name)

    def test_the_latest_preview_replaces_the_one_before_and_is_no_file(self, store):
        store.files.put("job1", 1, 0, OutputFile("a", b"1"))
        first = store.files.put_preview("job1", 1, b"one", "image/png")
        second = store.files.put_preview("job1", 1, b"two!", "image/jpeg")
        assert (first.position, second.position) == (1, 2)
        described, stream = store.files.open_preview("job1", 1)
        assert (described.content_type, stream.read()) == ("image/jpeg", b"two!")
        assert [item.name for item in store.files.list("job1", 1)] == ["a"]
        store.files.delete_preview("job1", 1)
        with pytest.raises(FileNotFoundError):
            store.files.open_preview("job1", 1)
        assert [item.name for item in store.files.list("job1", 1)] == ["a"]

    def test_delete_removes_a_runs_files_and_preview_only(self, store):
        store.files.put("job1", 1, 0, OutputFile("a", b"1"))
        store.files.put_preview("job1", 1, b"p", "image/png")
        store.files.put("job1", 2, 0, OutputFile("a", b"2"))
        store.files.delete("job1", 1)
        assert store.files.list("job1", 1) == []
        with pytest.raises(FileNotFoundError):
            store.files.open_preview("job1", 1)
        assert [item.name for item in store.files.list("job1", 2)] == ["a"]
