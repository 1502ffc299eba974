"""Operators' API (`/api/v1/admin`): calls that act on the whole queue rather than on
the caller's jobs. An admin key may call them (`flask --app wsgi keys create ops
--admin`); any other key gets 403 and learns nothing. In open mode they are open, like
the rest. Every action is logged (a JSON line with the key's id) and counted in /metrics.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from ..generation import GenerationService
from ..generation.store.queue_state import Paused
from ..metrics import Metrics
from ..wiring import get_service
from .auth import current_principal
from .errors import ApiError
from .serialize import iso

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__, url_prefix="/api/v1/admin")


@bp.before_request
def admins_only() -> None:
    """401 without a valid key (keys mode), 403 for a key that is not an admin's."""
    if not current_principal().admin:
        raise ApiError(403, "forbidden", "this call needs an admin key")


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


def _queue_json(paused: Paused | None) -> dict[str, Any]:
    return {
        "paused": paused is not None,
        "paused_at": iso(paused.at) if paused else None,
        "paused_by": paused.by if paused else None,
    }


def _actor() -> str:
    """Who acts: the admin key's id, or `open` (AUTH_MODE=open has no keys)."""
    return current_principal().key_id or "open"


def _record(action: str) -> None:
    log.info("admin action: %s", action, extra={"action": action, "key_id": _actor()})
    metrics: Metrics = current_app.extensions["metrics"]
    metrics.admin_actions.labels(action).inc()


def _service() -> GenerationService:
    return get_service(current_app)
