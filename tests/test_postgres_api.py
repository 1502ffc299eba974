"""The HTTP API over PostgreSQL: results stored in the database stream out as ZIPs, and
/status tells cluster-wide figures from this process's."""

from __future__ import annotations

import io
import zipfile

import pytest

from app import create_app
from app.config import Config
from app.wiring import build_service

from .conftest import wait_for

pytestmark = pytest.mark.usefixtures("pg_engine")


@pytest.fixture
def pg_client(postgres_url, tmp_path, registry):
    config = Config(database_url=postgres_url, results_dir=tmp_path, results_store="database")
    service = build_service(config, registry, name="web")
    service.start()
    app = create_app(config, service=service)
    yield app.test_client(), service
    service.shutdown(wait=True, timeout=1)


def test_result_stored_in_the_database_downloads_as_a_zip(pg_client):
    client, service = pg_client
    params = {"prompt": "db", "count": 2, "width": 64, "height": 64}
    body = {"generator": "images", "params": params}
    job = client.post("/api/v1/jobs", json=body).get_json()
    done = wait_for(service, job["id"])
    response = client.get(f"/api/v1/jobs/{job['id']}/result")
    assert response.status_code == 200
    assert response.content_length == done.result_bytes
    names = zipfile.ZipFile(io.BytesIO(response.data)).namelist()
    assert names == ["image-01.png", "image-02.png", "manifest.json"]


def test_status_separates_cluster_and_local_figures(pg_client):
    client, _ = pg_client
    status = client.get("/status").get_json()["generation_service"]
    assert status["local"]["process"] == "web"
    assert status["local"]["workers"] == 2
    assert status["cluster"]["queue_capacity"] == 100
    assert set(status["cluster"]) >= {"queue_size", "queued_by_priority", "running_jobs"}
