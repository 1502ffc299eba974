"""Turning untrusted request input into typed values, or an ApiError that says why not."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flask import Request

from ..generation import JobStatus, Priority
from .errors import ApiError

SUBMIT_FIELDS = {"generator", "params", "priority"}
MAX_LIMIT = 100
DEFAULT_LIMIT = 20


def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object (any content type; curl users forget the header)."""
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise ApiError(
            400, "malformed_json", f"the body is not valid JSON: {_short(error)}"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    return body


def submission(body: dict[str, Any]) -> tuple[str, dict[str, Any], Priority]:
    """(generator, params, priority) of a submit request."""
    fields: dict[str, str] = {}
    for unknown in sorted(set(body) - SUBMIT_FIELDS):
        fields[unknown[:64]] = "unknown field"
    generator = body.get("generator")
    if not isinstance(generator, str) or not generator:
        fields["generator"] = 'required: the name of a generator, e.g. "images"'
    params = body.get("params", {})
    if not isinstance(params, dict):
        fields["params"] = "must be an object"
    priority = Priority.NORMAL
    try:
        priority = Priority.parse(_text(body.get("priority", "normal")))
    except ValueError as error:
        fields["priority"] = str(error)
    if fields:
        raise ApiError(422, "invalid_params", "the request has invalid fields", fields=fields)
    return generator, params, priority


def list_query(args: Any) -> tuple[list[JobStatus], int, int | None]:
    """(statuses, limit, before_pk) from `?status=a,b&limit=n&cursor=c`."""
    fields: dict[str, str] = {}
    statuses: list[JobStatus] = []
    for name in filter(None, args.get("status", "").split(",")):
        try:
            statuses.append(JobStatus(name.strip()))
        except ValueError:
            fields["status"] = "comma-separated statuses: " + ", ".join(s.value for s in JobStatus)
    limit = DEFAULT_LIMIT
    raw_limit = args.get("limit", "")
    if raw_limit:
        if raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_LIMIT:
            limit = int(raw_limit)
        else:
            fields["limit"] = f"an integer from 1 to {MAX_LIMIT}"
    before = None
    if args.get("cursor"):
        before = decode_cursor(args["cursor"])
        if before is None:
            fields["cursor"] = "not a cursor this API returned"
    if fields:
        raise ApiError(400, "invalid_query", "the query string has invalid values", fields=fields)
    return statuses, limit, before


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(f"pk:{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    prefix, _, number = text.partition(":")
    if prefix != "pk" or not number.isdigit() or len(number) > 18:
        return None
    return int(number)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("priority must be one of: high, normal, low")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


def _short(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return str(error)[:200]
