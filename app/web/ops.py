"""Operational endpoints: liveness, readiness, status and metrics.
No key needed, no job contents."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError

from ..generation import GenerationService
from ..wiring import get_service

bp = Blueprint("ops", __name__)
log = logging.getLogger(__name__)


def service() -> GenerationService:
    return get_service(current_app)


@bp.get("/health")
def health() -> Response:
    """Liveness: answers while the process can; touches nothing external."""
    return jsonify(status="ok")


@bp.get("/ready")
def ready() -> tuple[Response, int]:
    """Readiness: the database answers and the service accepts jobs."""
    checks = {"database": "ok", "service": "ok" if service().accepting else "not accepting jobs"}
    try:
        service().store.ping()
    except SQLAlchemyError as error:
        log.warning("readiness check: database unreachable: %s", error)
        checks["database"] = "unreachable"
    ok = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ok else "unavailable", checks=checks), 200 if ok else 503


@bp.get("/status")
def status() -> Response:
    """The seed's status document: web tier figures plus the generation service's."""
    config = current_app.config["SERVICE_CONFIG"]
    counter = current_app.extensions["inflight"]
    sockets = current_app.extensions["sockets"]
    stats = service().stats()
    return jsonify(
        status="healthy" if stats["running"] else "degraded",
        concurrent_requests=counter.current,
        max_concurrent_requests=config.web_concurrency * config.web_threads,
        web_workers=config.web_concurrency,
        web_threads=config.web_threads,
        websockets={"open": len(sockets), "capacity": sockets.capacity},
        generation_service=stats,
    )


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition of this process's metrics."""
    body = current_app.extensions["metrics"].exposition()
    return Response(body, content_type=CONTENT_TYPE_LATEST)
