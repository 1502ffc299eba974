"""The `replicate` generator: run a model on Replicate and keep every file it outputs.

Params: `{"model": "owner/name"}` (official models) or `{"version": "<id>"}`, plus
`"input": {...}`, the model's own inputs, passed through as they are.

A run creates the prediction (asking the API to hold the request a few seconds with
`Prefer: wait`, so quick models need no polling), polls it until it ends, reporting the
percentages its logs print, then downloads every output URL (or `data:` URI) into the
job's ZIP, with `prediction.json` describing the prediction. Cancelling the job cancels
the prediction at the provider, and so does any failure that abandons it mid-way.
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import requests

from .base import FieldErrors, Generator, GeneratorContext, OutputFile
from .replicate_api import DEFAULT_RETRY, ReplicateClient, ReplicateError, RetryPolicy

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
RUNNING = frozenset({"starting", "processing"})
ENDED = frozenset({"succeeded", "failed", "canceled", "aborted"})
MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
VERSION = re.compile(rf"(?:{MODEL.pattern}:)?[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}")
PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
STEPS = re.compile(r"\|\s*(\d+)/(\d+)\b")
SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
PROCESSING_SHARE = 90.0  # percent of the job's progress bar; downloads fill the rest
SLEEP_SLICE = 0.25  # cancellation is noticed within this while waiting


class ReplicateGenerator(Generator):
    name = "replicate"
    description = "Runs a model on Replicate's predictions API; the result holds every output file."
    cpu_bound = False

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout_seconds: float = 30.0,
        connect_timeout_seconds: float = 5.0,
        poll_seconds: float = 1.0,
        wait_seconds: int = 5,
        max_seconds: float = 3600.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not token:
            raise ValueError("the replicate generator needs an API token")
        self._token = token
        self._base = base_url.rstrip("/")
        self._timeout = (connect_timeout_seconds, timeout_seconds)
        self._poll = poll_seconds
        self._wait = wait_seconds
        self._max_seconds = max_seconds
        self._retry = retry
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:  # never the token
        return f"ReplicateGenerator(base_url={self._base!r})"

    def validate(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
        errors: FieldErrors = {}
        clean: dict[str, Any] = {}
        for unknown in sorted(set(params) - {"model", "version", "input"}):
            errors[unknown] = "unknown parameter"
        model, version = params.get("model"), params.get("version")
        if ("model" in params) == ("version" in params):
            errors["model"] = "give exactly one of model ('owner/name') or version"
        elif "model" in params:
            if isinstance(model, str) and MODEL.fullmatch(model):
                clean["model"] = model
            else:
                errors["model"] = "'owner/name', e.g. 'black-forest-labs/flux-schnell'"
        elif isinstance(version, str) and VERSION.fullmatch(version):
            clean["version"] = version
        else:
            errors["version"] = "a version id, or 'owner/name:version-id'"
        model_input = params.get("input", {})
        if isinstance(model_input, dict):
            clean["input"] = model_input
        else:
            errors["input"] = "an object holding the model's inputs"
        return clean, errors

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        started = self._clock()
        sleep = self._cancellable_sleep(context)
        with requests.Session() as session:
            client = ReplicateClient(
                session,
                self._base,
                self._token,
                timeout=self._timeout,
                retry=self._retry,
                sleep=sleep,
            )
            context.progress("starting", 0, "creating the prediction")
            prediction = client.create(dict(params), self._wait)
            prediction = self._follow(client, prediction, context, sleep, started)
            yield from self._outputs(client, prediction, context)

    def params_schema(self) -> dict[str, Any]:
        # The very expressions validate() uses, anchored: the document says what is taken.
        return {
            "type": "object",
            "additionalProperties": False,
            "oneOf": [{"required": ["model"]}, {"required": ["version"]}],
            "properties": {
                "model": {
                    "type": "string",
                    "pattern": f"^{MODEL.pattern}$",
                    "description": "owner/name",
                },
                "version": {
                    "type": "string",
                    "pattern": f"^{VERSION.pattern}$",
                    "description": "version id or owner/name:id",
                },
                "input": {"type": "object", "description": "the model's inputs", "default": {}},
            },
        }

    def _follow(
        self,
        client: ReplicateClient,
        prediction: dict[str, Any],
        context: GeneratorContext,
        sleep: Callable[[float], None],
        started: float,
    ) -> dict[str, Any]:
        """Poll until the prediction ends; return it if it succeeded, else raise. Whatever
        stops the polling early (our cancellation included) cancels it at the provider."""
        previewed = 0
        try:
            while prediction["status"] not in ENDED:
                if prediction["status"] not in RUNNING:
                    raise ReplicateError(
                        f"malformed answer from the provider: status {prediction['status']!r}"
                    )
                stage, percent, message, steps = progress_of(prediction)
                context.progress(stage, percent, message, step=steps[0], total=steps[1])
                previewed = preview_streamed(client, prediction, context, previewed)
                if self._clock() - started > self._max_seconds:
                    raise ReplicateError(
                        f"prediction {prediction['id']} did not finish within "
                        f"{self._max_seconds:.0f}s; cancelled it"
                    )
                sleep(self._poll)
                prediction = client.get(prediction)
        except Exception:  # includes JobCancelled
            cancel_quietly(client, prediction)
            raise
        if prediction["status"] == "succeeded":
            return prediction
        if prediction["status"] == "failed":
            reason = prediction.get("error") or "no reason given"
            raise ReplicateError(f"prediction {prediction['id']} failed: {str(reason)[:1000]}")
        raise ReplicateError(f"prediction {prediction['id']} was {prediction['status']}")

    def _outputs(
        self, client: ReplicateClient, prediction: dict[str, Any], context: GeneratorContext
    ) -> Iterator[OutputFile]:
        urls = output_urls(prediction.get("output"))
        for index, url in enumerate(urls, 1):
            context.check_cancelled()
            context.progress(
                "downloading",
                PROCESSING_SHARE + (100 - PROCESSING_SHARE) * (index - 1) / len(urls),
                f"output {index} of {len(urls)}",
                step=index - 1,
                total=len(urls),
            )
            data, suffix = fetch(client, url)
            yield OutputFile(f"output-{index:02d}{suffix}", data)
        yield OutputFile("prediction.json", json.dumps(summary(prediction), indent=2).encode())
        context.progress("downloading", 100, f"stored {len(urls)} output files")

    def _cancellable_sleep(self, context: GeneratorContext) -> Callable[[float], None]:
        def sleep(seconds: float) -> None:
            end = self._clock() + seconds
            while True:
                context.check_cancelled()
                left = end - self._clock()
                if left <= 0:
                    return
                self._sleep(min(left, SLEEP_SLICE))

        return sleep


def preview_streamed(
    client: ReplicateClient, prediction: dict[str, Any], context: GeneratorContext, seen: int
) -> int:
    """A streaming model lists outputs before it finishes: the newest one, if it is an
    image, becomes the job's preview. Returns how many outputs have been looked at; one
    that cannot be fetched is skipped (the final outputs are fetched again anyway)."""
    urls = output_urls(prediction.get("output"))
    if len(urls) <= seen:
        return seen
    try:
        data, suffix = fetch(client, urls[-1])
    except ReplicateError as error:
        log.info("no preview from prediction %s: %s", prediction.get("id"), error)
        return len(urls)
    kind = mimetypes.guess_type(f"output{suffix}")[0] or ""
    if kind.startswith("image/"):
        context.preview(data, kind)
    return len(urls)


def cancel_quietly(client: ReplicateClient, prediction: dict[str, Any]) -> None:
    """Forward a cancellation; a failure to do so is logged, never raised."""
    try:
        client.cancel(prediction)
    except ReplicateError as error:
        log.warning("could not cancel prediction %s: %s", prediction.get("id"), error)
    else:
        log.info("cancelled prediction %s at the provider", prediction.get("id"))


def progress_of(prediction: dict[str, Any]) -> tuple[str, float, str, tuple[int | None, ...]]:
    """(stage, percent, message, (step, total)) from a running prediction's logs."""
    logs = prediction.get("logs")
    text = logs if isinstance(logs, str) else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    percent, steps = 0.0, (None, None)
    for line in reversed(lines):
        match = PERCENT.search(line.split("|", 1)[0]) or PERCENT.search(line)
        if match:
            percent = min(100.0, float(match.group(1))) * PROCESSING_SHARE / 100
            counted = STEPS.search(line)
            steps = (int(counted.group(1)), int(counted.group(2))) if counted else steps
            break
    message = lines[-1][:200] if lines else prediction["status"]
    return prediction["status"], percent, message, steps


