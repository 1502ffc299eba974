"""Turning untrusted request input into typed values, or an ApiError that says why not."""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

from flask import Request
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge

from ..generation import JobNotFoundError, JobStatus, Priority
from .errors import ApiError

SUBMIT_FIELDS = {"generator", "params", "priority", "webhook", "webhook_events"}
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
MAX_DEPTH = 32
IDEMPOTENCY_HEADER = "Idempotency-Key"
# 1-255 printable ASCII characters, not starting or ending with a space (which HTTP
# servers strip from header values anyway: the rule holds whatever server runs this).
_IDEMPOTENCY_KEY = re.compile(r"(?=.{1,255}$)[!-~]([ -~]*[!-~])?", re.ASCII)
_LIMIT = re.compile(r"[0-9]{1,3}")
JOB_ID = re.compile(r"[0-9a-f]{32}")
# A page cursor: 8 bytes in base64url, unpadded (the last character carries 4 bits).
CURSOR = re.compile(r"[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]")
MAX_ROW_ID = 2**63 - 1  # a BIGINT's largest value
# A \\u escape of a UTF-16 surrogate (D800-DFFF); an escaped backslash before a `u` also
# matches, which only costs the full check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def check_job_id(view_args: dict[str, Any] | None) -> None:
    """A `job_id` path parameter is the 32 hex digits the service generates; anything else
    (NUL bytes, huge strings) is a 404 here, before it can reach the database."""
    job_id = (view_args or {}).get("job_id")
    if job_id is not None and not JOB_ID.fullmatch(job_id):
        raise JobNotFoundError(job_id[:64])


