"""The thin web layer: blueprints that translate HTTP to service calls."""

from __future__ import annotations

from flask import Flask

from . import api, docs, ops, ui
from .errors import register_error_handlers
from .inflight import InFlightCounter


def init_web(app: Flask) -> None:
    counter = InFlightCounter(app.wsgi_app)
    app.wsgi_app = counter  # type: ignore[method-assign]
    app.extensions["inflight"] = counter
    for blueprint in (api.bp, ops.bp, docs.bp, ui.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
