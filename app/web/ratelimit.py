"""Per-key request rate limits (Flask-Limiter), applied to the API in AUTH_MODE=keys.

The window is counted per owner (a key's name, so a rotated key does not double the
allowance) in this process's memory. With several processes or machines each keeps its
own window, so the effective limit is RATE_LIMIT times the number of processes
(docs/security.md). Open mode has no keys and no limit: it is for local use. Requests
through signed links (a page's thumbnails) are not counted.
"""

from __future__ import annotations

from flask import Blueprint, Flask, request
from flask_limiter import Limiter

from .auth import current_principal
from .links import is_signed

LIMITER_EXTENSION = "rate_limiter"


def init_rate_limit(app: Flask, *apis: Blueprint) -> None:
    """Ration the calls to the `apis` blueprints per owner (AUTH_MODE=keys only)."""
    config = app.config["SERVICE_CONFIG"]
    if not config.requires_keys:
        # Not installed at all: its before-request hook costs ~0.2 ms on every request
        # even with no limit to enforce (docs/performance.md).
        return
    limiter = Limiter(
        key_func=lambda: current_principal().owner,
        storage_uri="memory://",
        strategy="moving-window",
        headers_enabled=True,
        key_prefix="api",
    )
    limiter.init_app(app)
    # A page shows a job's images through signed links (links.py), a dozen at once:
    # reads of stored bytes that browsers cache, not API calls to ration.
    for api in apis:
        limiter.limit(config.rate_limit, exempt_when=lambda: is_signed(request))(api)
    app.extensions[LIMITER_EXTENSION] = limiter
