"""The WSGI app that real-server tests run under gunicorn: the production app, configured
from the environment, with the test generators added to the built-in ones."""

from app import create_app
from app.config import Config
from app.generation.generators import GeneratorRegistry
from app.generation.generators.images import ImagesGenerator
from app.wiring import build_service

from .generators import BlobGenerator, FileGateGenerator, RecordingGenerator

config = Config.from_env(dotenv=False)
registry = GeneratorRegistry(
    [ImagesGenerator(), FileGateGenerator(), BlobGenerator(), RecordingGenerator()]
)
app = create_app(config, service=build_service(config, registry))
