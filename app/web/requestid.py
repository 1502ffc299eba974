"""A request id for every request: taken from Fly's proxy (or a caller) when given,
made up otherwise, put in the logging context and echoed in `X-Request-Id`."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from ..logs import request_id

HEADER = "X-Request-Id"
INCOMING = ("Fly-Request-Id", HEADER)
_SAFE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def init_request_ids(app: Flask) -> None:
    app.before_request(_bind)
    app.after_request(_echo)
    app.teardown_request(_unbind)


def _bind() -> None:
    given = next((request.headers[name] for name in INCOMING if name in request.headers), "")
    value = given if _SAFE.fullmatch(given) else uuid.uuid4().hex
    g.request_id_token = request_id.set(value)
    g.request_id = value


def _echo(response: Response) -> Response:
    if "request_id" in g:
        response.headers[HEADER] = g.request_id
    return response


def _unbind(_error: BaseException | None) -> None:
    # Pool threads serve many requests: leave no id behind for the next one.
    token = g.pop("request_id_token", None)
    if token is not None:
        request_id.reset(token)
