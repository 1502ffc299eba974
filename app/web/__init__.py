"""The thin web layer: blueprints that translate HTTP to service calls."""

from __future__ import annotations

from flask import Flask

from ..generation.keys import KeyStore
from ..metrics import Metrics
from . import api, docs, ops, ui
from .auth import init_auth
from .errors import register_error_handlers
from .inflight import InFlightCounter
from .ratelimit import init_rate_limit
from .requestid import init_request_ids


def init_web(app: Flask, keys: KeyStore) -> None:
    counter = InFlightCounter(app.wsgi_app)
    app.wsgi_app = counter  # type: ignore[method-assign]
    app.extensions["inflight"] = counter
    metrics = Metrics()
    metrics.watch(app.extensions["generation"], lambda: counter.current)
    app.extensions["metrics"] = metrics
    init_request_ids(app)
    init_auth(app, keys)
    init_rate_limit(app, api.bp)
    for blueprint in (api.bp, ops.bp, docs.bp, ui.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
