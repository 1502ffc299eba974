"""WSGI entry point: `gunicorn wsgi:app` (see gunicorn.conf.py) and `flask --app wsgi`."""

from app import create_app
from app.config import Config
from app.logs import configure_logging

config = Config.from_env()
configure_logging(config.log_level)
app = create_app(config)
