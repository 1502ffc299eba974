"""WSGI entry point: `gunicorn wsgi:app` (see gunicorn.conf.py) and `flask --app wsgi`."""

from app import create_app
from app.logs import configure_logging

configure_logging()
app = create_app()
