"""What a web process loads: on SQLite with the default settings, none of the large
packages that only other configurations need (the idle-RSS target, docs/performance.md).

Each case runs the deployment's entry point (`wsgi.py`) in a fresh interpreter, starts
the service, runs a job through the API and lists the modules it ended up with. The
controls show the probe sees these modules when a configuration does need them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.generation.store import schema
from app.generation.store.engine import create_database_engine

ROOT = Path(__file__).resolve().parent.parent

# Alembic (with Mako) migrates, psycopg and SQLAlchemy's PostgreSQL dialect serve
# PostgreSQL, requests serves `replicate`, numpy and Pillow render `images`, sentry_sdk
# reports errors to a DSN: about 45 MB between them.
HEAVY = ("alembic", "mako", "psycopg", "sqlalchemy.dialects.postgresql", "requests")
HEAVY += ("numpy", "PIL", "sentry_sdk")

PROBE = """
import json, sys, time
import wsgi
from app.wiring import get_service

service = get_service(wsgi.app)
service.start()
client = wsgi.app.test_client()
job = client.post("/api/v1/jobs", json={"generator": "noop", "params": {"ms": 0}}).get_json()
give_up = time.monotonic() + 30
while client.get(f"/api/v1/jobs/{job['id']}").get_json()["status"] != "succeeded":
    assert time.monotonic() < give_up, "the job did not finish"
    time.sleep(0.01)
for path in ("/health", "/status", "/api/v1/jobs", "/api/v1/generators"):
    assert client.get(path).status_code == 200, path
service.shutdown(wait=True, timeout=5)
print(json.dumps(sorted(sys.modules)))
"""


def modules_after_start(tmp_path: Path, **settings: str) -> set[str]:
    """The modules a web process holds after starting and running a job, with the
    default settings but a database and results folder under `tmp_path`."""
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "RESULTS_DIR": str(tmp_path / "results"),
        "LOG_LEVEL": "WARNING",
    } | settings
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,  # no developer's .env
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def loaded(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {name for name in names if name in modules}


def test_a_service_on_a_new_sqlite_database_loads_no_heavy_package(tmp_path):
    modules = modules_after_start(tmp_path)
    assert "sqlalchemy.dialects.sqlite" in modules  # the probe sees what was used
    assert loaded(modules, HEAVY) == set()
    engine = create_database_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    assert schema.current_revision(engine) == schema.HEAD_REVISION
    engine.dispose()


def test_a_service_restarting_on_its_current_sqlite_database_loads_no_heavy_package(
    tmp_path,
):
    modules_after_start(tmp_path)
    assert loaded(modules_after_start(tmp_path), HEAVY) == set()


def test_a_service_on_an_older_sqlite_schema_loads_alembic_to_migrate_it(tmp_path):
    engine = create_database_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    schema.upgrade(engine, "0001")
    modules = modules_after_start(tmp_path)
    assert {"alembic", "mako"} <= modules
    assert schema.current_revision(engine) == schema.HEAD_REVISION
    engine.dispose()


def test_the_replicate_generator_loads_requests_only_with_a_token(tmp_path):
    modules = modules_after_start(tmp_path, REPLICATE_API_TOKEN="r8_test")
    assert loaded(modules, HEAVY) == {"requests"}
