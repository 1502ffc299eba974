"""The core, without HTTP: ordering, capacity, cancellation, failures, recovery."""

import threading
from datetime import UTC, datetime

import pytest

from app.generation import (
    InvalidParamsError,
    Job,
    JobFinishedError,
    JobNotFoundError,
    JobStatus,
    Priority,
    PriorityNotAllowedError,
    QueueFullError,
    ServiceStoppedError,
    TooManyJobsError,
)
from app.generation.generators import OutputFile
from app.generation.intake.keys import ANONYMOUS, ANONYMOUS_PRINCIPAL, Principal, Tier

from .conftest import hold_worker, wait_for


def test_higher_priority_runs_first_and_fifo_within_a_level(service, gate, recorder):
    hold_worker(service, gate)
    order = [
        ("low", Priority.LOW),
        ("n1", Priority.NORMAL),
        ("high", Priority.HIGH),
        ("n2", Priority.NORMAL),
    ]
    jobs = [service.submit("record", {"tag": tag}, priority=p) for tag, p in order]
    gate.release()
    for job in jobs:
        wait_for(service, job.id)
    assert recorder.ran == ["high", "n1", "n2", "low"]


def test_submit_returns_a_durable_queued_job_with_position(service, gate):
    hold_worker(service, gate)
    first = service.submit("record", {"tag": 1})
    second = service.submit("record", {"tag": 2})
    assert (first.status, first.position, second.position) == (JobStatus.QUEUED, 0, 1)
    assert second.eta_seconds > first.eta_seconds > 0
    assert service.store.get(second.id).status is JobStatus.QUEUED


def test_submit_rejects_when_queue_full(make_service, gate):
    service = make_service(queue_size=2)
    service.start()
    hold_worker(service, gate)
    service.submit("record", {})
    service.submit("record", {})
    with pytest.raises(QueueFullError) as raised:
        service.submit("record", {})
    assert raised.value.retry_after >= 1
    assert service.store.count_by_status()[JobStatus.QUEUED] == 2  # nothing half-written


def test_submit_validates_generator_and_params(service):
    with pytest.raises(InvalidParamsError) as unknown:
        service.submit("nope", {})
    assert "generator" in unknown.value.fields
    with pytest.raises(InvalidParamsError) as bad:
        service.submit("images", {"prompt": "", "count": 99})
    assert set(bad.value.fields) == {"params.prompt", "params.count"}


def test_submit_before_start_and_after_shutdown_raises(make_service):
    service = make_service()
    with pytest.raises(ServiceStoppedError):
        service.submit("record", {})
    service.start()
    service.shutdown()
    with pytest.raises(ServiceStoppedError):
        service.submit("record", {})


def test_a_shut_down_service_leaves_none_of_its_threads_behind(make_service):
    """Workers, their deadline runner threads (after a job that failed too), the
    scheduler and the heartbeat have all ended when `shutdown()` returns."""
    before = set(threading.enumerate())
    service = make_service(workers=2, job_timeout=30)
    service.start()
    jobs = [service.submit(generator, {}) for generator in ("record", "fail", "record")]
    assert [wait_for(service, job.id).status for job in jobs] == [
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.SUCCEEDED,
    ]
    service.shutdown()
    assert [thread.name for thread in set(threading.enumerate()) - before] == []


def test_cancel_queued_job_is_immediate(service, gate, recorder):
    hold_worker(service, gate)
    job = service.submit("record", {"tag": "x"})
    cancelled = service.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    gate.release()
    follower = service.submit("record", {"tag": "y"})
    wait_for(service, follower.id)
    assert recorder.ran == ["y"]


def test_cancel_running_job_stops_at_next_checkpoint(service, gate):
    job = hold_worker(service, gate)
    flagged = service.cancel(job.id)
    assert flagged.status is JobStatus.RUNNING and flagged.cancel_requested
    assert wait_for(service, job.id).status is JobStatus.CANCELLED


def test_cancel_finished_job_raises(service):
    job = service.submit("record", {})
    wait_for(service, job.id)
    with pytest.raises(JobFinishedError):
        service.cancel(job.id)
    with pytest.raises(JobNotFoundError):
        service.cancel("no-such-job")


