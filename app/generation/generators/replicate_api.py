"""A small client for Replicate's predictions HTTP API (and anything speaking it).

Every call has a timeout. Failures that are likely to pass (connection errors, 429 with
its `Retry-After`, 5xx) are retried with exponential backoff. Creating a prediction is
not idempotent, so a create whose request may have reached the server (a read timeout,
a connection dropped mid-answer) is not repeated: that could start, and bill, a second
prediction. Errors come out as `ReplicateError`, whose message is fit for the job's
`error` field.

The API token is sent only to the configured API base, never to the URLs that outputs
are downloaded from, and never logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
from urllib3.exceptions import NewConnectionError

from .base import GeneratorError

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
DOWNLOAD_CHUNK = 1024 * 1024

T = TypeVar("T")


class ReplicateError(GeneratorError):
    """The provider refused, failed, or could not be reached."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff_seconds: float = 0.5  # doubled after each failed attempt
    max_delay_seconds: float = 30.0  # also caps how long a Retry-After is honoured

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = self.backoff_seconds * 2 ** (attempt - 1)
        return min(self.max_delay_seconds, max(backoff, retry_after or 0.0))


DEFAULT_RETRY = RetryPolicy()
CANCEL_RETRY = RetryPolicy(attempts=3, backoff_seconds=0.2, max_delay_seconds=1.0)


class ReplicateClient:
    """One job's conversation with the API; `sleep` waits between attempts (and may
    raise to abandon them, e.g. on cancellation)."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        token: str,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout
        self._retry = retry
        self._sleep = sleep

    def create(self, params: dict[str, Any], wait_seconds: int = 0) -> dict[str, Any]:
        """Start a prediction from validated params; with `wait_seconds`, let the API hold
        the request that long (`Prefer: wait`) so that quick models finish in one call."""
        body: dict[str, Any] = {"input": params.get("input", {})}
        if "model" in params:
            url = f"{self._base}/models/{params['model']}/predictions"
        else:
            url = f"{self._base}/predictions"
            body["version"] = params["version"]
        headers = dict(self._auth)
        timeout = self._timeout
        if wait_seconds:
            headers["Prefer"] = f"wait={wait_seconds}"
            timeout = (timeout[0], timeout[1] + wait_seconds)
        return self._call(
            "POST",
            url,
            prediction_of,
            idempotent=False,
            json=body,
            headers=headers,
            timeout=timeout,
        )

    def get(self, prediction: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            "GET", self._api_url(prediction, "get"), prediction_of, headers=self._auth
        )

    def cancel(self, prediction: dict[str, Any]) -> None:
        """Ask the provider to stop. This runs once our job is already cancelled, so it
        waits between its few attempts with a plain, short sleep."""
        self._call(
            "POST",
            self._api_url(prediction, "cancel"),
            lambda response: None,
            headers=self._auth,
            retry=CANCEL_RETRY,
            sleep=time.sleep,
        )

    def download(self, url: str) -> bytes:
        """The bytes at an output URL (no credentials are sent with it)."""
        return self._call("GET", url, read_capped, stream=True)

    def _api_url(self, prediction: dict[str, Any], action: str) -> str:
        """The prediction's own URL for `action`, if it is under our API base (the token
        goes nowhere else); else the documented one built from its id."""
        given = (prediction.get("urls") or {}).get(action)
        if isinstance(given, str) and given.startswith(self._base + "/"):
            return given
        suffix = "/cancel" if action == "cancel" else ""
        return f"{self._base}/predictions/{prediction['id']}{suffix}"

    def _call(
        self,
        method: str,
        url: str,
        read: Callable[[requests.Response], T],
        *,
        idempotent: bool = True,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        **kwargs: Any,
    ) -> T:
        """One call, with retries, and `read` applied to its successful response."""
        retry = retry or self._retry
        kwargs.setdefault("timeout", self._timeout)
        for attempt in range(1, retry.attempts + 1):
            last = attempt == retry.attempts
            try:
                with self._session.request(method, url, **kwargs) as response:
                    if response.status_code == 429 or response.status_code >= 500:
                        if last:
                            raise ReplicateError(describe_refusal(response))
                        delay = retry.delay(attempt, retry_after_seconds(response))
                        log.warning(
                            "%s %s answered %d; retry in %.1fs",
                            method,
                            url,
                            response.status_code,
                            delay,
                        )
                    elif response.status_code >= 400:
                        raise ReplicateError(describe_refusal(response))
                    else:
                        return read(response)
            except requests.RequestException as error:
                if last or not (idempotent or never_sent(error)):
                    raise ReplicateError(describe_failure(method, url, error)) from None
                delay = retry.delay(attempt)
                log.warning("%s %s failed (%s); retry in %.1fs", method, url, error, delay)
            (sleep or self._sleep)(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")


def read_capped(response: requests.Response) -> bytes:
    """A streamed body, refused past MAX_DOWNLOAD_BYTES."""
    declared = int(response.headers.get("Content-Length") or 0)
    chunks, size = [], 0
    if declared <= MAX_DOWNLOAD_BYTES:
        for chunk in response.iter_content(DOWNLOAD_CHUNK):
            size += len(chunk)
            if size > MAX_DOWNLOAD_BYTES:
                break
            chunks.append(chunk)
    if max(declared, size) > MAX_DOWNLOAD_BYTES:
        raise ReplicateError(f"an output is larger than {MAX_DOWNLOAD_BYTES} bytes")
    return b"".join(chunks)


def prediction_of(response: requests.Response) -> dict[str, Any]:
    """The prediction object in a response, checked for the fields we rely on."""
    try:
        body = response.json()
    except ValueError:
        raise ReplicateError(
            f"malformed answer from the provider: not JSON ({response.text[:100]!r})"
        ) from None
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("id"), str)
        or not isinstance(body.get("status"), str)
    ):
        raise ReplicateError(
            "malformed answer from the provider: not a prediction (no id or status)"
        )
    return body


def never_sent(error: requests.RequestException) -> bool:
    """Whether a failed request certainly never reached the server (safe to repeat)."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError)


def retry_after_seconds(response: requests.Response) -> float | None:
    """`Retry-After` as seconds: a number or an HTTP date; None if absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def describe_refusal(response: requests.Response) -> str:
    """'provider answered 422 Unprocessable Entity: <its detail>' without echoing much."""
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            detail = str(body.get("detail") or body.get("title") or body.get("error") or "")
    except ValueError:
        detail = response.text.strip()
    text = f"provider answered {response.status_code} {response.reason or ''}".rstrip()
    return f"{text}: {detail[:300]}" if detail else text


def describe_failure(method: str, url: str, error: requests.RequestException) -> str:
    if isinstance(error, requests.Timeout):
        what = "did not answer in time"
    else:
        what = f"could not be reached ({type(error).__name__})"
    text = f"provider {what} for {method} {url}"
    if method == "POST" and not never_sent(error) and url.endswith("/predictions"):
        text += "; not retried, as the prediction may have been created"
    return text
