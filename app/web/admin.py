"""Operators' API (`/api/v1/admin`): calls that act on the whole queue and on every
owner's jobs rather than on the caller's. An admin key may call them (`flask --app wsgi
keys create ops --admin`); any other key gets 403 and learns nothing. In open mode they
are open, like the rest. Every action is logged (a JSON line with the key's id) and
counted in /metrics."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..generation import GenerationService, Priority
from ..generation.store.queue_state import Paused
from ..metrics import Metrics
from ..wiring import get_service
from .auth import current_principal
from .errors import ApiError
from .parsing import check_job_id, json_object
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


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> Response:
    """Run a failed job again: a new attempt of the same job (same id, events and
    webhook), queued behind its owner's jobs of its priority; 409 `not_failed` otherwise."""
    job = _service().ops.steering.retry(job_id)
    _record("retry", job_id=job.id, owner=job.owner)
    return jsonify(job_json(_service().describe(job)))


@bp.post("/jobs/<job_id>/priority")
def change_priority(job_id: str) -> Response:
    """Give a queued job another priority (`{"priority": "high"}`); it keeps the wait
    it has done. 409 `not_queued` for a job that is not queued."""
    priority = _priority(json_object(request))
    job = _service().ops.steering.reprioritize(job_id, priority)
    _record("priority", job_id=job.id, owner=job.owner, priority=priority.label)
    return jsonify(job_json(_service().describe(job)))


@bp.get("/machines")
def machines() -> Response:
    """Every machine with a running service, and whether it is drained."""
    return jsonify(machines=_machines_json())


@bp.post("/machines/<machine>/drain")
def drain_machine(machine: str) -> Response:
    """Drain a machine: its workers finish their jobs and claim no more (until
    undrained, across its restarts); the others go on. 404 for an unknown machine."""
    _service().ops.steering.drain(_machine(machine), by=_actor())
    _record("drain", machine=machine)
    return jsonify(_machine_json(machine))


@bp.post("/machines/<machine>/undrain")
def undrain_machine(machine: str) -> Response:
    """End a machine's drain: its workers claim again."""
    _service().ops.steering.undrain(_machine(machine))
    _record("undrain", machine=machine)
    return jsonify(_machine_json(machine))


@bp.get("/console")
def console() -> Response:
    """The console's snapshot (what /console shows; pushed live over /admin/stream)."""
    return jsonify(_service().ops.console.snapshot())


def _priority(body: dict[str, Any]) -> Priority:
    """The priority a body `{"priority": "high"}` asks for; 422 for anything else."""
    fields = {name[:64]: "unknown field" for name in sorted(set(body) - {"priority"})}
    value = body.get("priority")
    priority = None
    if not isinstance(value, str):
        fields["priority"] = 'required: "high", "normal" or "low"'
    else:
        try:
            priority = Priority.parse(value)
        except ValueError as error:
            fields["priority"] = str(error)
    if fields or priority is None:
        raise ApiError(422, "invalid_params", "the request has invalid fields", fields=fields)
    return priority


def _machine(name: str) -> str:
    """A machine name as services report them (FLY_MACHINE_ID or a host name)."""
    if not 0 < len(name) <= 128 or not name.isprintable():
        raise ApiError(404, "not_found", "no such machine")
    return name


def _machines_json() -> list[dict[str, Any]]:
    snapshot = _service().ops.console.snapshot()
    drains = _service().ops.steering.drains()
    names = sorted({p["machine"] for p in snapshot["processes"]} | set(drains))
    return [_machine_json(name, drains) for name in names]


def _machine_json(name: str, drains: dict[str, Paused] | None = None) -> dict[str, Any]:
    drained = (drains if drains is not None else _service().ops.steering.drains()).get(name)
    return {
        "machine": name,
        "draining": drained is not None,
        "draining_since": iso(drained.at) if drained else None,
        "draining_by": drained.by if drained else None,
    }


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
