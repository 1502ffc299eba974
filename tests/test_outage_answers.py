"""With the database down, every operation answers what the document says.

Each HTTP operation of openapi.json is called, in open mode and in keys mode, while the
service's PostgreSQL database refuses connections and has dropped the ones it had (what
a database restart or failover looks like to clients). Every answer must be one its
operation documents, in the documented schema: a 503 `database_unavailable` with
Retry-After wherever the database is needed, and never a 500.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import create_engine, text

from app import create_app
from app.config import Config
from app.generation import GenerationService
from app.generation.intake.keys import Tier
from app.generation.store import schema
from app.generation.store.engine import create_database_engine
from app.web.docs import openapi_document
from app.wiring import build_service

from .conftest import POSTGRES_ADMIN_URL, TEST_SECRET_KEY, empty_postgres_database
from .openapi_check import assert_conforms

PATH_VALUES = {"job_id": "0" * 32, "name": "image-01.png", "delivery_id": "d1", "machine": "m1"}
BODIES = {
    ("POST", "/api/v1/jobs"): {"generator": "images", "params": {"prompt": "a lighthouse"}},
    ("POST", "/api/v1/admin/jobs/{job_id}/priority"): {"priority": "low"},
}


def http_operations() -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, operations in openapi_document()["paths"].items()
        for method, operation in operations.items()
        if method != "parameters" and "101" not in operation["responses"]
    )


@pytest.fixture
def postgres_service(tmp_path, registry) -> Iterator[tuple[Config, GenerationService, str]]:
    """A started service on a database of its own: (config, service, database name)."""
    with empty_postgres_database() as url:
        engine = create_database_engine(url)
        schema.upgrade(engine)
        engine.dispose()
        config = Config(database_url=url, results_dir=tmp_path / "results", generation_workers=1)
        service = build_service(config, registry, name="outage")
        service.start()
        try:
            yield config, service, url.rsplit("/", 1)[1]
        finally:
            service.shutdown(wait=True, timeout=1)


def take_down(database: str) -> None:
    """Refuse new connections to `database` and end the ones it has."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false'))
        connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": database},
        )
    admin.dispose()


def call_every_operation(app: Flask, headers: dict[str, str]) -> dict[str, int]:
    client = app.test_client()
    answers = {}
    for method, template in http_operations():
        url = template.format(**PATH_VALUES)
        body = BODIES.get((method, template))
        response = client.open(url, method=method, json=body, headers=headers)
        assert response.status_code != 500, f"{method} {template}: {response.get_data()[:200]}"
        assert_conforms(app, method, url, response)
        error = (response.get_json(silent=True) or {}).get("error") or {}
        if error.get("code") == "database_unavailable":
            assert int(response.headers["Retry-After"]) >= 1, f"{method} {template}"
        answers[f"{method} {template}"] = response.status_code
    return answers


def test_every_operation_answers_an_outage_as_documented_in_open_mode(postgres_service):
    config, service, database = postgres_service
    app = create_app(config, service=service)
    take_down(database)
    answers = call_every_operation(app, {})
    # What needs the database says it is unavailable; what does not still answers.
    assert answers["POST /api/v1/jobs"] == 503
    assert answers["GET /api/v1/jobs/{job_id}"] == 503
    assert answers["GET /api/v1/admin/console"] == 503
    assert answers["GET /ready"] == 503
    assert answers["GET /health"] == 200
    assert answers["GET /api/v1/generators"] == 200


def test_every_operation_answers_an_outage_as_documented_in_keys_mode(postgres_service):
    config, service, database = postgres_service
    keyed = dataclasses.replace(config, auth_mode="keys", secret_key=TEST_SECRET_KEY)
    app = create_app(keyed, service=service)
    _, key = app.extensions["keys"].create("ops", Tier.PREMIUM, admin=True)
    take_down(database)
    answers = call_every_operation(app, {"Authorization": f"Bearer {key}"})
    # A key is looked up in the database: no API call can be authenticated.
    api = {operation: status for operation, status in answers.items() if "/api/v1/" in operation}
    assert set(api.values()) == {503}, api
