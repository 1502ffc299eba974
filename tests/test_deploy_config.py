"""The container and Fly files, checked offline: lint, and agreement with each other.

There is no Docker engine in the test environment, so the image is not built here;
what can be checked without one is: hadolint and shellcheck, the Dockerfile's shape,
what .dockerignore lets in, fly.toml against gunicorn.conf.py, and the commands both
files run (the HEALTHCHECK and the release command).
"""

import fnmatch
import json
import os
import runpy
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from app.config import Config, ConfigError
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from tests.conftest import empty_postgres_database
from tests.servers import wsgi_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FLY = tomllib.loads((ROOT / "fly.toml").read_text())
FLY_ENV = FLY["env"]
# What `fly secrets set` provides on top of [env]; docs/operations.md lists them.
FLY_SECRETS = {"SECRET_KEY": "a-fly-secret-set-with-fly-secrets-set"}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def instruction(name: str) -> list[str]:
    return [args for op, args in dockerfile() if op == name]


def dockerfile_env() -> dict[str, str]:
    """The image's environment: every `NAME=value` of its ENV instructions."""
    pairs = (item.split("=", 1) for args in instruction("ENV") for item in shlex.split(args))
    return dict(pairs)


@pytest.fixture
def gunicorn_settings(monkeypatch, tmp_path):
    """gunicorn.conf.py's settings as gunicorn sees them on Fly (fly.toml's [env])."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name, value in FLY_ENV.items():
        monkeypatch.setenv(name, value)
    for name, value in FLY_SECRETS.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / name), *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_dockerfile_passes_hadolint():
    env_path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # shellcheck for RUN lines
    linted = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": env_path},
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_entrypoint_script_passes_shellcheck_and_is_executable():
    checked = run_tool("shellcheck", "docker-entrypoint.sh")
    assert checked.returncode == 0, checked.stdout
    assert os.access(ROOT / "docker-entrypoint.sh", os.X_OK)


def test_image_is_slim_python_with_dependencies_before_code():
    (base,) = instruction("FROM")
    assert base.startswith("python:3.") and "-slim" in base
    steps = [f"{op} {args}" for op, args in dockerfile()]
    first_copy = next(i for i, step in enumerate(steps) if step.startswith("COPY"))
    install = next(i for i, step in enumerate(steps) if "pip install" in step)
    code = next(i for i, step in enumerate(steps) if step.startswith("COPY app"))
    assert steps[first_copy] == "COPY requirements.txt ."
    assert first_copy < install < code
    assert "--no-cache-dir" in steps[install]
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(instruction("ENV"))


def test_image_runs_gunicorn_in_exec_form_as_an_unprivileged_user():
    assert json.loads(instruction("CMD")[0]) == ["gunicorn", "--config", "gunicorn.conf.py"]
    assert json.loads(instruction("ENTRYPOINT")[0]) == ["/app/docker-entrypoint.sh"]
    assert any("useradd" in run and " app" in run for run in instruction("RUN"))
    script = (ROOT / "docker-entrypoint.sh").read_text()
    assert 'exec setpriv --reuid=app --regid=app --init-groups -- "$@"' in script
    assert script.rstrip().endswith('exec "$@"')


def test_image_exposes_the_port_fly_routes_to(gunicorn_settings):
    port = FLY["http_service"]["internal_port"]
    assert instruction("EXPOSE") == [str(port)]
    assert FLY_ENV["PORT"] == str(port) and f"PORT={port}" in " ".join(instruction("ENV"))
    assert gunicorn_settings["bind"] == f"0.0.0.0:{port}"
    assert FLY["metrics"] == {"port": port, "path": "/metrics"}


def test_a_deployment_requires_api_keys_and_their_secret():
    assert FLY_ENV["AUTH_MODE"] == "keys"
    assert Config.from_env(FLY_ENV | FLY_SECRETS, dotenv=False).requires_keys
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Config.from_env(FLY_ENV, dotenv=False)


def test_healthcheck_uses_python_against_health(app):
    (healthcheck,) = instruction("HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[0] == "python" and "/health" in command[-1]
    server = wsgi_server(app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        healthy = subprocess.run(
            [sys.executable, *command[1:]], env={"PORT": str(server.port)}, check=False
        )
    finally:
        server.shutdown()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down = subprocess.run(
            [sys.executable, *command[1:]],
            env={"PORT": str(closed.getsockname()[1])},
            capture_output=True,
            check=False,
        )
    assert (healthy.returncode, down.returncode) == (0, 1)


def test_dockerignore_lets_in_what_runs_and_nothing_else():
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(path: str) -> bool:
        # Docker's rule: the last pattern matching the path or a parent of it decides.
        parts = path.split("/")
        verdict = True
        for rule in rules:
            pattern = rule.lstrip("!").rstrip("/").removeprefix("**/")
            anywhere = rule.lstrip("!").startswith("**/")
            candidates = (
                parts if anywhere else ["/".join(parts[: n + 1]) for n in range(len(parts))]
            )
            if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
                verdict = rule.startswith("!")
        return verdict

    copied = ["requirements.txt", "docker-entrypoint.sh", "wsgi.py", "gunicorn.conf.py"]
    assert all(sent(path) for path in [*copied, "app/generation/service.py"])
    left_out = [".git/HEAD", ".venv/bin/python", "tests/conftest.py", "instance/generation.db"]
    left_out += [".env", "app/__pycache__/config.cpython-311.pyc", "docs/operations.md"]
    assert not any(sent(path) for path in left_out)


def test_fly_stops_with_sigterm_after_gunicorn_has_drained(gunicorn_settings):
    assert FLY["kill_signal"] == "SIGTERM"
    drain = int(FLY_ENV["DRAIN_TIMEOUT_SECONDS"])
    assert drain < gunicorn_settings["graceful_timeout"] < FLY["kill_timeout"] <= 300


def test_fly_env_is_a_valid_configuration():
    config = Config.from_env(FLY_ENV | FLY_SECRETS, dotenv=False)
    required = {"GENERATION_WORKERS", "GENERATION_QUEUE_SIZE", "WEB_CONCURRENCY", "WEB_THREADS"}
    assert required | {"PORT"} <= FLY_ENV.keys()
    assert config.generation_workers == 2 and config.web_threads == 1024
    assert config.websocket_capacity == 512  # docs/performance.md measures 500 sockets


def test_fly_concurrency_fits_the_thread_budget(gunicorn_settings):
    concurrency = FLY["http_service"]["concurrency"]
    threads = gunicorn_settings["workers"] * gunicorn_settings["threads"]
    assert concurrency["type"] == "requests"
    assert concurrency["soft_limit"] < concurrency["hard_limit"] <= threads


def test_fly_machines_stop_themselves_when_idle_and_start_on_a_request():
    """The proxy cannot see jobs, so it never stops a machine; the app does, when nothing
    is left to do anywhere (IDLE_STOP_SECONDS), and the proxy starts it again."""
    service = FLY["http_service"]
    assert service["force_https"] is True
    assert service["auto_stop_machines"] == "off" and service["auto_start_machines"] is True
    assert service["min_machines_running"] == 0
    config = Config.from_env(FLY_ENV | FLY_SECRETS, dotenv=False)
    assert config.idle_stop_seconds == 600 and config.web_concurrency == 1
    (check,) = service["checks"]
    assert (check["path"], check["interval"], check["method"]) == ("/health", "15s", "GET")


def test_fly_vm_has_two_shared_cpus_and_two_gigabytes():
    (vm,) = FLY["vm"]
    assert (vm["cpu_kind"], vm["cpus"], vm["memory"]) == ("shared", 2, "2gb")


def release(database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """fly.toml's release command, run as Fly runs it (no volume, the image's settings)."""
    command = shlex.split(FLY["deploy"]["release_command"])
    assert command[0] == "flask"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "RESULTS_DIR": str(tmp_path / "results"),
        "SENTRY_DSN": "",
    }
    return subprocess.run(
        [str(BIN / "flask"), *command[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_release_command_migrates_a_shared_postgres_database(tmp_path):
    with empty_postgres_database() as url:
        done = release(url, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        engine = create_database_engine(url)
        try:
            assert schema.current_revision(engine) == schema.HEAD_REVISION
        finally:
            engine.dispose()


def test_the_release_command_leaves_sqlite_to_the_service_on_its_volume(tmp_path):
    """The release machine has no volume: a SQLite file made there would be thrown away,
    so nothing is made; the service migrates the file on its volume at start."""
    done = release(f"sqlite:///{tmp_path / 'release.db'}", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to migrate" in done.stdout
    assert not (tmp_path / "release.db").exists()


def test_fly_mounts_a_volume_where_the_image_keeps_its_data():
    """A default deploy keeps its jobs and results: the image's SQLite file and results
    folder are on the volume fly.toml mounts, which Fly creates on the first deploy."""
    (mount,) = FLY["mounts"]
    assert mount["source"] == "generation_data" and mount["initial_size"] == "1gb"
    image = dockerfile_env()
    database = Path(image["DATABASE_URL"].removeprefix("sqlite:///"))
    for path in (database, Path(image["RESULTS_DIR"])):
        assert path.is_relative_to(mount["destination"]), path
    entrypoint = (ROOT / "docker-entrypoint.sh").read_text()
    assert f"chown app:app {mount['destination']}" in entrypoint  # Fly mounts it as root
