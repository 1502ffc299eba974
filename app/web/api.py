"""HTTP API v1: each view translates one request into one service call, as its caller.

Every view acts for `current_principal()` (see auth.py): another owner's job is a 404,
exactly like a job that does not exist.
"""

from __future__ import annotations

from typing import IO

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from ..generation import GenerationService, Job, JobStatus
from ..generation.results.files import LandedFile
from ..generation.results.storage import safe_name
from ..wiring import get_service
from .auth import TOKEN_MAX_AGE, current_principal, mint_token
from .errors import ApiError
from .parsing import (
    check_job_id,
    dry_run,
    encode_cursor,
    idempotency_key,
    json_object,
    list_query,
    submission,
)
from .serialize import delivery_json, file_json, generator_json, job_json, quote_json

bp = Blueprint("api", __name__, url_prefix="/api/v1")

# How long a browser may reuse a finished job's file without asking again.
FILE_MAX_AGE = 3600
FILE_POLICY = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"


@bp.before_request
def authenticate_and_check_ids() -> None:
    """Authenticate every API request (401), then refuse malformed job ids (404)."""
    current_principal()
    check_job_id(request.view_args)


def service() -> GenerationService:
    return get_service(current_app)


def owner() -> str:
    return current_principal().owner


@bp.get("/generators")
def list_generators() -> Response:
    """The generators this server runs, with the JSON Schema of their params."""
    generators = sorted(service().generators, key=lambda generator: generator.name)
    return jsonify(generators=[generator_json(generator) for generator in generators])


@bp.get("/me")
def who_am_i() -> Response:
    """The caller as the API sees it: owner, tier, the priorities it may ask for."""
    principal = current_principal()
    return jsonify(
        owner=principal.owner,
        tier=principal.tier.value if principal.key_id else None,
        priorities=[priority.label for priority in principal.allowed_priorities()],
        default_priority=principal.priority_for(None).label,
        admin=principal.admin,
    )


@bp.post("/jobs")
def submit_job() -> tuple[Response, int, dict[str, str]]:
    """Accept a job: 202 with the job, its queue position and ETA (200 for a replay).

    With `?dry_run=true`: 200 with the position and ETA it would get, or the error it
    would get, and nothing queued."""
    # The request and app themselves, not their proxies: each use of a proxy costs ~2 µs.
    current, app = request._get_current_object(), current_app._get_current_object()
    body = json_object(current)
    generator, params, priority = submission(body)
    # The service applies the principal's limits (its tier's ceiling, its key's quota)
    # and checks the webhook's target.
    limits = {
        "priority": priority,
        "principal": current_principal(),
        "webhook": body.get("webhook"),
        "webhook_events": body.get("webhook_events"),
    }
    generation: GenerationService = get_service(app)
    # Checked before a dry run too: a dry run validates exactly as the submit would.
    key = idempotency_key(current.headers)
    if dry_run(current):
        return jsonify(quote_json(generation.quote(generator, params, **limits))), 200, {}
    job = generation.submit(generator, params, idempotency_key=key, **limits)
    body = job_json(job)
    headers = {"Location": body["links"]["self"]}
    if job.replayed:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(body), 200 if job.replayed else 202, headers


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    """One job; with a webhook, its deliveries so far (attempts and last answer)."""
    job = service().get(job_id, owner=owner())
    body = job_json(job)
    if body["webhook"] is not None:
        deliveries = service().deliveries.for_job(job.id)
        body["webhook"]["deliveries"] = [delivery_json(d) for d in deliveries]
    return jsonify(body)


@bp.get("/jobs")
def list_jobs() -> Response:
    """The caller's jobs, newest first, a page at a time."""
    statuses, limit, before = list_query(request.args)
    jobs = service().list(owner=owner(), statuses=statuses, before_pk=before, limit=limit + 1)
    next_cursor = encode_cursor(jobs[limit - 1].pk) if len(jobs) > limit else None
    return jsonify(jobs=[job_json(job) for job in jobs[:limit]], next_cursor=next_cursor)


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    """Cancel a queued job now, or a running one at its next checkpoint."""
    return jsonify(job_json(service().cancel(job_id, owner=owner())))


