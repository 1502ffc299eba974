"""gunicorn settings, from the same environment as the app (docs/operations.md).

The generation service's worker threads must live in the process that serves requests,
and threads do not survive fork, so the app is loaded in each worker (no preload) and
the service is started in `post_worker_init` and stopped in `worker_exit`.

Threads: every open WebSocket holds one of `threads` for as long as it is open, so the
pool is large (docs/performance.md has the measurements behind WEB_THREADS) and the app
caps sockets at WS_MAX_CONNECTIONS, leaving the rest of the pool to HTTP.

Stopping, inside out: SIGTERM closes every open WebSocket with 1001 at once and starts a
drain that gives running jobs DRAIN_TIMEOUT_SECONDS, then requeues what still runs
(app/drain.py); gunicorn's `graceful_timeout` leaves room for that; Fly's `kill_timeout`
(fly.toml) leaves room for gunicorn. tests/test_deploy_config.py checks that each fits
in the next.
"""

import gc
import math
import os
import signal
import threading

from app.config import Config
from app.drain import Drain, longest_drain
from app.idle import arm_idle_stop
from app.logs import logging_config
from app.parser_errors import install as install_json_parser_errors
from app.wiring import get_service

_config = Config.from_env()
# What gunicorn refuses before the app sees it (a request line too long, ...) is answered
# in the API's JSON error shape too.
install_json_parser_errors()

wsgi_app = "wsgi:app"
bind = f"0.0.0.0:{_config.port}"
worker_class = "gthread"
workers = _config.web_concurrency
threads = _config.web_threads
# Connections beyond `threads` wait in keep-alive (no thread) or in the pool's queue.
worker_connections = 2 * _config.web_threads
preload_app = False
# gunicorn's control socket lives at one fixed path per user; several servers on one
# machine (tests, benchmarks) would fight over it, and nothing here uses it.
control_socket_disable = True
# Generation runs in the service's own threads, so no request should take long.
timeout = 30
keepalive = 5
# The longest drain (deadline plus the interrupted jobs' grace), and a margin to exit.
graceful_timeout = math.ceil(longest_drain(_config.drain_timeout_seconds)) + 5
# JSON lines on stdout, the access log included (with Fly's client IP header).
accesslog = "-"
errorlog = "-"
loglevel = _config.log_level.lower()
logconfig_dict = logging_config(_config.log_level)
logger_class = "app.access_log.JsonAccessLogger"


def post_worker_init(worker):
    service = get_service(worker.wsgi)
    service.start()
    _drain_on_sigterm(worker, service)
    _close_sockets_on_sigterm(worker)
    # IDLE_STOP_SECONDS: an idle process stops the whole server, as a deploy would, so the
    # machine stops (Fly restarts it on the next request).
    arm_idle_stop(worker.wsgi, stop=lambda reason: os.kill(os.getppid(), signal.SIGTERM))
    _freeze_start_up_objects()


def _freeze_start_up_objects():
    """Leave what start-up built (modules, the app, SQLAlchemy's metadata: ~110,000
    objects) out of the cycle collector's full passes: each pass walked all of them, tens
    of milliseconds with the GIL held, a stall for whatever request or job was running
    (docs/performance.md, dispatch latency). They live as long as the process anyway."""
    gc.collect()
    gc.freeze()


def _drain_on_sigterm(worker, service):
    """Begin the drain on SIGTERM, then let gunicorn's own handler stop the worker."""
    drain = Drain(service, _config.drain_timeout_seconds)
    drain.arm()
    worker.wsgi.extensions["drain"] = drain
    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        drain.begin()
        gunicorn_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn sets it: requests are not disturbed


def _close_sockets_on_sigterm(worker):
    """On SIGTERM, every open WebSocket gets `server_restarting` and close code 1001 at
    once, instead of holding the stop for `graceful_timeout`; then the handler installed
    before this one (the drain's, then gunicorn's) runs as usual."""
    sockets = worker.wsgi.extensions["sockets"]
    previous_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        # A signal handler must not take locks the code it interrupted may hold: hand over.
        threading.Thread(target=sockets.close_all, name="ws-close-all", daemon=True).start()
        previous_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    if app is not None and "drain" in app.extensions:
        app.extensions["drain"].finish()
    elif app is not None:
        get_service(app).shutdown(wait=True, timeout=0)
