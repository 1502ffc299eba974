"""The core's observer hooks: what outside code (metrics, Sentry, logs) gets to see."""

import threading
from contextlib import contextmanager

import pytest

from app.generation import InvalidParamsError, QueueFullError, ServiceStoppedError
from app.generation.events.observers import JobObserver

from .conftest import wait_for


class Journal(JobObserver):
    """Writes down every hook call. A run's hooks finish after its row is written, so
    tests wait for the run's last hook (`ran`) rather than for the job's status."""

    def __init__(self):
        self.calls = []
        self._changed = threading.Condition()

    def wait_ran(self, job_id):
        with self._changed:
            assert self._changed.wait_for(lambda: ("ran", job_id) in self.calls, timeout=10)

    def submitted(self, job):
        self.calls.append(("submitted", job.id))

    def rejected(self, reason):
        self.calls.append(("rejected", reason))

    @contextmanager
    def running(self, job):
        self.calls.append(("running", job.id))
        yield
        with self._changed:
            self.calls.append(("ran", job.id))
            self._changed.notify_all()

    def failed(self, job, error):
        self.calls.append(("failed", job.id, str(error)))

    def finished(self, job, outcome, run_seconds):
        assert run_seconds >= 0
        self.calls.append(("finished", job.id, outcome))


class Broken(JobObserver):
    """Raises from every hook it has."""

    def submitted(self, job):
        raise RuntimeError("observer bug")

    @contextmanager
    def running(self, job):
        raise RuntimeError("observer bug")
        yield

    def finished(self, job, outcome, run_seconds):
        raise RuntimeError("observer bug")


@pytest.fixture
def journal(service):
    journal = Journal()
    service.observers.add(journal)
    return journal


def test_a_successful_run_is_wrapped_in_running(service, journal):
    job = service.submit("record", {})
    journal.wait_ran(job.id)
    assert journal.calls == [
        ("submitted", job.id),
        ("running", job.id),
        ("finished", job.id, "succeeded"),
        ("ran", job.id),
    ]


def test_a_failing_run_reports_the_error_inside_running(service, journal):
    job = service.submit("fail", {})
    journal.wait_ran(job.id)
    assert journal.calls[1:] == [
        ("running", job.id),
        ("failed", job.id, "the model exploded"),
        ("finished", job.id, "failed"),
        ("ran", job.id),
    ]


def test_cancelled_and_requeued_runs_report_their_outcome(service, journal, gate):
    cancelled = service.submit("gate", {})
    assert gate.started.wait(5)
    service.cancel(cancelled.id)
    journal.wait_ran(cancelled.id)
    gate.started.clear()
    requeued = service.submit("gate", {})
    assert gate.started.wait(5)
    service.shutdown(wait=True, timeout=0)
    outcomes = [call for call in journal.calls if call[0] == "finished"]
    assert outcomes == [
        ("finished", cancelled.id, "cancelled"),
        ("finished", requeued.id, "queued"),
    ]


def test_rejections_are_reported_with_their_reason(make_service, journal, gate):
    service = make_service(queue_size=1)
    service.observers.add(journal)
    with pytest.raises(ServiceStoppedError):
        service.submit("record", {})
    service.start()
    with pytest.raises(InvalidParamsError):
        service.submit("no-such-generator", {})
    service.submit("gate", {})
    assert gate.started.wait(5)
    service.submit("record", {})
    with pytest.raises(QueueFullError):
        service.submit("record", {})
    reasons = [call[1] for call in journal.calls if call[0] == "rejected"]
    assert reasons == ["unavailable", "invalid_params", "queue_full"]


def test_a_broken_observer_changes_nothing_for_the_job(service, journal):
    service.observers.add(Broken())
    job = service.submit("record", {})
    journal.wait_ran(job.id)
    assert wait_for(service, job.id).status.value == "succeeded"
    assert [call[0] for call in journal.calls] == ["submitted", "running", "finished", "ran"]
