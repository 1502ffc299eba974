"""The links of a job point at its routes, and the submit answer's Location is its own."""

from urllib.parse import urlsplit

from flask import url_for

from app.generation import JobStatus

from .conftest import wait_for


def test_submit_answers_202_with_location_and_links(client):
    reply = client.post("/api/v1/jobs", json={"generator": "noop", "params": {}})
    job = reply.get_json()
    base = f"/api/v1/jobs/{job['id']}"
    assert reply.status_code == 202
    assert reply.headers["Location"] == base
    paths = {name: urlsplit(url).path for name, url in job["links"].items()}
    assert paths == {
        "self": base,
        "events": base + "/events",
        "result": base + "/result",
        "files": base + "/files",
        "preview": base + "/preview",
    }
    signed = {name for name, url in job["links"].items() if "signature=" in url}
    assert signed == {"result", "preview"}  # what an <img> or a download opens (links.py)


def test_links_lead_to_the_job_and_its_result(client, service):
    job = client.post("/api/v1/jobs", json={"generator": "noop", "params": {}}).get_json()
    wait_for(service, job["id"], {JobStatus.SUCCEEDED})
    assert client.get(job["links"]["self"]).get_json()["status"] == "succeeded"
    result = client.get(job["links"]["result"])
    assert (result.status_code, result.mimetype) == (200, "application/zip")
    result.close()


def test_links_follow_the_mount_point_as_url_for_would_build_them(app, client):
    reply = client.post(
        "/api/v1/jobs", json={"generator": "noop", "params": {}}, base_url="http://localhost/gen"
    )
    job = reply.get_json()
    with app.test_request_context(base_url="http://localhost/gen"):
        built = url_for("api.get_job", job_id=job["id"])
    assert built == f"/gen/api/v1/jobs/{job['id']}"
    assert reply.headers["Location"] == job["links"]["self"] == built
    assert job["links"]["events"] == built + "/events"
