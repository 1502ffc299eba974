"""Files as they land, previews and signed links, over HTTP (docs/api.md)."""

from __future__ import annotations

import io
import time
import zipfile
from urllib.parse import parse_qs, urlsplit

import pytest

from app.generation.events.bus import EventType

from .conftest import wait_for
from .test_limits import headers_for, limited_app


def next_event(subscription, kind, timeout=10.0):
    """The next event of `kind` (earlier ones of other kinds are skipped)."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        event = subscription.get(timeout=0.1)
        if event is not None and event.type == kind:
            return event
    raise AssertionError(f"no {kind} event within {timeout} s")


def fetch(client, url, **kwargs):
    """GET `url`, its body read and the response closed (a served file holds a handle)."""
    with client.get(url, **kwargs) as response:
        response.get_data()
    return response


def submit_paced(client, headers=None, count=4):
    body = {"generator": "paced", "params": {"count": count}}
    answer = client.post("/api/v1/jobs", json=body, headers=headers or {})
    assert answer.status_code == 202, answer.json
    return answer.json["id"]


def test_a_file_can_be_fetched_as_soon_as_it_lands(client, service, paced):
    subscription = service.bus.subscribe()
    job_id = submit_paced(client)
    landed = next_event(subscription, EventType.OUTPUT)
    assert landed.data["name"] == "image-01.png"
    assert paced.rendered < 4  # image 4 waits for the test
    listed = client.get(f"/api/v1/jobs/{job_id}/files").json
    assert listed["status"] == "running"
    [first] = listed["files"]
    assert (first["name"], first["content_type"]) == ("image-01.png", "image/png")
    served = fetch(client, first["url"])
    assert served.status_code == 200
    assert served.data[:4] == b"\x89PNG" and len(served.data) == first["bytes"]
    assert served.headers["Content-Type"] == "image/png"
    assert served.headers["ETag"] == f'"{first["sha256"]}"'
    assert "sandbox" in served.headers["Content-Security-Policy"]
    paced.advance(3)
    done = wait_for(service, job_id)
    names = [f["name"] for f in client.get(f"/api/v1/jobs/{job_id}/files").json["files"]]
    assert done.status.value == "succeeded"
    assert names == [f"image-0{n}.png" for n in range(1, 5)]


def test_a_file_answers_a_conditional_get_with_304(client, service, paced):
    job_id = submit_paced(client, count=1)
    wait_for(service, job_id)
    url = f"/api/v1/jobs/{job_id}/files/image-01.png"
    first = fetch(client, url)
    assert "private" in first.headers["Cache-Control"].split(", ")
    again = fetch(client, url, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


@pytest.mark.parametrize(
    "name",
    ["../image-01.png", "a/../../etc/passwd", "%2e%2e%2fx", "x%00y", "n" * 300, "nope.png"],
)
def test_a_file_that_is_not_the_jobs_is_a_json_404(client, service, paced, name):
    job_id = submit_paced(client, count=1)
    wait_for(service, job_id)
    answer = fetch(client, f"/api/v1/jobs/{job_id}/files/{name}")
    assert answer.status_code == 404
    assert answer.json["error"]["code"] == "not_found"


def test_the_preview_follows_the_run_and_goes_when_it_ends(client, service, paced):
    subscription = service.bus.subscribe()
    job_id = submit_paced(client, count=2)
    shown = next_event(subscription, EventType.PREVIEW)
    assert shown.data["content_type"] == "image/png" and shown.data["version"] >= 1
    preview = fetch(client, f"/api/v1/jobs/{job_id}/preview")
    assert preview.status_code == 200 and preview.data[:4] == b"\x89PNG"
    assert "no-store" in preview.headers["Cache-Control"]
    paced.advance(1)
    wait_for(service, job_id)
    assert fetch(client, f"/api/v1/jobs/{job_id}/preview").status_code == 404
    with service.results.open(job_id, service.get(job_id).lease_epoch) as stream:
        names = zipfile.ZipFile(io.BytesIO(stream.read())).namelist()
    assert names == ["image-01.png", "image-02.png", "manifest.json"]  # no preview


# -- signed links, in keys mode -----------------------------------------------------------


@pytest.fixture
def keyed(config, service):
    return limited_app(config, service)


def finished_job(app, service, paced, headers):
    client = app.test_client()
    job_id = submit_paced(client, headers, count=1)
    wait_for(service, job_id)
    return client, client.get(f"/api/v1/jobs/{job_id}", headers=headers).json


def test_a_signed_link_opens_a_file_and_the_zip_without_a_key(keyed, service, paced):
    alice = headers_for(keyed, "alice")
    client, job = finished_job(keyed, service, paced, alice)
    files = client.get(job["links"]["files"], headers=alice).json["files"]
    assert fetch(client, files[0]["url"]).status_code == 200
    assert fetch(client, job["result"]["url"]).status_code == 200
    assert client.get(job["links"]["files"]).status_code == 401  # the list itself needs the key
    unsigned = urlsplit(files[0]["url"]).path
    assert fetch(client, unsigned).status_code == 401


def test_every_file_preview_and_zip_url_of_a_job_opens_without_a_key(keyed, service, paced):
    alice = headers_for(keyed, "alice")
    client = keyed.test_client()
    subscription = service.bus.subscribe()
    job_id = submit_paced(client, alice, count=2)
    next_event(subscription, EventType.PREVIEW)  # of image 1, shown until image 2 starts
    next_event(subscription, EventType.OUTPUT)
    running = client.get(f"/api/v1/jobs/{job_id}", headers=alice).json
    [landed] = client.get(running["links"]["files"], headers=alice).json["files"]
    signed = [running["links"]["preview"], landed["url"]]
    assert [fetch(client, url).status_code for url in signed] == [200, 200]
    assert [fetch(client, urlsplit(url).path).status_code for url in signed] == [401, 401]
    paced.advance(1)
    wait_for(service, job_id)
    done = client.get(f"/api/v1/jobs/{job_id}", headers=alice).json
    signed = [done["links"]["result"], done["result"]["url"]]
    assert [fetch(client, url).status_code for url in signed] == [200, 200]
    assert fetch(client, urlsplit(done["links"]["result"]).path).status_code == 401


def tampered(url, **changes):
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()} | changes
    return parts.path + "?" + "&".join(f"{k}={v}" for k, v in query.items())


def test_an_expired_or_altered_link_is_refused_with_403(keyed, service, paced):
    alice = headers_for(keyed, "alice")
    client, job = finished_job(keyed, service, paced, alice)
    url = client.get(job["links"]["files"], headers=alice).json["files"][0]["url"]
    signature = parse_qs(urlsplit(url).query)["signature"][0]
    for bad in (
        tampered(url, signature=signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")),
        tampered(url, expires=str(int(time.time()) + 10**6)),  # later, same signature
        tampered(url, expires="0"),
        tampered(url, expires="soon"),
    ):
        answer = fetch(client, bad)
        assert answer.status_code == 403, bad
        assert answer.json["error"]["code"] == "invalid_link"


def test_a_link_opens_only_the_resource_it_was_signed_for(keyed, service, paced):
    alice = headers_for(keyed, "alice")
    client, job = finished_job(keyed, service, paced, alice)
    _, other = finished_job(keyed, service, paced, alice)
    url = client.get(job["links"]["files"], headers=alice).json["files"][0]["url"]
    query = urlsplit(url).query
    assert fetch(client, f"{other['links']['self']}/files/image-01.png?{query}").status_code == 403
    zip_path = urlsplit(job["links"]["result"]).path
    assert fetch(client, f"{zip_path}?{query}").status_code == 403
    assert fetch(client, f"{job['links']['self']}/files/other.png?{query}").status_code == 403


def test_an_expired_link_is_refused(keyed, service, paced, monkeypatch):
    alice = headers_for(keyed, "alice")
    client, job = finished_job(keyed, service, paced, alice)
    url = job["result"]["url"]
    later = time.time() + 2 * 3600
    monkeypatch.setattr("app.web.links.time.time", lambda: later)
    answer = fetch(client, url)
    assert (answer.status_code, answer.json["error"]["code"]) == (403, "invalid_link")
    assert "expired" in answer.json["error"]["message"]


def test_a_link_never_outlives_the_results_retention(keyed, service, paced):
    alice = headers_for(keyed, "alice")
    _, job = finished_job(keyed, service, paced, alice)
    signer = keyed.extensions["links"]
    finished = service.get(job["id"]).finished_at
    assert signer.expiry(finished.timestamp() + 23.99 * 3600, finished) == int(
        finished.timestamp() + 24 * 3600
    )


def test_a_stored_file_and_a_preview_answer_as_documented_ranges_or_not(
    app, client, service, paced
):
    """A conditional GET is a 304; a byte range is not served (the whole file, 200), on
    every store alike. `assert_conforms` checks each answer against the document."""
    from .openapi_check import assert_conforms

    subscription = service.bus.subscribe()
    job_id = submit_paced(client, count=2)
    next_event(subscription, EventType.OUTPUT)
    for url in (f"/api/v1/jobs/{job_id}/files/image-01.png", f"/api/v1/jobs/{job_id}/preview"):
        whole = fetch(client, url)
        part = fetch(client, url, headers={"Range": "bytes=0-7"})
        same = fetch(client, url, headers={"If-None-Match": whole.headers["ETag"]})
        for answer in (whole, part, same):
            assert_conforms(app, "GET", url, answer)
        assert (whole.status_code, part.status_code, same.status_code) == (200, 200, 304), url
        assert part.data == whole.data and "Accept-Ranges" not in part.headers
    paced.advance(1)
    wait_for(service, job_id)
