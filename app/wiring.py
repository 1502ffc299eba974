"""Turn a Config into a ready-to-start GenerationService, with the backends its database
calls for: on SQLite an in-memory queue index; on PostgreSQL the shared queue with its
LISTEN connection and event relay. Results go to RESULTS_STORE (the database by default
on PostgreSQL, so that every machine can serve every result).

What only some configurations use is imported only by them: psycopg (PostgreSQL's
listener) and requests (the `replicate` generator) cost about 10 and 5 MB of memory in
every web process, and an idle service on SQLite has a target (docs/performance.md)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from .config import Config
from .generation import GenerationService
from .generation.generators import GeneratorRegistry, default_registry
from .generation.notify.signing import derived_secret
from .generation.results.database import DatabaseResultStore
from .generation.results.storage import FilesystemResultStore, ResultStore
from .generation.settings import DEFAULT_RETRY_DELAYS, ServiceSettings, WebhookSettings
from .generation.store.engine import create_database_engine
from .generation.store.jobs import JobStore
from .generation.store.listener import Listener

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

# Where an app keeps its service: `app.extensions[SERVICE_KEY]`, read through get_service.
SERVICE_KEY = "generation"


def get_service(app: Flask) -> GenerationService:
    """The generation service of `app` (a Flask app, or `current_app`)."""
    return app.extensions[SERVICE_KEY]


def build_service(
    config: Config, generators: GeneratorRegistry | None = None, *, name: str | None = None
) -> GenerationService:
    """Build (not start: no connection is opened) the service `config` describes."""
    engine = create_database_engine(config.database_url)
    results: ResultStore = (
        DatabaseResultStore(engine)
        if config.results_store == "database"
        else FilesystemResultStore(config.results_dir)
    )
    return GenerationService(
        JobStore(engine, lease_seconds=config.job_lease_seconds),
        results,
        generators if generators is not None else build_registry(config),
        service_settings(config),
        listener=None if config.is_sqlite else postgres_listener(engine),
        name=name,
        machine=config.machine,
    )


# Each field of ServiceSettings and the Config attribute it comes from.
SETTINGS_FROM_CONFIG = {
    "workers": "generation_workers",
    "workers_max": "generation_workers_max",
    "scale_up_seconds": "generation_scale_up_seconds",
    "idle_worker_seconds": "generation_worker_idle_seconds",
    "cpu_isolation": "generation_cpu_isolation",
    "process_idle_seconds": "generation_process_idle_seconds",
    "queue_size": "generation_queue_size",
    "idle_stop_seconds": "idle_stop_seconds",
    "aging_seconds": "priority_aging_seconds",
    "max_attempts": "job_max_attempts",
    "job_timeout": "job_timeout_seconds",
    "max_queued_per_key": "max_queued_per_key",
    "result_ttl": "result_ttl",
}


def service_settings(config: Config) -> ServiceSettings:
    """The generation service's share of the configuration."""
    return ServiceSettings(
        **{name: getattr(config, key) for name, key in SETTINGS_FROM_CONFIG.items()},
        webhooks=webhook_settings(config),
    )


def webhook_settings(config: Config) -> WebhookSettings:
    return WebhookSettings(
        allow_http=config.webhook_allow_http,
        allow_private=config.webhook_allow_private,
        concurrency=config.webhook_concurrency,
        per_host=config.webhook_per_host,
        retry_delays=config.webhook_retry_delays or DEFAULT_RETRY_DELAYS,
        read_timeout=float(config.webhook_timeout_seconds),
        open_secrets=open_mode_secrets(config),
    )


def open_mode_secrets(config: Config) -> tuple[str, ...]:
    """Open mode's webhook signing secrets: WEBHOOK_SECRET (and WEBHOOK_PREVIOUS_SECRET
    during a rotation), else one derived from SECRET_KEY, so that every process and
    machine signs alike. Without either, none: deliveries wait, failing with a message
    that says so (docs/webhooks.md)."""
    if config.webhook_secret:
        return tuple(filter(None, (config.webhook_secret, config.webhook_previous_secret)))
    return (derived_secret(config.secret_key),) if config.secret_key else ()


def postgres_listener(engine: Engine) -> Listener:
    from .generation.store.listener_postgres import PgListener  # psycopg: see the docstring

    return PgListener(engine)


def build_registry(config: Config) -> GeneratorRegistry:
    """Built-ins, `replicate` when it has a token, then installed plugins."""
    registry = default_registry()
    if config.replicate_api_token:
        from .generation.generators.replicate import ReplicateGenerator  # requests

        registry.register(
            ReplicateGenerator(
                config.replicate_api_token,
                config.replicate_api_base,
                timeout_seconds=config.replicate_timeout_seconds,
            )
        )
    else:
        log.info("generator 'replicate' is off: REPLICATE_API_TOKEN is not set")
    registry.discover()
    return registry
