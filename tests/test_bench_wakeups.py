"""bench/wakeups.py's reading of `perf script`: how long a generation process kept a CPU
after a web or client thread woke onto it."""

import pytest

from bench.wakeups import held_after_wakeups, summarise

CHILD, OTHER, WEB, CLIENT = 500, 600, 101, 201


def switch(cpu: int, when: float, prev: int, to: int) -> str:
    return (
        f" {prev}/{prev} [{cpu:03d}] {when:.6f}: sched:sched_switch: prev_comm=x "
        f"prev_pid={prev} prev_prio=120 prev_state=R ==> next_comm=y next_pid={to} next_prio=120"
    )


def wakeup(cpu: int, when: float, woken: int) -> str:
    return (
        f" 1/1 [{cpu:03d}] {when:.6f}: sched:sched_wakeup: comm=python pid={woken} prio=120 "
        f"target_cpu={cpu:03d}"
    )


def held(*lines: str) -> dict[str, list[float]]:
    threads = {"web": {WEB}, "client": {CLIENT}}
    return held_after_wakeups("\n".join(lines), threads, {CHILD})


def test_a_wakeup_onto_a_generation_cpu_counts_until_that_cpu_switches():
    figures = held(
        switch(0, 1.000, WEB, CHILD),
        wakeup(0, 1.001, WEB),
        switch(1, 1.002, 7, 8),  # another CPU: no end
        switch(0, 1.005, CHILD, WEB),
    )
    assert figures["web"] == [pytest.approx(4.0)]
    assert figures["client"] == []


def test_wakeups_onto_other_tasks_cpus_and_of_other_threads_do_not_count():
    figures = held(
        switch(0, 1.000, WEB, OTHER),
        wakeup(0, 1.001, CLIENT),  # the CPU runs something else
        switch(1, 1.000, 9, CHILD),
        wakeup(1, 1.001, 999),  # not a thread we follow
        switch(0, 1.010, OTHER, CLIENT),
        switch(1, 1.010, CHILD, 999),
    )
    assert figures == {"web": [], "client": []}


def test_the_first_wakeup_onto_a_held_cpu_starts_the_clock():
    figures = held(
        switch(0, 1.000, 9, CHILD),
        wakeup(0, 1.000, CLIENT),
        wakeup(0, 1.002, WEB),
        switch(0, 1.003, CHILD, CLIENT),
    )
    assert figures["client"] == [pytest.approx(3.0)]
    assert figures["web"] == []


def test_summary_counts_the_share_held_over_a_millisecond():
    assert summarise([0.008, 0.004, 3.9, 0.006]) == {
        "wakeups": 4,
        "held_over_1ms_pct": 25.0,
        "p50_ms": 0.007,
        "p99_ms": 3.9,
        "max_ms": 3.9,
    }
    assert summarise([]) == {"wakeups": 0}
