"""gunicorn's access log as JSON: one object per request with named fields.

Behind Fly's proxy every connection comes from the proxy, so the client's address is
taken from the `Fly-Client-IP` header Fly adds (falling back to the peer address when
the header is absent, e.g. locally). The header is only trustworthy behind Fly's proxy,
which overwrites it; elsewhere a client could set it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger

FLY_CLIENT_IP = "HTTP_FLY_CLIENT_IP"
# A signed link's signature opens a result for an hour to whoever reads it (app/web/links.py):
# logs keep that it had one, not its value.
_SIGNATURE = re.compile(r"(^|&)signature=[^&]*")
REQUEST_ID_HEADER = "x-request-id"


class JsonAccessLogger(Logger):
    """gunicorn's `Logger`, except that each access line is a record with fields."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        fields = access_fields(resp, environ, request_time)
        self.access_log.info(
            "%s %s %s", fields["method"], fields["path"], fields["status"], extra=fields
        )


def access_fields(resp: Any, environ: dict[str, Any], request_time: timedelta) -> dict[str, Any]:
    status = resp.status
    if isinstance(status, str):
        status = status.split(None, 1)[0]
    headers = {name.lower(): value for name, value in resp.headers}
    return {
        "method": environ.get("REQUEST_METHOD"),
        "path": environ.get("PATH_INFO"),
        "query": redacted(environ.get("QUERY_STRING")) or None,
        "status": int(status),
        "bytes": getattr(resp, "sent", None),
        "duration_ms": round(request_time.total_seconds() * 1000, 1),
        "client_ip": environ.get(FLY_CLIENT_IP) or environ.get("REMOTE_ADDR"),
        "user_agent": environ.get("HTTP_USER_AGENT"),
        "request_id": headers.get(REQUEST_ID_HEADER),
    }


def redacted(query: str | None) -> str | None:
    """The query string without the value of a signed link's signature."""
    return _SIGNATURE.sub(r"\1signature=[redacted]", query) if query else query
