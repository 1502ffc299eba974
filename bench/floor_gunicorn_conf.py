"""gunicorn settings of the floor: the deployment's `gunicorn.conf.py`, minus its hooks.

The hooks start and stop the generation service, which the floor app does not have;
everything else (worker class, threads, keep-alive, timeouts, access log) is copied, so
the floor differs from ours only in the application it serves.
"""

import runpy
from pathlib import Path

_deployment = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
_SERVICE_HOOKS = {"post_worker_init", "worker_exit"}

globals().update(
    {
        name: value
        for name, value in _deployment.items()
        if not name.startswith("_") and name not in _SERVICE_HOOKS and not callable(value)
    }
)
wsgi_app = "bench.floor_app:app"
