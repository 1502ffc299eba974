"""One JSON error shape for every failure a client can see:
`{"error": {"code": ..., "message": ..., "fields": {...}?}}`."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import WebsocketMismatch
from wsproto.utilities import RemoteProtocolError

from ..generation import (
    IdempotencyKeyReusedError,
    InvalidParamsError,
    JobFinishedError,
    JobNotFoundError,
    JobStatusConflictError,
    MachineNotFoundError,
    PriorityNotAllowedError,
    QueueFullError,
    QueuePausedError,
    ServiceStoppedError,
    TooManyJobsError,
)

log = logging.getLogger(__name__)

UNAVAILABLE_RETRY_AFTER = 10


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}


def error_response(error: ApiError) -> Response:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.fields:
        body["fields"] = error.fields
    response = jsonify(error=body)
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def _from_core(error: Exception) -> ApiError:
    if isinstance(error, InvalidParamsError):
        return ApiError(
            422, "invalid_params", "the request has invalid fields", fields=error.fields
        )
    if isinstance(error, JobNotFoundError):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, JobFinishedError):
        return ApiError(409, "already_finished", str(error))
    if isinstance(error, JobStatusConflictError):
        return ApiError(409, error.code, str(error))
    if isinstance(error, MachineNotFoundError):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, QueueFullError):
        return ApiError(
            503, "queue_full", str(error), headers={"Retry-After": str(error.retry_after)}
        )
    if isinstance(error, ServiceStoppedError):
        return ApiError(
            503, "unavailable", str(error), headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}
        )
    if isinstance(error, QueuePausedError):
        return ApiError(503, "paused", str(error), headers={"Retry-After": str(error.retry_after)})
    if isinstance(error, TooManyJobsError):
        return ApiError(
            429, "too_many_jobs", str(error), headers={"Retry-After": str(error.retry_after)}
        )
    if isinstance(error, PriorityNotAllowedError):
        return ApiError(
            403, "priority_not_allowed", str(error), fields={"priority": f"at most {error.ceiling}"}
        )
    if isinstance(error, IdempotencyKeyReusedError):
        return ApiError(422, "idempotency_key_reused", str(error))
    raise TypeError(f"no HTTP mapping for {type(error).__name__}")


def _from_http(error: HTTPException) -> ApiError:
    code = (error.name or "error").lower().replace(" ", "_")
    message = error.description or error.name
    if error.code == 413:
        code = "payload_too_large"
    if error.code == 429:  # Flask-Limiter's RateLimitExceeded; it adds Retry-After itself
        code, message = "rate_limited", f"too many requests: at most {message} per API key"
    if isinstance(error, WebsocketMismatch):  # a plain request to a WebSocket route
        message = (
            "this route is a WebSocket: open it with a WebSocket handshake (docs/websockets.md)"
        )
    headers = {k: v for k, v in error.get_headers() if k.lower() in ("allow", "retry-after")}
    return ApiError(error.code or 500, code, message, headers=headers)


def _bad_handshake(error: RemoteProtocolError) -> Response:
    """A handshake the WebSocket library refused after handshake.py let it through."""
    return error_response(
        ApiError(400, "bad_request", f"not a WebSocket handshake this server takes: {error}")
    )


def _database_down(error: DBAPIError) -> Response:
    log.error("database error while serving a request: %s", error.orig)
    return error_response(
        ApiError(
            503,
            "database_unavailable",
            "the database is unavailable; try again shortly",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
        )
    )


def _unexpected(error: Exception) -> Response:
    log.exception("unhandled error", exc_info=error)
    return error_response(ApiError(500, "internal_error", "an unexpected error occurred"))


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, error_response)
    for core_error in (
        InvalidParamsError,
        JobNotFoundError,
        JobFinishedError,
        JobStatusConflictError,
        MachineNotFoundError,
        QueueFullError,
        QueuePausedError,
        ServiceStoppedError,
        TooManyJobsError,
        PriorityNotAllowedError,
        IdempotencyKeyReusedError,
    ):
        app.register_error_handler(core_error, lambda e: error_response(_from_core(e)))
    app.register_error_handler(RemoteProtocolError, _bad_handshake)
    app.register_error_handler(DBAPIError, _database_down)
    app.register_error_handler(HTTPException, lambda e: error_response(_from_http(e)))
    app.register_error_handler(Exception, _unexpected)
