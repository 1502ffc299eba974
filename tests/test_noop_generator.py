"""The `noop` generator: a job whose only cost is the service itself."""

import zipfile

import pytest

from app.generation import InvalidParamsError, JobStatus
from app.generation.generators import default_registry
from app.generation.generators.noop import NoopGenerator

from .conftest import wait_for


def test_noop_is_a_built_in_generator():
    assert "noop" in default_registry().names()


def test_noop_defaults_to_no_wait():
    assert NoopGenerator().validate({}) == ({"ms": 0}, {})


@pytest.mark.parametrize("ms", [-1, 600_001, 1.5, "10", True, None])
def test_noop_rejects_ms_that_is_not_a_bounded_integer(ms):
    _, errors = NoopGenerator().validate({"ms": ms})
    assert errors == {"ms": "an integer from 0 to 600000"}


def test_noop_rejects_unknown_params(service):
    with pytest.raises(InvalidParamsError) as raised:
        service.submit("noop", {"ms": 1, "size": 3})
    assert raised.value.fields == {"params.size": "unknown parameter"}


def test_noop_job_succeeds_with_one_tiny_file(service):
    job = wait_for(service, service.submit("noop", {"ms": 5}).id)
    assert job.status is JobStatus.SUCCEEDED
    with (
        service.results.open(job.id, job.lease_epoch) as stream,
        zipfile.ZipFile(stream) as archive,
    ):
        assert archive.read("noop.txt") == b"ok\n"


def test_a_long_noop_stops_soon_after_cancel(service):
    job = service.submit("noop", {"ms": 600_000})
    wait_for(service, job.id, {JobStatus.RUNNING})
    service.cancel(job.id)
    assert wait_for(service, job.id, timeout=2).status is JobStatus.CANCELLED
