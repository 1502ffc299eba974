"""CPU isolation: cpu_bound generators run in worker processes, with progress,
cancellation and failures crossing the process boundary."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator

import pytest

from app.generation import GeneratorError, JobCancelled, JobStatus
from app.generation.execution.processes import FALLBACK_NICENESS, WorkerProcess, run_below_the_web
from app.generation.generators import GeneratorRegistry
from app.generation.generators.images import ImagesGenerator

from .conftest import wait_for
from .cpu_generators import (
    BrokenCpuGenerator,
    CrashGenerator,
    PolicyGenerator,
    StubbornGenerator,
    WhereGenerator,
)
from .generators import RecordingGenerator


class FakeContext:
    """Records progress; cancels itself after `cancel_after` progress reports."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.reports: list[tuple] = []
        self.previews: list[tuple[str, int]] = []
        self._cancel_after = cancel_after

    def progress(self, stage, percent, message="", *, step=None, total=None) -> None:
        self.reports.append((stage, percent, message, step, total))

    def preview(self, data, content_type="image/png") -> None:
        self.previews.append((content_type, len(data)))

    def check_cancelled(self) -> None:
        if self._cancel_after is not None and len(self.reports) >= self._cancel_after:
            raise JobCancelled("cancelled")


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerProcess]:
    """One child for the module's tests (a spawn costs about a second); tests that kill it
    check that it comes back."""
    process = WorkerProcess("test-process", cancel_grace=0.5)
    process.start()
    yield process
    process.close()


def pid_of(files) -> int:
    return int(files[-1].data)


def test_a_job_runs_in_the_child_and_its_progress_reaches_the_parent(worker):
    context = FakeContext()
    files = list(worker.run(WhereGenerator(), {"steps": 3}, context))
    assert pid_of(files) == worker.pid != os.getpid()
    assert [report[3] for report in context.reports] == [0, 1, 2]
    assert context.reports[1] == ("spinning", pytest.approx(33.33, abs=0.01), "step 1", 1, 3)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_child_gets_a_cpu_only_when_the_web_process_leaves_one_free(worker):
    files = list(worker.run(PolicyGenerator(), {}, FakeContext()))
    assert os.sched_getscheduler(worker.pid) == os.SCHED_IDLE
    assert json.loads(files[0].data) == {"main": os.SCHED_IDLE, "thread": os.SCHED_IDLE}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the parent stays as it was


def test_where_sched_idle_is_refused_the_child_runs_at_the_lowest_niceness(monkeypatch):
    def refuse(*args):
        raise PermissionError("not allowed here")

    monkeypatch.setattr(os, "sched_setscheduler", refuse, raising=False)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        run_below_the_web(child.pid)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == FALLBACK_NICENESS
    finally:
        child.kill()
        child.wait()


def test_the_child_serves_job_after_job(worker):
    first = list(worker.run(WhereGenerator(), {"steps": 1}, FakeContext()))
    second = list(worker.run(ImagesGenerator(), _tiny_images(), FakeContext()))
    assert pid_of(first) == worker.pid
    assert [f.name for f in second] == ["image-01.png"]


def test_errors_in_the_child_fail_the_job_with_their_message(worker):
    with pytest.raises(GeneratorError, match="^ValueError: bad pixel$"):
        list(worker.run(BrokenCpuGenerator(), {}, FakeContext()))
    with pytest.raises(GeneratorError, match="^the provider said no$"):
        list(worker.run(BrokenCpuGenerator(), {"polite": True}, FakeContext()))


def test_cancellation_reaches_the_child_at_its_next_checkpoint(worker):
    context = FakeContext(cancel_after=2)
    with pytest.raises(JobCancelled):
        list(worker.run(WhereGenerator(), {"steps": 1000, "pause": 0.01}, context))
    assert 2 <= len(context.reports) < 100
    assert len(list(worker.run(WhereGenerator(), {"steps": 1}, FakeContext()))) == 1


