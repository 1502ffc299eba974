"""The application factory: configuration, then the service, then the web layer."""

from __future__ import annotations

import secrets

from flask import Flask

from .cli import db, keys_cli, queue_cli, webhooks_cli
from .config import Config
from .generation import GenerationService
from .generation.intake.keys import KeyStore
from .logs import JobLogContext
from .web import init_web
from .wiring import SERVICE_KEY, build_service, get_service

__all__ = ["SERVICE_KEY", "create_app", "get_service"]


def create_app(config: Config | None = None, service: GenerationService | None = None) -> Flask:
    """Build the app. The service is created but not started: the server starts it
    (gunicorn.conf.py does, after fork) so that CLI commands never run workers."""
    config = config or Config.from_env()
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=config.max_content_length,
        SERVICE_CONFIG=config,
        # Open mode has no keys to protect; its tokens only need to verify in this process.
        SECRET_KEY=config.secret_key or secrets.token_urlsafe(32),
    )
    service = service or build_service(config)
    service.observers.add(JobLogContext())
    app.extensions[SERVICE_KEY] = service
    init_web(app, KeyStore(service.store.engine))
    if config.sentry_dsn:  # the SDK (about 10 MB) loads only when it has somewhere to report
        from .sentry import init_sentry

        init_sentry(config, service)
    app.cli.add_command(db)
    app.cli.add_command(keys_cli)
    app.cli.add_command(webhooks_cli)
    app.cli.add_command(queue_cli)
    return app
