"""The JSON shape of a job, as the API contract defines it."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from flask import request

from ..generation import Job, JobStatus, Quote
from ..generation.generators import Generator
from ..generation.results.files import LandedFile
from ..generation.store.deliveries import Delivery
from .links import links

# The path of `api.get_job` without its id. Job ids are hex digits, which need no
# quoting, so a link is this prefix and the id under the app's mount point: what
# url_for builds (tests/test_job_links.py checks), without its cost (~15 µs a call).
JOB_PATH = "/api/v1/jobs/"


def file_path(job_id: str, name: str) -> str:
    """The path of one file of a job (`api.get_file`), under the app's mount point."""
    return f"{JOB_PATH}{job_id}/files/{quote(name)}"


def job_json(job: Job) -> dict[str, Any]:
    url = request.root_path + JOB_PATH + job.id
    signer = links()
    # The ZIP and the preview open without a key, as an `<img>` or a download needs
    # (links.py); the job, its events and its list of files still ask for one.
    result = signer.sign_for(url + "/result", job, "zip")
    job_links = {
        "self": url,
        "events": url + "/events",
        "result": result,
        "files": url + "/files",
        "preview": signer.sign_for(url + "/preview", job, "preview"),
    }
    return {
        "id": job.id,
        "status": job.status.value,
        "generator": job.generator,
        "params": job.params,
        "priority": job.priority.label,
        "position": job.position,
        "eta_seconds": job.eta_seconds,
        "progress": {
            "percent": job.progress.percent,
            "stage": job.progress.stage,
            "message": job.progress.message,
        },
        "error": job.error,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "expired_at": iso(job.expired_at),
        "result": _result(job, result),
        "webhook": _webhook(job),
        "links": job_links,
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "job_id": delivery.job_id,
        "event": delivery.event,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "last_attempt_at": iso(delivery.last_attempt_at),
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "created_at": iso(delivery.created_at),
        "finished_at": iso(delivery.finished_at),
    }


def generator_json(generator: Generator) -> dict[str, Any]:
    return {
        "name": generator.name,
        "description": generator.description,
        "cpu_bound": generator.cpu_bound,
        "params_schema": generator.params_schema(),
    }


def quote_json(quote: Quote) -> dict[str, Any]:
    """What a dry run answers: the job as it would be queued, without an id."""
    return {
        "dry_run": True,
        "generator": quote.generator,
        "params": quote.params,
        "priority": quote.priority.label,
        "position": quote.position,
        "eta_seconds": quote.eta_seconds,
    }


def file_json(job: Job, landed: LandedFile) -> dict[str, Any]:
    """One file of a job, with a link that opens it without a key (links.py)."""
    url = request.root_path + file_path(job.id, landed.name)
    return landed.event_data() | {"url": links().sign_for(url, job, "file:" + landed.name)}


def _webhook(job: Job) -> dict[str, Any] | None:
    """Where the job's events go (never the key's secret)."""
    if job.webhook is None:
        return None
    return {"url": job.webhook.url, "events": list(job.webhook.events)}


def _result(job: Job, signed_url: str) -> dict[str, Any] | None:
    if job.status is not JobStatus.SUCCEEDED or job.expired_at is not None:
        return None
    return {
        "url": signed_url,
        "bytes": job.result_bytes,
        "files": [entry["name"] for entry in job.result_files or []],
    }


def iso(moment: datetime | None) -> str | None:
    """A moment as the API writes it: ISO 8601 in UTC, with `Z`."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None
