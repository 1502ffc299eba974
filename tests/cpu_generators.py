"""cpu_bound generators made for tests. They run in worker processes, so each is a
module-level class without state: the child process unpickles it by import path."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from app.generation.generators import (
    FieldErrors,
    Generator,
    GeneratorContext,
    GeneratorError,
    OutputFile,
)


class _CpuBound(Generator):
    cpu_bound = True

    def validate(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
        return dict(params), {}


class WhereGenerator(_CpuBound):
    """Reports progress `steps` times, checking for cancellation between steps, then
    writes the id of the process it ran in."""

    name = "where"

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        steps = params.get("steps", 3)
        for step in range(steps):
            context.check_cancelled()
            context.progress("spinning", 100 * step / steps, f"step {step}", step=step, total=steps)
            time.sleep(params.get("pause", 0))
        yield OutputFile("pid.txt", str(os.getpid()).encode())


class PolicyGenerator(_CpuBound):
    """Writes the scheduling policy of the thread it runs in and of a thread it starts."""

    name = "policy"

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        seen: list[int] = []
        helper = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
        helper.start()
        helper.join()
        policies = {"main": os.sched_getscheduler(0), "thread": seen[0]}
        yield OutputFile("policies.json", json.dumps(policies).encode())


class CrashGenerator(_CpuBound):
    """Dies the way an out-of-memory kill looks: SIGKILL, no goodbye."""

    name = "crash"

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        context.progress("crashing", 10)
        os.kill(os.getpid(), signal.SIGKILL)
        yield OutputFile("never.txt", b"")  # pragma: no cover


class StubbornGenerator(_CpuBound):
    """Never checks for cancellation."""

    name = "stubborn"

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        context.progress("ignoring", 1)
        time.sleep(params.get("seconds", 60))
        yield OutputFile("late.txt", b"late")


class BrokenCpuGenerator(_CpuBound):
    """Fails: with a GeneratorError when asked politely, with a ValueError otherwise."""

    name = "broken-cpu"

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        yield OutputFile("first.txt", b"1")
        if params.get("polite"):
            raise GeneratorError("the provider said no")
        raise ValueError("bad pixel")
