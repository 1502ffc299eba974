"""The production entry point plus the test generators, for tests that run a real
gunicorn: `gunicorn -c gunicorn.conf.py tests.wsgi_with_test_generators:app`."""

from app import create_app
from app.config import Config
from app.generation.generators import default_registry
from app.logs import configure_logging
from app.wiring import build_service

from .generators import (
    BlobGenerator,
    FailingGenerator,
    FileGateGenerator,
    RecordingGenerator,
    SleepGenerator,
)

config = Config.from_env()
configure_logging(config.log_level)
registry = default_registry()
registry.register(SleepGenerator())
registry.register(FailingGenerator())
registry.register(FileGateGenerator())
registry.register(BlobGenerator())
registry.register(RecordingGenerator())
app = create_app(config, build_service(config, registry))
