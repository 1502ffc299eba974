"""A server killed (or stopped) with deliveries due loses none: after a restart they are
sent, each with the id it had (at least once: a receiver drops repeats by `webhook-id`)."""

from __future__ import annotations

import time

import pytest
import requests

from app.generation.notify.signing import new_secret

from .servers import free_port, gunicorn, kill_hard, stop
from .webhook_receiver import receiving

SECRET = new_secret()
ENV = {
    "GENERATION_WORKERS": "1",
    "WEBHOOK_ALLOW_HTTP": "true",
    "WEBHOOK_ALLOW_PRIVATE": "true",
    "WEBHOOK_SECRET": SECRET,
    "WEBHOOK_RETRY_DELAYS": ",".join(["0.5"] * 20),
    "WEBHOOK_TIMEOUT_SECONDS": "1",
}


def deliveries(url: str, job_id: str) -> list[dict]:
    document = requests.get(f"{url}/api/v1/jobs/{job_id}", timeout=5).json()
    return document["webhook"]["deliveries"]


def wait_until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.mark.parametrize("end", [kill_hard, stop], ids=["kill -9", "SIGTERM"])
def test_a_server_ended_with_deliveries_due_sends_them_after_restart(tmp_path, end):
    port = free_port()  # the receiver is down: nothing listens here yet
    body = {"generator": "noop", "params": {}, "webhook": f"http://127.0.0.1:{port}/hooks"}
    with gunicorn(tmp_path, ENV) as first:
        jobs = [
            requests.post(f"{first.url}/api/v1/jobs", json=body, timeout=5).json()["id"]
            for _ in range(3)
        ]
        wait_until(
            lambda: all(
                [d["attempts"] >= 1 for d in deliveries(first.url, job)] == [True] for job in jobs
            )
        )
        due = {deliveries(first.url, job)[0]["id"] for job in jobs}
        end(first)
    with receiving(port=port) as receiver, gunicorn(tmp_path, ENV) as second:
        # A row caught mid-attempt by the kill waits out its claim (about 16 s here).
        messages = receiver.wait_for(3, timeout=40)
        assert {message.id for message in messages} == due
        assert all(m.verified(SECRET)["data"]["status"] == "succeeded" for m in messages)
        wait_until(
            lambda: all(deliveries(second.url, job)[0]["status"] == "delivered" for job in jobs)
        )
