"""Webhooks over HTTP: an owner's deliveries (`GET /api/v1/webhooks/deliveries`), the
redrive of a failed one, and the body each delivery carries: the job document exactly as
`GET /api/v1/jobs/<id>` answers it, with absolute links when PUBLIC_URL is known."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from ..generation import GenerationService
from ..generation.notify.payload import envelope
from ..generation.notify.sender import Answer
from ..generation.results.files import LandedFile, content_type_of
from ..generation.store.deliveries import STATUSES, Delivery
from ..metrics import Metrics
from ..wiring import get_service
from .auth import current_principal
from .errors import ApiError
from .parsing import encode_cursor, page_cursor, page_limit
from .serialize import delivery_json, file_json, job_json

bp = Blueprint("webhooks", __name__, url_prefix="/api/v1/webhooks")


@bp.before_request
def authenticate() -> None:
    """Every call is an owner's (401 without a key in keys mode), as in api.py."""
    current_principal()


@bp.get("/deliveries")
def list_deliveries() -> Response:
    """The caller's deliveries, newest first; `?status=failed` lists the dead-letter."""
    # A parameter given is checked even when empty (`?status=`): leave it out for "any".
    status = request.args.get("status")
    fields: dict[str, str] = {}
    if status is not None and status not in STATUSES:
        fields["status"] = "one of: " + ", ".join(STATUSES)
    limit = page_limit(request.args, fields)
    before = page_cursor(request.args, fields)
    if fields:
        raise ApiError(400, "invalid_query", "the query string has invalid values", fields=fields)
    owner = current_principal().owner
    page = _service().deliveries.page(owner=owner, status=status, before_pk=before, limit=limit + 1)
    next_cursor = encode_cursor(page[limit - 1].pk) if len(page) > limit else None
    return jsonify(deliveries=[delivery_json(d) for d in page[:limit]], next_cursor=next_cursor)


@bp.post("/deliveries/<delivery_id>/retry")
def retry_delivery(delivery_id: str) -> tuple[Response, int]:
    """Send a failed delivery again (same id), with a fresh schedule of attempts."""
    owner = current_principal().owner
    delivery = _service().webhooks.redrive(delivery_id[:64], owner=owner)
    if delivery is None:
        known = _service().deliveries.get(delivery_id[:64], owner)
        if known is None:
            raise ApiError(404, "not_found", f"no webhook delivery {delivery_id[:64]!r}")
        raise ApiError(
            409,
            "not_failed",
            f"delivery {known.id} is {known.status}: only a failed delivery can be retried",
        )
    return jsonify(delivery_json(delivery)), 202


def init_webhooks(app: Flask, metrics: Metrics) -> None:
    """Render deliveries as the API's job documents and count attempts in /metrics."""
    service = get_service(app)
    public_url = app.config["SERVICE_CONFIG"].public_url
    service.webhooks.payload = lambda delivery: _payload(app, service, public_url, delivery)

    def count(delivery: Delivery, answer: Answer, outcome: str) -> None:
        metrics.webhook_attempts.labels(delivery.event, outcome).inc()

    service.webhooks.listeners.append(count)


def _payload(
    app: Flask, service: GenerationService, public_url: str, delivery: Delivery
) -> dict[str, Any]:
    """The delivery's body, built in a request context of PUBLIC_URL (links need one)."""
    split = urlsplit(public_url)
    origin = f"{split.scheme}://{split.netloc}" if public_url else ""
    links = split.path.rstrip("/") + "/api/"  # what a link starts with under PUBLIC_URL
    with app.test_request_context("/", base_url=public_url or None):
        job = service.get(delivery.job_id)
        body = envelope(delivery, _absolute(job_json(job), origin, links), datetime.now(UTC))
        if delivery.detail is not None and "name" in delivery.detail:
            file = file_json(job, _landed(delivery.detail))
            body["file"] = _absolute(file, origin, links)
    return body


def _landed(detail: dict[str, Any]) -> LandedFile:
    """The file an `output` delivery reports: as stored while its job ran, or its ZIP
    entry (written by the trigger at success: no content type of its own)."""
    name = str(detail["name"])
    content_type = detail.get("content_type") or content_type_of(name)
    return LandedFile(name, int(detail["bytes"]), str(content_type), str(detail["sha256"]), 0)


def _absolute(value: Any, origin: str, links: str) -> Any:
    """`value` with every link (a path starting with `links`) made absolute under
    `origin` (none: left as paths)."""
    if not origin:
        return value
    if isinstance(value, dict):
        return {key: _absolute(item, origin, links) for key, item in value.items()}
    if isinstance(value, str) and value.startswith(links):
        return origin + value
    return value


def _service() -> GenerationService:
    return get_service(current_app)
