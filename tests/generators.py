"""Generators made for tests: each exercises one behaviour of the service."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from app.generation.generators import FieldErrors, Generator, GeneratorContext, OutputFile
from app.generation.generators.images import render_png


class _Simple(Generator):
    def validate(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
        return dict(params), {}


class RecordingGenerator(_Simple):
    """Records the `tag` param of each job it runs, in order."""

    name = "record"

    def __init__(self) -> None:
        self.ran: list[Any] = []
        self._lock = threading.Lock()

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        with self._lock:
            self.ran.append(params.get("tag"))
        context.progress("working", 50, "half way", step=1, total=2)
        yield OutputFile("out.txt", str(params.get("tag")).encode())


class GateGenerator(_Simple):
    """Holds its worker until `release()`, checking for cancellation while it waits."""

    name = "gate"

    def __init__(self) -> None:
        self.started = threading.Event()
        self._open = threading.Event()

    def release(self) -> None:
        self._open.set()

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        self.started.set()
        while not self._open.wait(0.01):
            context.check_cancelled()
        yield OutputFile("gate.txt", b"opened")


class FailingGenerator(_Simple):
    name = "fail"

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        context.progress("working", 10, "about to fail")
        raise RuntimeError("the model exploded")
        yield  # pragma: no cover - makes this a generator function


class GarbageGenerator(_Simple):
    name = "garbage"

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Any:
        return ["not an OutputFile"]


class SleepGenerator(_Simple):
    """Works for `seconds` (default 0.1) in small steps, reporting progress and
    honouring cancellation between steps, like a well-behaved slow model."""

    name = "sleep"
    STEP = 0.05

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        seconds = float(params.get("seconds", 0.1))
        steps = max(1, round(seconds / self.STEP))
        for step in range(1, steps + 1):
            context.check_cancelled()
            time.sleep(seconds / steps)
            context.progress("sleeping", 100 * step / steps, step=step, total=steps)
        yield OutputFile("slept.txt", f"{seconds}".encode())


class HangingGenerator(_Simple):
    """Blocks without ever checking for cancellation, like a stuck native call."""

    name = "hang"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.unblock = threading.Event()

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        self.started.set()
        self.unblock.wait()
        context.progress("working", 90, "woke up long after the deadline")
        yield OutputFile("late.txt", b"too late")


class FileGateGenerator(_Simple):
    """Waits until the file named by the `path` param exists (usable across processes)."""

    name = "wait_file"

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        path = Path(str(params["path"]))
        while not path.exists():
            context.check_cancelled()
            time.sleep(0.01)
        yield OutputFile("done.txt", b"the file appeared")


class BlobGenerator(_Simple):
    """Produces `megabytes` of incompressible bytes, for downloads that take a while."""

    name = "blob"

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        yield OutputFile("blob.bin", os.urandom(int(params.get("megabytes", 1)) * 1024 * 1024))


class StepperGenerator(_Simple):
    """Takes `steps` steps (default 4), one per `advance()`, reporting progress after each."""

    name = "stepper"

    def __init__(self) -> None:
        self.started = threading.Event()
        self._steps = threading.Semaphore(0)

    def advance(self, steps: int = 1) -> None:
        self._steps.release(steps)

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        self.started.set()
        total = params.get("steps", 4)
        for step in range(1, total + 1):
            while not self._steps.acquire(timeout=0.01):
                context.check_cancelled()
            context.progress("stepping", 100 * step / total, f"step {step}", step=step, total=total)
        yield OutputFile("steps.txt", str(total).encode())


class PacedImagesGenerator(_Simple):
    """Renders `count` small PNGs (default 4), previewing each first; image 2 onwards
    waits for an `advance()`, so a test sees the files land one by one."""

    name = "paced"

    def __init__(self) -> None:
        self.rendered = 0
        self._steps = threading.Semaphore(0)

    def advance(self, images: int = 1) -> None:
        self._steps.release(images)

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        for index in range(params.get("count", 4)):
            if index:
                while not self._steps.acquire(timeout=0.01):
                    context.check_cancelled()
            context.preview(render_png("paced", 1, index, 16, 16))
            png = render_png("paced", 1, index, 64, 48)
            self.rendered = index + 1
            yield OutputFile(f"image-{index + 1:02d}.png", png)


class ChattyGenerator(_Simple):
    """Reports progress `updates` times with long messages, as fast as it can."""

    name = "chatty"

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        updates = params.get("updates", 1000)
        padding = "x" * 450
        for update in range(1, updates + 1):
            context.progress("talking", 100 * update / updates, f"{update} {padding}")
        yield OutputFile("chatty.txt", b"done")


class CountingGenerator(_Simple):
    """Appends "<job> <node>" to `executions` each time it starts a job, so tests can
    count executions across processes; then waits for the file `until` names, if any,
    and sleeps `ms` in `steps` reported steps."""

    name = "count"

    def __init__(self, executions: Path, node: str) -> None:
        self._executions = executions
        self._node = node

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        with self._executions.open("a") as log:
            log.write(f"{params['job']} {self._node}\n")
        if "until" in params:
            while not Path(params["until"]).exists():
                context.check_cancelled()
                time.sleep(0.01)
        steps = int(params.get("steps", 1))
        for step in range(1, steps + 1):
            time.sleep(int(params.get("ms", 0)) / 1000 / steps)
            context.check_cancelled()
            context.progress("counting", 100 * step / steps, step=step, total=steps)
        yield OutputFile("count.txt", str(params["job"]).encode())
