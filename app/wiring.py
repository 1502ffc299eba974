"""Turn a Config into a ready-to-start GenerationService."""

from __future__ import annotations

from .config import Config
from .generation import GenerationService
from .generation.db import create_database_engine, create_schema
from .generation.generators import GeneratorRegistry, default_registry
from .generation.jobs import JobStore
from .generation.results import FilesystemResultStore


def build_service(config: Config, generators: GeneratorRegistry | None = None) -> GenerationService:
    engine = create_database_engine(config.database_url)
    create_schema(engine)
    return GenerationService(
        JobStore(engine),
        FilesystemResultStore(config.results_dir),
        generators or default_registry(),
        workers=config.generation_workers,
        queue_size=config.generation_queue_size,
        max_attempts=config.job_max_attempts,
        result_ttl=config.result_ttl,
    )