def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object (any content type; curl users forget the header).

    Only what every backend can store and every client can read gets through: UTF-8
    (RFC 8259), finite numbers, no lone surrogates, at most MAX_DEPTH levels of nesting.
    """
    raw = _body(request)
    try:
        text = raw.decode("utf-8")
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        body = _DECODER.decode(text)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "the body must be UTF-8 encoded JSON") from None
    except (ValueError, RecursionError) as error:
        raise ApiError(
            400, "malformed_json", f"the body is not valid JSON: {_short(error)}"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    if _may_be_unsafe(text):
        _check_values(body)
    return body


def submission(body: dict[str, Any]) -> tuple[str, dict[str, Any], Priority | None]:
    """(generator, params, priority) of a submit request; priority None if not asked."""
    fields: dict[str, str] = {}
    for unknown in sorted(set(body) - SUBMIT_FIELDS):
        fields[unknown[:64]] = "unknown field"
    generator = body.get("generator")
    if not isinstance(generator, str) or not generator:
        fields["generator"] = 'required: the name of a generator, e.g. "images"'
    params = body.get("params", {})
    if not isinstance(params, dict):
        fields["params"] = "must be an object"
    priority = None
    try:
        if body.get("priority") is not None:
            priority = Priority.parse(_text(body["priority"]))
    except ValueError as error:
        fields["priority"] = str(error)
    if fields:
        raise ApiError(422, "invalid_params", "the request has invalid fields", fields=fields)
    return generator, params, priority


def dry_run(request: Request) -> bool:
    """Whether `?dry_run=` asks for a quote instead of a job."""
    if not request.query_string:  # the usual submit: no query string to parse
        return False
    value = request.args.get("dry_run", "false")  # given, even empty: one of the four
    if value not in ("true", "1", "false", "0"):
        raise ApiError(
            400,
            "invalid_query",
            "the query string has invalid values",
            fields={"dry_run": "true or false"},
        )
    return value in ("true", "1")


def list_query(args: Any) -> tuple[list[JobStatus], int, int | None]:
    """(statuses, limit, before_pk) from `?status=a,b&limit=n&cursor=c`."""
    fields: dict[str, str] = {}
    statuses: list[JobStatus] = []
    # A parameter given is checked even when empty (`?status=`): leave it out for "any".
    for name in args["status"].split(",") if "status" in args else ():
        try:
            statuses.append(JobStatus(name.strip()))
        except ValueError:
            fields["status"] = "comma-separated statuses: " + ", ".join(s.value for s in JobStatus)
    limit = page_limit(args, fields)
    before = page_cursor(args, fields)
    if fields:
        raise ApiError(400, "invalid_query", "the query string has invalid values", fields=fields)
    return statuses, limit, before


def page_limit(args: Any, fields: dict[str, str]) -> int:
    """`?limit=` (1..MAX_LIMIT, DEFAULT_LIMIT if absent); an error in `fields` if not
    (an empty `?limit=` too)."""
    if "limit" not in args:
        return DEFAULT_LIMIT
    raw_limit = args["limit"]
    if _LIMIT.fullmatch(raw_limit) and 1 <= int(raw_limit) <= MAX_LIMIT:
        return int(raw_limit)
    fields["limit"] = f"an integer from 1 to {MAX_LIMIT}"
    return DEFAULT_LIMIT


def page_cursor(args: Any, fields: dict[str, str]) -> int | None:
    """The row `?cursor=` points after (None if absent); an error in `fields` if it is
    not a cursor (an empty `?cursor=` too)."""
    if "cursor" not in args:
        return None
    before = decode_cursor(args["cursor"])
    if before is None:
        fields["cursor"] = "not a cursor this API returned"
    return before


def idempotency_key(headers: Headers) -> str | None:
    """The `Idempotency-Key` header: 1-255 printable ASCII characters, or absent."""
    value = headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise ApiError(
            400,
            "invalid_header",
            f"{IDEMPOTENCY_HEADER} must be 1 to 255 printable ASCII characters",
            fields={IDEMPOTENCY_HEADER: "1 to 255 printable ASCII characters"},
        )
    return value


def encode_cursor(pk: int) -> str:
    """The page cursor after row `pk`: its 8 bytes, base64url without padding."""
    return base64.urlsafe_b64encode(pk.to_bytes(8, "big")).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    """The row `cursor` points after, or None if it is not a cursor's shape.

    Every string of the documented shape (CURSOR) is a position, so the document can
    say exactly which cursors are valid: one the API did not issue only pages the
    caller's own jobs from somewhere. Beyond the largest row id it means "from the top".
    """
    if not CURSOR.fullmatch(cursor):
        return None
    pk = int.from_bytes(base64.urlsafe_b64decode(cursor + "="), "big")
    return min(pk, MAX_ROW_ID)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("priority must be one of: high, normal, low")
    return value


def _body(request: Request) -> bytes:
    limit = request.max_content_length
    raw = request.get_data(cache=False)
    if limit is not None and request.content_length is None and len(raw) >= limit:
        # A streamed (chunked) body is cut at the limit without an error; say so.
        raise RequestEntityTooLarge()
    return raw


def _may_be_unsafe(text: str) -> bool:
    """Whether `_check_values` could find anything in the document `text`: fewer than
    MAX_DEPTH brackets cannot nest MAX_DEPTH deep, and valid UTF-8 has no surrogates,
    so one can only come from a `\\uD800`-`\\uDFFF` escape. Most bodies are neither."""
    return (
        text.count("{") + text.count("[") >= MAX_DEPTH or _SURROGATE_ESCAPE.search(text) is not None
    )


def _check_values(body: dict[str, Any]) -> None:
    """Reject nesting deeper than MAX_DEPTH and strings that are not valid Unicode."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ApiError(
                400, "malformed_json", f"the body is nested more than {MAX_DEPTH} levels deep"
            )
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in (*value, *value.values()))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and not _is_unicode(value):
            raise ApiError(
                400, "malformed_json", "the body has a lone surrogate escape (\\ud800-\\udfff)"
            )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


# Built once: json.loads with hooks builds a decoder (and its scanner) on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _short(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return str(error)[:200]