def output_urls(output: Any) -> list[str]:
    """Every http(s) URL and data: URI in an output, in order, however nested."""
    if isinstance(output, str):
        return [output] if output.startswith(("https://", "http://", "data:")) else []
    if isinstance(output, list):
        return [url for item in output for url in output_urls(item)]
    if isinstance(output, dict):
        return [url for item in output.values() for url in output_urls(item)]
    return []


def fetch(client: ReplicateClient, url: str) -> tuple[bytes, str]:
    """(bytes, file suffix) of one output."""
    if url.startswith("data:"):
        return decode_data_uri(url)
    suffix = PurePosixPath(urlsplit(url).path).suffix
    return client.download(url), suffix if SAFE_SUFFIX.fullmatch(suffix) else ""


def decode_data_uri(uri: str) -> tuple[bytes, str]:
    header, comma, payload = uri[len("data:") :].partition(",")
    if not comma:
        raise ReplicateError("malformed answer from the provider: a data URI without data")
    mime, *options = header.split(";")
    try:
        data = (
            base64.b64decode(payload, validate=True)
            if "base64" in options
            else unquote_to_bytes(payload)
        )
    except ValueError:
        raise ReplicateError("malformed answer from the provider: bad base64 output") from None
    suffix = mimetypes.guess_extension(mime.strip() or "text/plain") or ""
    return data, suffix if SAFE_SUFFIX.fullmatch(suffix) else ""


def summary(prediction: dict[str, Any]) -> dict[str, Any]:
    """What prediction.json keeps: identity, timing, metrics and output (data: URIs
    elided, their bytes are the output files)."""
    kept = (
        "id",
        "model",
        "version",
        "status",
        "created_at",
        "started_at",
        "completed_at",
        "metrics",
        "error",
    )
    document = {key: prediction.get(key) for key in kept if key in prediction}
    document["output"] = _elide_data(prediction.get("output"))
    return document


def _elide_data(output: Any) -> Any:
    if isinstance(output, str) and output.startswith("data:"):
        return "data:(stored as an output file)"
    if isinstance(output, list):
        return [_elide_data(item) for item in output]
    if isinstance(output, dict):
        return {key: _elide_data(item) for key, item in output.items()}
    return output
