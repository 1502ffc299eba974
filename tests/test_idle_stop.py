"""Idle stop (IDLE_STOP_SECONDS): a process with nothing to do for that long stops, and
a job submitted while it stops is refused before its row is written or run."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy.exc import OperationalError

from app.config import Config, ConfigError
from app.generation import JobStatus, ServiceStoppedError
from app.generation.intake.gate import AdmissionGate
from app.generation.ops.idle import IdleStop

from .conftest import hold_worker, wait_for
from .servers import gunicorn
from .test_gunicorn import APP, ENV, log_records


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def idle_stop(work: list[str | None], local: list[str | None] | None = None):
    """An IdleStop of 60 s over scripted answers (the last one repeats), recording stops."""
    clock, gate, stops = Clock(), AdmissionGate(), []

    def scripted(answers):
        return lambda: answers.pop(0) if len(answers) > 1 else answers[0]

    idle = IdleStop(60, work_left=scripted(work), gate=gate, clock=clock)
    idle.local = scripted(local or [None])
    idle.on_idle = stops.append
    return idle, clock, gate, stops


def test_it_stops_after_the_whole_period_with_nothing_to_do():
    idle, clock, gate, stops = idle_stop(work=["jobs queued or running", None])
    assert idle.check() is False and idle.idle_for() == 0  # busy
    assert idle.check() is False  # idle from now
    clock.now += 59
    assert idle.check() is False and idle.idle_for() == 59
    clock.now += 1
    assert idle.check() is True
    assert stops and "idle for 60 s" in stops[0]
    assert gate.closed  # submissions are refused from the decision on
    with pytest.raises(ServiceStoppedError):
        gate.check()


def test_any_activity_starts_the_period_again():
    idle, clock, _, stops = idle_stop(work=[None], local=[None, "1 WebSockets open", None])
    idle.check()
    clock.now += 50
    idle.check()  # a socket: busy
    clock.now += 50
    idle.check()  # idle again, from now
    clock.now += 30
    assert idle.check() is False and stops == []


def test_work_that_arrives_while_it_decides_calls_the_stop_off():
    # Idle for the whole period, but the second look (gate closed) finds a job.
    idle, clock, gate, stops = idle_stop(work=[None, None, "jobs queued or running", None])
    idle.check()
    clock.now += 60
    assert idle.check() is False and stops == []
    assert not gate.closed  # reopened: the job runs here
    with gate.admitting():
        pass


def test_a_submission_inside_the_gate_is_waited_for_and_then_seen(service, monkeypatch, gate):
    """The race: a submit has passed its checks but not written its row when the idle
    stop decides. Closing the gate waits for it; the second look sees its row; the
    stop is called off and the job runs."""
    stops = []

    def queued() -> str | None:  # the running holder does not count here
        return "jobs queued" if service.list(statuses=[JobStatus.QUEUED]) else None

    idle = IdleStop(0.01, work_left=queued, gate=service._intake.gate)
    idle.on_idle = stops.append
    admission = service._intake._admission
    writing, release = threading.Event(), threading.Event()
    accept = admission.accept

    def slow_accept(*args, **kwargs):
        writing.set()
        release.wait(5)
        return accept(*args, **kwargs)

    monkeypatch.setattr(admission, "accept", slow_accept)
    hold_worker(service, gate)  # so the job stays queued for the second look
    jobs, decisions = [], []
    submitter = threading.Thread(target=lambda: jobs.append(service.submit("record", {})))
    submitter.start()
    assert writing.wait(5)
    idle.check()  # idle from now (the row is not written yet)
    time.sleep(0.02)
    decider = threading.Thread(target=lambda: decisions.append(idle.check()))
    decider.start()
    time.sleep(0.2)
    assert decider.is_alive()  # closing the gate waits for the submission inside
    release.set()
    submitter.join(5)
    decider.join(5)
    (job,) = jobs
    assert decisions == [False] and stops == []  # called off: the second look saw the job
    assert not service._intake.gate.closed
    gate.release()
    assert wait_for(service, job.id).status is JobStatus.SUCCEEDED


def test_a_submission_after_the_decision_is_refused_with_a_retryable_503(service, call):
    service._intake.gate.close("the machine is stopping: idle; retry shortly", 1)
    refused = call("POST", "/api/v1/jobs", json={"generator": "noop", "params": {}})
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "unavailable"
    assert int(refused.headers["Retry-After"]) > 0
    assert service.list() == []  # nothing was written


def test_a_job_running_on_another_machine_keeps_this_one_up(make_pg_service, gate):
    one = make_pg_service("one", idle_stop_seconds=1)
    two = make_pg_service("two", idle_stop_seconds=1)
    stops = []
    one.ops.idle.on_idle = stops.append
    running = hold_worker(two, gate)
    assert one.ops.idle.check() is False
    time.sleep(1.1)
    assert one.ops.idle.check() is False and stops == []  # the cluster still works
    gate.release()
    wait_for(two, running.id)
    one.ops.idle.check()
    time.sleep(1.1)
    assert one.ops.idle.check() is True and len(stops) == 1


def test_idle_stop_needs_one_process_per_machine():
    with pytest.raises(ConfigError, match="IDLE_STOP_SECONDS needs WEB_CONCURRENCY=1"):
        Config.from_env(
            {
                "IDLE_STOP_SECONDS": "60",
                "WEB_CONCURRENCY": "2",
                "DATABASE_URL": "postgresql://x@127.0.0.1/x",
            },
            dotenv=False,
        )


def test_an_idle_server_exits_by_itself_and_says_why(tmp_path):
    env = ENV | {"IDLE_STOP_SECONDS": "2"}
    with gunicorn(tmp_path, env, app=APP) as server:
        started = time.monotonic()
        code = server.process.wait(timeout=30)
        took = time.monotonic() - started
    assert code == 0 and took >= 2  # a clean exit: Fly leaves the machine stopped
    stops = [r for r in log_records(server) if r["message"].startswith("stopping this process")]
    assert stops and "idle for 2 s" in stops[0]["message"]


def test_a_database_that_does_not_answer_is_not_idleness():
    def unreachable():
        raise OperationalError("SELECT 1", {}, ConnectionError("refused"))

    clock, gate, stops = Clock(), AdmissionGate(), []
    idle = IdleStop(60, work_left=unreachable, gate=gate, clock=clock)
    idle.on_idle = stops.append
    idle.check()
    clock.now += 120
    assert idle.check() is False and stops == [] and not gate.closed
