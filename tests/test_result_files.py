"""The filesystem result store: complete ZIPs or nothing, with their true size."""

import pytest

from app.generation.generators.base import OutputFile
from app.generation.results.storage import FilesystemResultStore, GeneratorOutputError


def test_save_reports_the_size_of_the_zip_it_wrote(tmp_path):
    store = FilesystemResultStore(tmp_path)
    info = store.save("job", 1, [OutputFile("a.txt", b"hello")], {"job_id": "job"})
    assert info.bytes == store.size("job", 1) == (tmp_path / "job.1.zip").stat().st_size


def test_a_failed_save_leaves_no_file_behind(tmp_path):
    store = FilesystemResultStore(tmp_path)
    with pytest.raises(GeneratorOutputError):
        store.save("job", 1, [OutputFile("../escape", b"x")], {})
    assert list(tmp_path.iterdir()) == []