def test_a_child_that_ignores_cancellation_is_killed_and_replaced(worker):
    stubborn_pid = worker.pid
    with pytest.raises(JobCancelled, match="killed"):
        list(worker.run(StubbornGenerator(), {"seconds": 60}, FakeContext(cancel_after=1)))
    files = list(worker.run(WhereGenerator(), {"steps": 1}, FakeContext()))
    assert pid_of(files) != stubborn_pid


def test_a_child_that_dies_fails_its_job_and_is_replaced(worker):
    crashed_pid = worker.pid
    with pytest.raises(GeneratorError, match="killed .*SIGKILL.*replaced"):
        list(worker.run(CrashGenerator(), {}, FakeContext()))
    files = list(worker.run(WhereGenerator(), {"steps": 1}, FakeContext()))
    assert pid_of(files) != crashed_pid


def test_a_consumer_that_stops_early_stops_the_childs_job(worker):
    run = worker.run(WhereGenerator(), {"steps": 2, "pause": 0.01}, FakeContext())
    run_pid = worker.pid
    run.close()  # never started: nothing was sent to the child
    files = list(worker.run(WhereGenerator(), {"steps": 1}, FakeContext()))
    assert pid_of(files) == run_pid


def test_a_consumer_that_stops_mid_job_leaves_no_stale_messages(worker):
    run = worker.run(BrokenCpuGenerator(), {}, FakeContext())
    assert next(run).name == "first.txt"
    run.close()
    files = list(worker.run(WhereGenerator(), {"steps": 1}, FakeContext()))
    assert [f.name for f in files] == ["pid.txt"]


def test_registry_refuses_a_cpu_bound_generator_that_cannot_be_pickled():
    class Local(WhereGenerator):  # a local class cannot be imported by a child
        name = "local"

    with pytest.raises(ValueError, match="must be picklable"):
        GeneratorRegistry([Local()])


# -- through the service ----------------------------------------------------------


@pytest.fixture
def registry(recorder: RecordingGenerator) -> GeneratorRegistry:
    return GeneratorRegistry(
        [ImagesGenerator(), WhereGenerator(), CrashGenerator(), StubbornGenerator(), recorder]
    )


def _tiny_images() -> dict:
    return {"prompt": "tiny", "count": 1, "width": 64, "height": 64, "seed": 1}


def _read_pid(service, job) -> int:
    with service.results.open(job.id, job.lease_epoch) as stream:
        return int(zipfile.ZipFile(stream).read("pid.txt"))


