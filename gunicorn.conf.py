"""gunicorn settings, from the same environment as the app (docs/operations.md).

The generation service's worker threads must live in the process that serves requests,
and threads do not survive fork, so the app is loaded in each worker (no preload) and
the service is started in `post_worker_init` and stopped in `worker_exit`.
"""

from app.config import Config

_config = Config.from_env()

wsgi_app = "wsgi:app"
bind = f"0.0.0.0:{_config.port}"
worker_class = "gthread"
workers = _config.web_concurrency
threads = _config.web_threads
preload_app = False
# gunicorn's control socket lives at one fixed path per user; several servers on one
# machine (tests, benchmarks) would fight over it, and nothing here uses it.
control_socket_disable = True
# Generation runs in the service's own threads, so no request should take long.
timeout = 30
graceful_timeout = 25
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = _config.log_level.lower()


def post_worker_init(worker):
    worker.wsgi.extensions["generation"].start()


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    if app is not None:
        app.extensions["generation"].shutdown(wait=True, timeout=graceful_timeout - 5)
