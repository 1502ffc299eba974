"""The whole service under real gunicorn: submit, follow, download, open the PNGs."""

from __future__ import annotations

import io
import json
import time
import zipfile

import requests
from PIL import Image

from .servers import gunicorn


def test_a_job_runs_to_a_downloaded_zip_under_gunicorn(tmp_path):
    with gunicorn(tmp_path) as server:
        submitted = requests.post(
            f"{server.url}/api/v1/jobs",
            timeout=5,
            json={
                "generator": "images",
                "params": {"prompt": "harbour", "count": 2, "width": 128, "height": 96, "seed": 1},
            },
        )
        assert submitted.status_code == 202, submitted.text
        job_url = server.url + submitted.json()["links"]["self"]
        job = _wait_for_terminal(job_url)
        assert job["status"] == "succeeded", job
        download = requests.get(server.url + job["result"]["url"], timeout=5)
        assert download.headers["Content-Type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(download.content))
        manifest = json.loads(archive.read("manifest.json"))
        for entry in manifest["files"]:
            image = Image.open(io.BytesIO(archive.read(entry["name"])))
            assert image.size == (128, 96)
        status = requests.get(f"{server.url}/status", timeout=5).json()
        assert status["generation_service"]["completed_requests"] == 1
        assert status["generation_service"]["workers"] == 2
    assert server.process.returncode == 0, server.log()
    assert "Traceback" not in server.log()


def _wait_for_terminal(url: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(url, timeout=5).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"{url} did not finish in {timeout}s")
