"""kill -9 of the whole server mid-job loses nothing: a new server finishes every job."""

from __future__ import annotations

import time

import requests

from .servers import gunicorn, kill_hard

SMALL = {"prompt": "small", "count": 1, "width": 64, "height": 64}
LONG = {"prompt": "long", "count": 16, "width": 1024, "height": 1024}


def submit(url: str, params: dict) -> str:
    response = requests.post(
        f"{url}/api/v1/jobs", json={"generator": "images", "params": params}, timeout=5
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def job(url: str, job_id: str) -> dict:
    return requests.get(f"{url}/api/v1/jobs/{job_id}", timeout=5).json()


def wait_until(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_kill_9_mid_job_then_restart_completes_every_accepted_job(tmp_path):
    env = {"GENERATION_WORKERS": "1"}
    with gunicorn(tmp_path, env) as first:
        long_id = submit(first.url, LONG)
        queued_ids = [submit(first.url, SMALL) for _ in range(3)]
        wait_until(lambda: job(first.url, long_id)["progress"]["percent"] > 0)
        kill_hard(first)

    with gunicorn(tmp_path, env) as second:
        for job_id in [long_id, *queued_ids]:
            wait_until(lambda job_id=job_id: job(second.url, job_id)["status"] == "succeeded")
        retried = job(second.url, long_id)
        assert retried["attempts"] == 2
        assert len(retried["result"]["files"]) == 16
        download = requests.get(second.url + retried["result"]["url"], timeout=10)
        assert download.status_code == 200
        assert "requeued" in second.log()
