"""Turn a Config into a ready-to-start GenerationService, with the backends its database
calls for: on SQLite an in-memory queue index; on PostgreSQL the shared queue with its
LISTEN connection and event relay. Results go to RESULTS_STORE (the database by default
on PostgreSQL, so that every machine can serve every result).

What only some configurations use is imported only by them: psycopg (PostgreSQL's
listener) and requests (the `replicate` generator) cost about 10 and 5 MB of memory in
every web process, and an idle service on SQLite has a target (docs/performance.md)."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from .config import Config
from .generation import GenerationService
from .generation.db import create_database_engine
from .generation.generators import GeneratorRegistry, default_registry
from .generation.jobs import JobStore
from .generation.listener import Listener
from .generation.results import FilesystemResultStore, ResultStore
from .generation.results_db import DatabaseResultStore

log = logging.getLogger(__name__)


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
        listener=None if config.is_sqlite else postgres_listener(engine),
        name=name,
        workers=config.generation_workers,
        workers_max=max(config.generation_workers, config.generation_workers_max),
        queue_size=config.generation_queue_size,
        max_attempts=config.job_max_attempts,
        cpu_isolation=config.generation_cpu_isolation,
        process_idle_seconds=config.generation_process_idle_seconds,
        job_timeout=config.job_timeout_seconds,
        result_ttl=config.result_ttl,
        aging_seconds=config.priority_aging_seconds,
        scale_up_seconds=config.generation_scale_up_seconds,
        idle_worker_seconds=config.generation_worker_idle_seconds,
    )


def postgres_listener(engine: Engine) -> Listener:
    from .generation.listener_postgres import PgListener  # psycopg: see the docstring

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
