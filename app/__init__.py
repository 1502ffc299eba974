"""The generation service's Flask app: `create_app()` (in factory.py).

Importing this package is cheap on purpose: the gunicorn master imports `app.config`,
`app.drain` and `app.logs` for its settings, and each generation child process imports
the generator it runs; neither needs Flask, SQLAlchemy or Sentry, so the factory (which
imports them all) loads on first use of `create_app` or `get_service`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .factory import SERVICE_KEY, create_app, get_service

__all__ = ["SERVICE_KEY", "create_app", "get_service"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module(".factory", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
