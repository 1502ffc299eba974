"""Signed, expiring links to a job's files, preview and result ZIP.

An `<img>` tag or a download link cannot send a bearer key, so every such url the API
hands out (job documents, `GET …/files`, `output` and `preview` events) carries
`expires` (Unix seconds) and `signature`: an HMAC (itsdangerous, SHA-256, keyed by
SECRET_KEY) over the job's owner, the job, the resource and the expiry. A request with
a valid signature is served without a key, as the job's owner, for that one resource; a
request without one is checked as any other. A signature that does not match, or has
expired, is refused (403) unless the request authenticates by itself.

Links live `RESULT_URL_TTL_SECONDS` (default an hour) and never beyond the result's
retention (RESULT_TTL_HOURS after the job finished), like Replicate's result urls.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from flask import Flask, Request, current_app
from itsdangerous import Signer

from ..generation import Job
from .errors import ApiError

LINKS_EXTENSION = "links"
_SALT = "result-link"
# The endpoints a signed link may open, and the resource each names.
SIGNED_ENDPOINTS = {"api.get_file": "file", "api.get_preview": "preview", "api.get_result": "zip"}


@dataclass(frozen=True)
class LinkSigner:
    secret: str
    ttl_seconds: int
    result_ttl: timedelta | None

    def sign(
        self,
        url: str,
        owner: str,
        job_id: str,
        resource: str,
        finished_at: datetime | None = None,
    ) -> str:
        """`url` with the query that lets it be fetched without a key until it expires
        (`finished_at`: when the job ended, if it has, for the result's retention)."""
        expires = self.expiry(time.time(), finished_at)
        signature = self._signer.get_signature(_message(owner, job_id, resource, expires))
        return f"{url}?expires={expires}&signature={signature.decode()}"

    def sign_for(self, url: str, job: Job, resource: str) -> str:
        return self.sign(url, job.owner, job.id, resource, job.finished_at)

    def expiry(self, now: float, finished_at: datetime | None = None) -> int:
        expires = now + self.ttl_seconds
        if self.result_ttl is not None:  # not past the retention, or a finish from now
            ends = finished_at.timestamp() if finished_at is not None else now
            expires = min(expires, ends + self.result_ttl.total_seconds())
        return int(expires)

    def check(self, job: Job, resource: str, expires: str, signature: str) -> None:
        """Nothing if the link is good; ApiError 403 saying why it is not."""
        if not expires.isdigit() or len(expires) > 12 or len(signature) > 128:
            raise _refused("the link is malformed")
        message = _message(job.owner, job.id, resource, int(expires))
        if not self._signer.verify_signature(message, signature.encode()):  # constant time
            raise _refused("the link's signature does not match")
        if int(expires) < time.time():
            raise _refused("the link has expired: ask for the job again for a fresh one")

    @cached_property
    def _signer(self) -> Signer:
        return Signer(self.secret, salt=_SALT, digest_method=hashlib.sha256)


def init_links(app: Flask, ttl_seconds: int, result_ttl: timedelta | None) -> None:
    app.extensions[LINKS_EXTENSION] = LinkSigner(str(app.secret_key), ttl_seconds, result_ttl)


def links() -> LinkSigner:
    return current_app.extensions[LINKS_EXTENSION]


def is_signed(request: Request) -> bool:
    return request.endpoint in SIGNED_ENDPOINTS and "signature" in request.args


def resource_of(request: Request) -> str:
    """What a signed request names: `file:<name>`, `preview` or `zip`."""
    kind = SIGNED_ENDPOINTS[str(request.endpoint)]
    name = (request.view_args or {}).get("name", "")
    return f"file:{name}" if kind == "file" else kind


def _message(owner: str, job_id: str, resource: str, expires: int) -> bytes:
    return "\x00".join((owner, job_id, resource, str(expires))).encode()


def _refused(message: str) -> ApiError:
    return ApiError(403, "invalid_link", message)
