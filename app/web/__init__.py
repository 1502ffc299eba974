"""The thin web layer: blueprints that translate HTTP and WebSocket to service calls."""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface

from ..generation.intake.keys import KeyStore
from ..metrics import Metrics
from ..wiring import get_service
from . import admin, api, console_stream, docs, ops, ui, webhooks, ws
from .auth import init_auth
from .errors import register_error_handlers
from .inflight import InFlightCounter
from .links import init_links
from .ratelimit import init_rate_limit
from .requestid import RequestIds
from .sockets import InputSignal, ReaderThread, SocketRegistry

# Client messages are small commands; anything bigger is a mistake or an attack.
MAX_CLIENT_MESSAGE_BYTES = 4096


class NoSessions(SessionInterface):
    """Nothing here uses Flask's cookie session; with a SECRET_KEY set, the default
    interface would still build a signing serializer and parse cookies on every request.
    `flask.session` is the read-only null session."""

    def open_session(self, app: Flask, request: Request) -> None:
        return None

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        """Nothing to save: the null session holds nothing and sets no cookie."""


def init_web(app: Flask, keys: KeyStore) -> None:
    config = app.config["SERVICE_CONFIG"]
    app.session_interface = NoSessions()
    # A path with an empty segment (`/api/v1/jobs//result`, or `%2F` as an id) is an unknown
    # route, answered with our JSON 404, not a 308 redirect to a path the client never sent.
    app.url_map.merge_slashes = False
    counter = InFlightCounter(RequestIds(app.wsgi_app))
    app.wsgi_app = counter  # type: ignore[method-assign]
    app.extensions["inflight"] = counter
    sockets = SocketRegistry(config.websocket_capacity)
    app.extensions["sockets"] = sockets
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": config.ws_ping_interval,
        "max_message_size": MAX_CLIENT_MESSAGE_BYTES,
        "event_class": InputSignal,
        "thread_class": ReaderThread,
    }
    metrics = Metrics()
    metrics.watch(get_service(app), lambda: counter.current)
    metrics.websockets_open.set_function(lambda: len(sockets))
    app.extensions["metrics"] = metrics
    init_auth(app, keys)
    init_links(app, config.result_url_ttl_seconds, config.result_ttl)
    init_rate_limit(app, api.bp, webhooks.bp, admin.bp)
    webhooks.init_webhooks(app, metrics)
    app.extensions["console_charts"] = console_stream.ChartCache()
    blueprints = (api.bp, webhooks.bp, admin.bp, console_stream.bp, ws.bp, ops.bp, docs.bp, ui.bp)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    register_error_handlers(app)