def test_a_generator_that_raises_fails_its_job_not_the_worker(service):
    failing = service.submit("fail", {})
    garbage = service.submit("garbage", {})
    healthy = service.submit("record", {"tag": "after"})
    failed = wait_for(service, failing.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == "RuntimeError: the model exploded"
    assert wait_for(service, garbage.id).status is JobStatus.FAILED
    assert wait_for(service, healthy.id).status is JobStatus.SUCCEEDED


def test_images_job_produces_a_result(service):
    job = service.submit("images", {"prompt": "tiny", "count": 2, "width": 64, "height": 64})
    done = wait_for(service, job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert [f["name"] for f in done.result_files] == ["image-01.png", "image-02.png"]
    assert done.progress.percent == 100
    with service.results.open(done.id, done.lease_epoch) as stream:
        assert stream.read(2) == b"PK"


def test_get_hides_other_owners_jobs(service):
    job = service.submit("record", {}, owner="alice")
    assert service.get(job.id, owner="alice").id == job.id
    with pytest.raises(JobNotFoundError):
        service.get(job.id, owner="bob")


def test_list_filters_by_status_and_pages(service):
    ids = [service.submit("record", {"tag": n}).id for n in range(3)]
    for job_id in ids:
        wait_for(service, job_id)
    page = service.list(limit=2)
    assert [j.id for j in page] == ids[:0:-1]
    rest = service.list(before_pk=page[-1].pk, limit=2)
    assert [j.id for j in rest] == ids[:1]
    assert service.list(statuses=[JobStatus.QUEUED]) == []


def _orphan(store, status: JobStatus, attempts: int) -> Job:
    """A row as a killed process leaves it."""
    job = store.insert(
        Job(
            pk=0,
            id=f"orphan-{status}-{attempts}",
            owner="anonymous",
            generator="record",
            params={"tag": f"{status}-{attempts}"},
            priority=Priority.NORMAL,
            status=JobStatus.QUEUED,
            created_at=datetime.now(UTC),
        )
    )
    if status is JobStatus.RUNNING:
        for _ in range(attempts):
            claimed = store.claim(job.id, "dead-worker", datetime.now(UTC))
            store.requeue(claimed)
        store.claim(job.id, "dead-worker", datetime.now(UTC))
    return job


def test_restart_requeues_queued_and_running_jobs(make_service, recorder):
    crashed = make_service()
    queued = _orphan(crashed.store, JobStatus.QUEUED, 0)
    running = _orphan(crashed.store, JobStatus.RUNNING, 0)
    restarted = make_service()
    restarted.start()
    assert wait_for(restarted, queued.id).status is JobStatus.SUCCEEDED
    retried = wait_for(restarted, running.id)
    assert (retried.status, retried.attempts) == (JobStatus.SUCCEEDED, 2)
    assert sorted(recorder.ran) == ["queued-0", "running-0"]


def test_restart_fails_a_job_that_exhausted_its_attempts(make_service):
    crashed = make_service()
    doomed = _orphan(crashed.store, JobStatus.RUNNING, 2)
    restarted = make_service(max_attempts=3)
    restarted.start()
    failed = restarted.get(doomed.id)
    assert failed.status is JobStatus.FAILED
    assert "JOB_MAX_ATTEMPTS" in failed.error


@pytest.mark.parametrize("attempts", [0, 2])  # run again; out of attempts, failed
def test_restart_deletes_what_the_dead_run_left_behind(make_service, attempts):
    crashed = make_service()
    orphan = _orphan(crashed.store, JobStatus.RUNNING, attempts)
    epoch = crashed.store.get(orphan.id).lease_epoch
    results = crashed.results
    results.files.put(orphan.id, epoch, 0, OutputFile("a.png", b"landed"))
    results.files.put_preview(orphan.id, epoch, b"\x89PNG", "image/png")
    results.save(orphan.id, epoch, [OutputFile("a.png", b"landed")], {})  # not yet recorded
    restarted = make_service(max_attempts=3)
    restarted.start()
    wait_for(restarted, orphan.id)
    assert results.files.list(orphan.id, epoch) == []
    with pytest.raises(FileNotFoundError):
        results.files.open_preview(orphan.id, epoch)
    with pytest.raises(FileNotFoundError):
        results.size(orphan.id, epoch)


def test_shutdown_timeout_requeues_the_running_job(make_service, gate):
    service = make_service()
    service.start()
    job = hold_worker(service, gate)
    service.shutdown(wait=True, timeout=0.1)
    assert service.store.get(job.id).status is JobStatus.QUEUED


def test_stats_report_counts_and_queue(service, gate):
    hold_worker(service, gate)
    service.submit("record", {}, priority=Priority.HIGH)
    stats = service.stats()
    assert stats["queue_size"] == 1 and stats["queue_capacity"] == 10
    assert stats["queued_by_priority"] == {"high": 1, "normal": 0, "low": 0}
    assert stats["active_workers"] == 1 and stats["workers"] == 1
    assert stats["total_requests"] == 2 and stats["running"] is True


def test_events_are_published_in_order(service):
    subscription = service.bus.subscribe()
    job = service.submit("record", {})
    wait_for(service, job.id)
    types = []
    while (event := subscription.get(timeout=1)) is not None:
        types.append((event.seq, event.type))
        if event.is_terminal:
            break
    assert [t for _, t in types] == ["queued", "started", "progress", "output", "succeeded"]
    assert [s for s, _ in types] == [1, 2, 3, 4, 5]


def test_a_principal_gets_its_tiers_ceiling_and_its_keys_quota_from_the_core(make_service, gate):
    """The admission policy lives in the core: any caller acting for a client gets it."""
    service = make_service(max_queued_per_key=2)
    service.start()
    hold_worker(service, gate)
    free = Principal("kim", Tier.FREE, key_id="k1")
    with pytest.raises(PriorityNotAllowedError):
        service.submit("record", {}, principal=free, priority=Priority.NORMAL)
    with pytest.raises(PriorityNotAllowedError):
        service.quote("record", {}, principal=free, priority=Priority.HIGH)
    first = service.submit("record", {}, principal=free)  # no priority asked: the ceiling
    assert (first.owner, first.priority) == ("kim", Priority.LOW)
    service.submit("record", {}, principal=free)
    with pytest.raises(TooManyJobsError):
        service.submit("record", {}, principal=free)
    with pytest.raises(TooManyJobsError):
        service.quote("record", {}, principal=free)


def test_the_anonymous_principal_is_normal_by_default_and_has_no_quota(make_service, gate):
    service = make_service(max_queued_per_key=1)
    service.start()
    hold_worker(service, gate)
    jobs = [service.submit("record", {}, principal=ANONYMOUS_PRINCIPAL) for _ in range(3)]
    assert {(job.owner, job.priority) for job in jobs} == {(ANONYMOUS, Priority.NORMAL)}
    high = service.submit("record", {}, principal=ANONYMOUS_PRINCIPAL, priority=Priority.HIGH)
    assert high.priority is Priority.HIGH
