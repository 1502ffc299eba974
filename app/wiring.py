"""Turn a Config into a ready-to-start GenerationService."""

from __future__ import annotations

import logging

from .config import Config
from .generation import GenerationService
from .generation.db import create_database_engine, create_schema
from .generation.generators import GeneratorRegistry, default_registry
from .generation.generators.replicate import ReplicateGenerator
from .generation.jobs import JobStore
from .generation.results import FilesystemResultStore

log = logging.getLogger(__name__)


def build_service(config: Config, generators: GeneratorRegistry | None = None) -> GenerationService:
    engine = create_database_engine(config.database_url)
    create_schema(engine)
    return GenerationService(
        JobStore(engine),
        FilesystemResultStore(config.results_dir),
        generators if generators is not None else build_registry(config),
        workers=config.generation_workers,
        workers_max=max(config.generation_workers, config.generation_workers_max),
        queue_size=config.generation_queue_size,
        max_attempts=config.job_max_attempts,
        cpu_isolation=config.generation_cpu_isolation,
        job_timeout=config.job_timeout_seconds,
        result_ttl=config.result_ttl,
        aging_seconds=config.priority_aging_seconds,
        scale_up_seconds=config.generation_scale_up_seconds,
        idle_worker_seconds=config.generation_worker_idle_seconds,
    )


def build_registry(config: Config) -> GeneratorRegistry:
    """Built-ins, `replicate` when it has a token, then installed plugins."""
    registry = default_registry()
    if config.replicate_api_token:
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
