"""Real servers for tests: gunicorn subprocesses with the deployment's configuration, and
an in-process threaded server for tests that need a real socket but not gunicorn."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import requests
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


_RESPONSE = "tests.response"


class _ClosingRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, closing the response when the client drops the connection.

    Werkzeug's development server closes the response in a `finally` that first drains the
    request socket; on a reset connection that read raises, `close()` is skipped, and the file
    behind a served result is left to the garbage collector (a ResourceWarning, an error in
    this suite, wherever it surfaces). gunicorn closes it; so does the server the tests use.
    """

    def connection_dropped(self, error: BaseException, environ: dict | None = None) -> None:
        response = (environ or {}).get(_RESPONSE)
        if response is not None and hasattr(response, "close"):
            response.close()


def _remembering_response(app: WSGIApplication) -> WSGIApplication:
    def remembering(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        response = app(environ, start_response)
        environ[_RESPONSE] = response
        return response

    return remembering


def wsgi_server(app: WSGIApplication) -> BaseWSGIServer:
    """A threaded HTTP server for `app` on a free loopback port (not yet serving)."""
    return make_server(
        "127.0.0.1",
        0,
        _remembering_response(app),
        threaded=True,
        request_handler=_ClosingRequestHandler,
    )


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def gunicorn(
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 20,
    app: str | None = None,
) -> Iterator[Server]:
    """Run `gunicorn --config gunicorn.conf.py` on a free port with a private database;
    `app` replaces the configuration's `wsgi:app` (e.g. to add test generators)."""
    port = free_port()
    environment = (
        os.environ
        | {
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
            "RESULTS_DIR": str(tmp_path / "results"),
        }
        | dict(env or {})
    )
    command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"]
    command += ["--bind", f"127.0.0.1:{port}"] + ([app] if app else [])
    log_path = tmp_path / f"gunicorn-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group, so kill_hard() takes master and workers
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_until_ready(server, startup_timeout)
        yield server
    finally:
        stop(server)


def stop(server: Server, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if server.process.poll() is None:
        server.process.send_signal(sig)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def kill_hard(server: Server) -> None:
    """SIGKILL the master and every worker at once, as a crashed machine would."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()


def _wait_until_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{server.log()}")
        try:
            if requests.get(f"{server.url}/ready", timeout=1).status_code == 200:
                return
        except requests.RequestException:  # refused, or too slow while the machine is busy
            pass
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn not ready after {timeout}s:\n{server.log()}")


def flask_cli(env: Mapping[str, str], *args: str) -> str:
    """Run `flask --app wsgi <args>` as an operator would, in `env`; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=PROJECT_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def create_key(env: Mapping[str, str], name: str, *options: str) -> str:
    """A new API key from `flask keys create` (e.g. `--tier premium --admin`)."""
    printed = flask_cli(env, "keys", "create", name, *options)
    key = re.search(r"gsk_\S+", printed)
    assert key, printed
    return key.group()
