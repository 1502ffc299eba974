"""Operators' API (`/api/v1/admin`): calls that act on the whole queue and on every
owner's jobs rather than on the caller's. An admin key may call them (`flask --app wsgi
keys create ops --admin`); any other key gets 403 and learns nothing. In open mode they
are open, like the rest. Every action is logged (a JSON line with the key's id) and
counted in /metrics."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..generation import GenerationService
from ..generation.store.queue_state import Paused
from ..metrics import Metrics
from ..wiring import get_service
from .auth import current_principal
from .errors import ApiError
from .parsing import check_job_id
from .serialize import iso, job_json

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__, url_prefix="/api/v1/admin")


@bp.before_request
def admins_only() -> None:
    """401 without a valid key (keys mode), 403 for a key that is not an admin's; then
    malformed job ids are 404s, as in api.py."""
    if not current_principal().admin:
        raise ApiError(403, "forbidden", "this call needs an admin key")
    check_job_id(request.view_args)


@bp.get("/queue")
def queue_state() -> Response:
    """Whether the queue is paused, since when and by whom."""
    return jsonify(_queue_json(_service().pause.state()))


@bp.post("/queue/pause")
def pause_queue() -> Response:
    """Pause the queue everywhere: submissions get 503 `paused`, no job starts, running
    jobs finish. Holds across restarts until resumed."""
    paused = _service().pause_queue(by=_actor())
    _record("pause")
    return jsonify(_queue_json(paused))


@bp.post("/queue/resume")
def resume_queue() -> Response:
    """Resume the queue: submissions are taken and workers claim again."""
    _service().resume_queue()
    _record("resume")
    return jsonify(_queue_json(None))


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    """Cancel any owner's job: a queued one at once, a running one at its next
    checkpoint (409 `already_finished` for a job that ended)."""
    job = _service().cancel(job_id)
    _record("cancel", job_id=job.id, owner=job.owner)
    return jsonify(job_json(job))


def _queue_json(paused: Paused | None) -> dict[str, Any]:
    return {
        "paused": paused is not None,
        "paused_at": iso(paused.at) if paused else None,
        "paused_by": paused.by if paused else None,
    }


def _actor() -> str:
    """Who acts: the admin key's id, or `open` (AUTH_MODE=open has no keys)."""
    return current_principal().key_id or "open"


def _record(action: str, **about: str) -> None:
    fields = {"action": action, "key_id": _actor(), **about}
    log.info("admin action: %s", action, extra=fields)
    metrics: Metrics = current_app.extensions["metrics"]
    metrics.admin_actions.labels(action).inc()


def _service() -> GenerationService:
    return get_service(current_app)