def test_service_runs_cpu_bound_jobs_in_worker_processes(make_service):
    service = make_service(cpu_isolation="process")
    service.start()
    job = service.submit("where", {"steps": 3})
    done = wait_for(service, job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert _read_pid(service, done) != os.getpid()
    steps = [e.data["step"] for e in service.bus.history(job.id) if e.type == "progress"]
    assert steps == [0, 1, 2]


def test_worker_processes_start_with_the_first_cpu_bound_job(make_service):
    def children() -> list[int]:
        return [child.pid for child in multiprocessing.active_children()]

    before = children()
    service = make_service(cpu_isolation="process", workers=2)
    service.start()
    assert wait_for(service, service.submit("record", {}).id).status is JobStatus.SUCCEEDED
    assert children() == before  # a job that runs in its thread starts no child
    done = wait_for(service, service.submit("where", {"steps": 1}).id)
    assert [pid for pid in children() if pid not in before] == [_read_pid(service, done)]


def test_an_idle_child_retires_and_the_next_job_starts_a_new_one():
    process = WorkerProcess("test-idle", idle_seconds=3600)
    try:
        assert process.retire_in() is None and not process.retire_if_idle()  # no child yet
        first = pid_of(list(process.run(WhereGenerator(), {"steps": 1}, FakeContext())))
        assert 0 < process.retire_in() <= 3600
        assert not process.retire_if_idle()  # not idle for long enough yet
        process.idle_seconds = 0.2
        wait_until(lambda: process.retire_in() == 0.0)
        assert process.retire_if_idle()
        assert process.pid is None and process.retire_in() is None
        second = pid_of(list(process.run(WhereGenerator(), {"steps": 1}, FakeContext())))
        assert second != first and process.pid == second
    finally:
        process.close()


def test_a_child_with_idle_seconds_0_never_retires():
    process = WorkerProcess("test-keep", idle_seconds=0)
    try:
        list(process.run(WhereGenerator(), {"steps": 1}, FakeContext()))
        assert process.retire_in() is None and not process.retire_if_idle()
        assert process.pid is not None
    finally:
        process.close()


def test_the_service_stops_worker_processes_left_idle(make_service):
    def children() -> list[int]:
        return [child.pid for child in multiprocessing.active_children()]

    before = children()
    service = make_service(cpu_isolation="process", workers=1, process_idle_seconds=0.3)
    service.start()
    done = wait_for(service, service.submit("where", {"steps": 1}).id)
    started = _read_pid(service, done)
    wait_until(lambda: started not in children())
    # The worker thread still takes jobs, and the next CPU-bound one gets a new child.
    again = wait_for(service, service.submit("where", {"steps": 1}).id)
    assert again.status is JobStatus.SUCCEEDED
    assert _read_pid(service, again) not in (started, os.getpid())
    assert service.worker_count == 1
    wait_until(lambda: set(children()) <= set(before))


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_service_in_thread_mode_runs_cpu_bound_jobs_in_its_own_process(make_service):
    service = make_service(cpu_isolation="thread")
    service.start()
    done = wait_for(service, service.submit("where", {"steps": 1}).id)
    assert _read_pid(service, done) == os.getpid()


def test_a_crashed_worker_process_fails_only_its_job(make_service):
    service = make_service(cpu_isolation="process", workers=2)
    service.start()
    long_job = service.submit("where", {"steps": 40, "pause": 0.02})
    crash = service.submit("crash", {})
    failed = wait_for(service, crash.id)
    assert failed.status is JobStatus.FAILED
    assert "SIGKILL" in failed.error and "replaced" in failed.error
    assert wait_for(service, long_job.id).status is JobStatus.SUCCEEDED
    after = service.submit("images", _tiny_images())
    assert wait_for(service, after.id).status is JobStatus.SUCCEEDED


def test_cancel_stops_a_job_running_in_a_worker_process(make_service):
    service = make_service(cpu_isolation="process")
    service.start()
    job = service.submit("where", {"steps": 10_000, "pause": 0.01})
    wait_for(service, job.id, {JobStatus.RUNNING})
    _wait_for_progress(service, job.id)
    service.cancel(job.id)
    assert wait_for(service, job.id).status is JobStatus.CANCELLED
    follower = service.submit("where", {"steps": 1})
    assert wait_for(service, follower.id).status is JobStatus.SUCCEEDED


def test_shutdown_requeues_a_job_running_in_a_worker_process(make_service):
    service = make_service(cpu_isolation="process")
    service.start()
    job = service.submit("where", {"steps": 10_000, "pause": 0.01})
    _wait_for_progress(service, job.id)
    service.shutdown(wait=True, timeout=0.1)
    assert service.store.get(job.id).status is JobStatus.QUEUED


def _wait_for_progress(service, job_id: str) -> None:
    subscription = service.bus.subscribe([job_id])
    try:
        while not any(e.type == "progress" for e in service.bus.history(job_id)):
            assert subscription.get(timeout=10) is not None, "no event within 10 s"
    finally:
        service.bus.unsubscribe(subscription)


def test_previews_cross_from_the_child_to_the_parents_context(worker):
    context = FakeContext()
    files = list(worker.run(ImagesGenerator(), _tiny_images(), context))
    assert len(context.previews) == len(files) > 0
    assert all(kind == "image/png" and size > 0 for kind, size in context.previews)
