"""One webhook attempt: POST the signed body to the approved address and tell what came
back. Short timeouts, no redirects, no retries here (the outbox schedules them), and only
the first bytes of the receiver's answer are read and kept.

urllib3 (already installed with requests) is imported on the first attempt: a process
whose jobs never ask for webhooks does not pay its memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .targets import Target

# How much of a receiver's answer is read, and kept (as the delivery's last_error).
SNIPPET_BYTES = 512
USER_AGENT = "generation-service-webhooks/1"


@dataclass(frozen=True)
class Answer:
    """What an attempt got: the HTTP status (None: no answer) and, unless delivered,
    what went wrong."""

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def post(
    target: Target,
    body: bytes,
    headers: dict[str, str],
    *,
    connect_timeout: float,
    read_timeout: float,
) -> Answer:
    """POST `body` to `target.address`, presenting `target.host` (Host header, TLS SNI and
    certificate check), so that the address checked is the one reached."""
    import urllib3  # see the module docstring

    pool = _pool(urllib3, target, urllib3.Timeout(connect=connect_timeout, read=read_timeout))
    host = target.host if ":" not in target.host else f"[{target.host}]"
    default_port = 443 if target.scheme == "https" else 80
    sent = headers | {
        "Host": host if target.port == default_port else f"{host}:{target.port}",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers=sent,
            redirect=False,
            retries=False,
            preload_content=False,
        )
        try:
            snippet = response.read(SNIPPET_BYTES)
        finally:
            response.release_conn()
    except urllib3.exceptions.HTTPError as error:
        return Answer(None, _describe(error))
    finally:
        pool.close()
    return _answer(response.status, snippet)


def _pool(urllib3: Any, target: Target, timeout: Any) -> Any:
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=timeout,
            maxsize=1,
            retries=False,
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    return urllib3.HTTPConnectionPool(
        target.address, target.port, timeout=timeout, maxsize=1, retries=False
    )


def _answer(status: int, snippet: bytes) -> Answer:
    if 200 <= status < 300:
        return Answer(status)
    text = snippet.decode("utf-8", "replace").strip()
    if 300 <= status < 400:
        # Followed, a redirect could lead anywhere the target check refused.
        return Answer(status, f"HTTP {status}: redirect not followed (webhooks never are)")
    return Answer(status, f"HTTP {status}: {text}" if text else f"HTTP {status}")


def _describe(error: Exception) -> str:
    """An attempt's failure in a line, without the URL (its query may hold a token)."""
    kind = type(error).__name__
    reason = getattr(error, "reason", None) or error
    text = str(reason)
    if "timed out" in text.lower():
        return f"{kind}: the receiver did not answer in time"
    if "refused" in text.lower():
        return f"{kind}: connection refused"
    return f"{kind}: {text.split(': ', 1)[-1][:200]}"
