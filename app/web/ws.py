"""WebSocket endpoints: follow one job, or many over one connection (docs/websockets.md).

The handshake is authenticated like any API call (a Bearer key, or in a browser a
`?token=` from `POST /api/v1/tokens`); a socket follows only its caller's jobs, and
another owner's job is unknown to it, as over HTTP.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, request
from flask_sock import Sock
from simple_websocket import Server

from ..generation import JobNotFoundError
from ..generation.generators import whole_number
from ..wiring import get_service
from .auth import current_principal
from .feed import Feed, Message
from .handshake import check_handshake
from .sockets import BAD_REQUEST, NOT_FOUND, CloseWithError, SocketSession, error_message

bp = Blueprint("ws", __name__, url_prefix="/api/v1")
sock = Sock()

# Jobs one multiplexed socket may follow at once (a page shows a few dozen at most).
MAX_JOBS_PER_SOCKET = 100
SINCE_RULE = "since must be a non-negative integer: the last seq you received"


@bp.before_request
def authenticate() -> None:
    """Refuse a malformed handshake (400), then an unauthenticated caller (401), before
    upgrading; then wait for a turn to open (sockets.py)."""
    check_handshake(request)  # cheap, so before the turn: a bad handshake never waits
    current_app.extensions["sockets"].begin_opening()
    current_principal()
    # No permessage-deflate (simple-websocket accepts it whenever a client offers it, and
    # browsers always do): each socket would keep its own zlib streams, about 0.1 MB, and
    # compress every message alone, for messages of a few hundred bytes (docs/performance.md).
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


@bp.teardown_request
def end_opening(error: BaseException | None) -> None:
    current_app.extensions["sockets"].end_opening()


@sock.route("/jobs/<job_id>/events", bp=bp)
def job_events(ws: Server, job_id: str) -> None:
    """Follow one job: a snapshot (or the events missed since `?since=`), then its events
    until its outcome, then a normal close."""
    since = request.args.get("since")
    _session(ws).run(lambda feed: follow_one(feed, job_id, since), _ignore, until_done=True)


@sock.route("/events", bp=bp)
def events(ws: Server) -> None:
    """Follow the jobs the client subscribes to, all over this one connection."""
    _session(ws).run(lambda feed: [], handle_command, until_done=False)


def follow_one(feed: Feed, job_id: str, raw_since: str | None) -> list[Message]:
    try:
        return feed.follow(job_id, parse_since(raw_since))
    except ValueError as error:
        raise CloseWithError("bad_request", str(error), BAD_REQUEST) from None
    except JobNotFoundError as error:
        raise CloseWithError("not_found", str(error), NOT_FOUND, job_id) from None


def handle_command(feed: Feed, text: str) -> list[Message]:
    """Answer one client message: `subscribe` (job_id, optional since) or `unsubscribe`."""
    try:
        kind, job_id, since = _command(text)
    except (ValueError, RecursionError) as error:
        return [error_message("bad_request", str(error)[:200])]
    if kind == "unsubscribe":
        feed.unfollow(job_id)
        return []
    if feed.following >= MAX_JOBS_PER_SOCKET:
        message = f"one socket follows at most {MAX_JOBS_PER_SOCKET} jobs; unsubscribe first"
        return [error_message("too_many_jobs", message, job_id)]
    try:
        return feed.follow(job_id, since)
    except JobNotFoundError as error:
        return [error_message("not_found", str(error), job_id)]


def parse_since(raw: Any) -> int | None:
    """The `since` of a resume (None when absent); ValueError unless a whole number >= 0
    (as JSON means it: 4 and 4.0 alike; in a query string, its digits)."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        since = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None
    else:
        since = whole_number(raw, 0, 2**63 - 1)
    if since is None:
        raise ValueError(SINCE_RULE)
    return since


def _command(text: str) -> tuple[str, str, int | None]:
    command = json.loads(text)
    if not isinstance(command, dict) or command.get("type") not in ("subscribe", "unsubscribe"):
        raise ValueError('expected {"type": "subscribe" or "unsubscribe", "job_id": "..."}')
    job_id = command.get("job_id")
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 64:
        raise ValueError("job_id must be the id of a job")
    return command["type"], job_id, parse_since(command.get("since"))


def _session(ws: Server) -> SocketSession:
    interval = current_app.config["SERVICE_CONFIG"].ws_update_interval_ms / 1000
    service = get_service(current_app)
    feed = Feed(service, owner=current_principal().owner, update_interval=interval)
    return SocketSession(ws, feed, current_app.extensions["sockets"])


def _ignore(feed: Feed, text: str) -> list[Message]:
    return []
