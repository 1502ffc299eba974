"""The result store contract, run against every backend: files on disk, chunked rows in
SQLite, chunked rows in PostgreSQL."""

from __future__ import annotations

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
