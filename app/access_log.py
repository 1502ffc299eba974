"""gunicorn's access log as JSON: one object per request with named fields.

Behind Fly's proxy every connection comes from the proxy, so the client's address is
taken from the `Fly-Client-IP` header Fly adds (falling back to the peer address when
the header is absent, e.g. locally). The header is only trustworthy behind Fly's proxy,
which overwrites it; elsewhere a client could set it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import unquote_plus

from gunicorn.glogging import Logger

FLY_CLIENT_IP = "HTTP_FLY_CLIENT_IP"
# Query parameters that carry credentials: a WebSocket handshake's `token` (a minute of
# its key's access, app/web/auth.py), a signed link's `signature` (an hour of a result,
# app/web/links.py), and the names clients use by mistake for a key. Logs keep that the
# parameter was there, never its value: whoever reads logs must not be able to use them.
CREDENTIAL_PARAMETERS = frozenset(
    {"token", "signature", "access_token", "api_key", "apikey", "key", "password", "secret"}
)
REDACTED = "[redacted]"
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
    """The query string as sent, but for the values of credential parameters (whatever
    their case or percent-encoding), which become `[redacted]`."""
    if not query:
        return query
    return "&".join(_redacted_pair(pair) for pair in query.split("&"))


def _redacted_pair(pair: str) -> str:
    name, has_value, _ = pair.partition("=")
    if has_value and unquote_plus(name).strip().lower() in CREDENTIAL_PARAMETERS:
        return f"{name}={REDACTED}"
    return pair