@bp.get("/jobs/<job_id>/result")
def get_result(job_id: str) -> Response:
    """The result ZIP, streamed as an attachment."""
    job = service().get(job_id, owner=owner())
    if job.expired_at is not None:
        raise ApiError(410, "expired", f"the result of job {job_id} expired and was deleted")
    if job.status is not JobStatus.SUCCEEDED:
        code, state = (
            ("not_ready", "is still " + job.status.value)
            if not job.status.is_terminal
            else ("no_result", job.status.value + " and has no result")
        )
        raise ApiError(409, code, f"job {job_id} {state}")
    try:
        stream = service().results.open(job.id, job.lease_epoch)
    except FileNotFoundError:
        raise ApiError(
            410, "result_gone", f"the result of job {job_id} is no longer stored"
        ) from None
    response = send_file(
        stream,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"{job.id}.zip",
        max_age=0,
    )
    response.content_length = job.result_bytes  # streamed stores cannot tell send_file
    return response


@bp.get("/jobs/<job_id>/files")
def list_files(job_id: str) -> Response:
    """The job's files so far, while it runs too, each with a signed url."""
    job = _unexpired(service().get(job_id, owner=owner()))
    files = service().files.list(job)
    return jsonify(job_id=job.id, status=job.status.value, files=[file_json(job, f) for f in files])


@bp.get("/jobs/<job_id>/files/<path:name>")
def get_file(job_id: str, name: str) -> Response:
    """One file of the job, as soon as it has landed."""
    job = _unexpired(service().get(job_id, owner=owner()))
    if not safe_name(name):
        raise _no_file(job_id, name)
    try:
        landed, stream = service().files.open(job, name)
    except FileNotFoundError:
        # It may have finished meanwhile: its files moved into its ZIP.
        job = service().get(job_id, owner=owner())
        try:
            landed, stream = service().files.open(job, name)
        except FileNotFoundError:
            raise _no_file(job_id, name) from None
    # A finished job's files never change; a running one's may, if its run starts again.
    max_age = FILE_MAX_AGE if job.status.is_terminal else 0
    return _serve(landed, stream, name.rsplit("/", 1)[-1], max_age)


@bp.get("/jobs/<job_id>/preview")
def get_preview(job_id: str) -> Response:
    """The running job's latest preview image; 404 when it has none (now)."""
    job = service().get(job_id, owner=owner())
    try:
        landed, stream = service().results.files.open_preview(job.id, job.lease_epoch)
    except FileNotFoundError:
        raise ApiError(404, "not_found", f"job {job_id} has no preview now") from None
    response = _serve(landed, stream, "preview", 0)
    response.cache_control.no_store = True
    return response


def _serve(landed: LandedFile, stream: IO[bytes], download_name: str, max_age: int) -> Response:
    response = send_file(
        stream,
        mimetype=landed.content_type,
        download_name=download_name,
        etag=landed.sha256,
        conditional=False,
        max_age=max_age,
    )
    # A conditional GET (304), but no byte ranges: only some stores' streams could serve
    # them (werkzeug needs the size up front), and a file is whole or not at all.
    response.make_conditional(request, accept_ranges=False)
    if response.status_code == 200:  # a file read from a ZIP has no size of its own
        response.content_length = landed.bytes
    response.cache_control.public = False
    response.cache_control.private = True
    # Generators' files are served from this origin: an SVG or HTML file must not run
    # scripts with the page's rights, whoever opens it.
    response.headers["Content-Security-Policy"] = FILE_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _unexpired(job: Job) -> Job:
    if job.expired_at is not None:
        raise ApiError(410, "expired", f"the result of job {job.id} expired and was deleted")
    return job


def _no_file(job_id: str, name: str) -> ApiError:
    return ApiError(404, "not_found", f"job {job_id} has no file {name[:200]!r}")


@bp.post("/tokens")
def create_token() -> Response:
    """A token for opening a WebSocket as the caller (`?token=`), valid for a minute."""
    return jsonify(token=mint_token(current_principal()), expires_in=TOKEN_MAX_AGE)
