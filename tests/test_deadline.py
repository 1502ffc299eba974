"""Deadlines reuse their threads: one runner per caller thread, one thread for timers."""

import contextlib
import contextvars
import threading
import time

import pytest

from app.generation.execution.deadline import (
    DeadlineExceeded,
    call_with_deadline,
    deadline_timer,
    runner_thread_scope,
)

FIELD = contextvars.ContextVar("field", default="unset")


def call(target, seconds=5.0, grace=0.05, **hooks):
    hooks = {"on_expiry": lambda: None, "on_abandoned": lambda: None} | hooks
    return call_with_deadline(
        target, seconds=seconds, grace=grace, on_late_return=lambda: None, **hooks
    )


def wait_until(condition, timeout=5.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


def test_calls_of_one_thread_share_a_runner_thread_and_carry_its_context():
    FIELD.set("job-1")
    first = call(lambda: (threading.current_thread(), FIELD.get()))
    second = call(lambda: threading.current_thread())
    assert first == (second, "job-1")
    assert second is not threading.current_thread()
    with pytest.raises(ZeroDivisionError):
        call(lambda: 1 / 0)
    assert call(lambda: threading.current_thread()) is second


def test_an_abandoned_call_keeps_its_thread_until_it_returns_then_the_thread_exits():
    release, expired, abandoned = threading.Event(), threading.Event(), threading.Event()
    holder = []

    def stuck():
        holder.append(threading.current_thread())
        release.wait()

    with pytest.raises(DeadlineExceeded):
        call(stuck, seconds=0.05, on_expiry=expired.set, on_abandoned=abandoned.set)
    assert expired.is_set() and abandoned.is_set()
    fresh = call(lambda: threading.current_thread())
    assert fresh is not holder[0] and fresh.is_alive()
    release.set()
    wait_until(lambda: not holder[0].is_alive())


def runner_thread_then(last_call):
    """This thread's runner thread, after `last_call` ran on it (returning or raising)."""
    runner = call(threading.current_thread)
    with contextlib.suppress(ZeroDivisionError):
        call(last_call)
    return runner


@pytest.mark.parametrize("last_call", [lambda: None, lambda: 1 / 0], ids=["returned", "raised"])
def test_a_runner_thread_exits_with_its_caller(last_call):
    runners = []
    caller = threading.Thread(target=lambda: runners.append(runner_thread_then(last_call)))
    caller.start()
    caller.join()
    wait_until(lambda: not runners[0].is_alive())
    assert not runners[0].is_alive()


@pytest.mark.parametrize("last_call", [lambda: None, lambda: 1 / 0], ids=["returned", "raised"])
def test_a_runner_thread_has_exited_when_its_scope_ends(last_call):
    with runner_thread_scope():
        runner = runner_thread_then(last_call)
    assert not runner.is_alive()
    assert call(threading.current_thread) is not runner  # the next call gets a new one


def test_timers_fire_once_due_unless_the_block_ended_first():
    fired = []
    with deadline_timer(0.01, lambda: fired.append(threading.current_thread())):
        wait_until(lambda: fired)
    with deadline_timer(0.01, lambda: fired.append("late")):
        pass
    with deadline_timer(0.02, lambda: fired.append(threading.current_thread())):
        wait_until(lambda: len(fired) == 2)
    time.sleep(0.05)  # long past the cancelled timer's due time
    assert fired[0] is fired[1] and "late" not in fired  # one timer thread serves all
