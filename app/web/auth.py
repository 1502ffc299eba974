"""Who is calling: an API key, a short-lived WebSocket token, or nobody in particular.

`AUTH_MODE=open` (local use): every caller is the one anonymous owner, at the NORMAL
ceiling. `AUTH_MODE=keys`: every API request carries `Authorization: Bearer <key>`.
Browsers cannot set headers on a WebSocket, so a page first asks `POST /api/v1/tokens`
(with its key) for a token that is valid for `TOKEN_MAX_AGE` seconds, and opens the
socket with `?token=...`. Tokens are accepted on WebSocket handshakes only: query
strings end up in access logs, and a token that expires in a minute is not worth much
to whoever reads them later. A token names its key, so revoking the key voids it too.
"""

from __future__ import annotations

import logging

from flask import Flask, Request, current_app, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..generation.intake.keys import ANONYMOUS_PRINCIPAL, KeyStore, Principal, Tier, key_id_of
from ..wiring import get_service
from .errors import ApiError
from .links import is_signed, links, resource_of
from .parsing import JOB_ID

log = logging.getLogger(__name__)

KEYS_EXTENSION = "keys"
TOKEN_MAX_AGE = 60
_TOKEN_SALT = "websocket-token"
_MAX_CREDENTIAL_LENGTH = 512


def init_auth(app: Flask, keys: KeyStore) -> None:
    app.extensions[KEYS_EXTENSION] = keys


def current_principal() -> Principal:
    """The caller of this request, authenticated once and remembered for the request."""
    # Each use of a Flask context proxy costs about 2 µs: a view asks several times.
    scope = g._get_current_object()
    principal = scope.get("principal")
    if principal is None:
        principal = scope.principal = _authenticate_current()
    return principal


def _authenticate_current() -> Principal:
    current = request._get_current_object()
    if is_signed(current):
        principal = _principal_from_link(current)
        if principal is not None:
            return principal
    if not _keys_required():  # open mode: no header to look at
        return ANONYMOUS_PRINCIPAL
    return authenticate(current, allow_token=is_websocket_handshake(current))


def _principal_from_link(request: Request) -> Principal | None:
    """The owner of the job a signed link (links.py) opens, for that one resource; None
    when the link is bad but the request can authenticate by itself (a key, open mode);
    ApiError 403 when it cannot."""
    job_id = (request.view_args or {}).get("job_id", "")
    job = get_service(current_app).store.get(job_id) if JOB_ID.fullmatch(job_id) else None
    try:
        if job is None:
            raise ApiError(403, "invalid_link", "the link's signature does not match")
        links().check(
            job,
            resource_of(request),
            request.args.get("expires", ""),
            request.args.get("signature", ""),
        )
    except ApiError:
        if _bearer(request) is not None or not _keys_required():
            return None
        raise
    # Reads this one resource as the job's owner: the only thing a link can do.
    return Principal(job.owner, Tier.FREE)


def authenticate(request: Request, *, allow_token: bool = False) -> Principal:
    """The principal behind `request`, or ApiError 401. `allow_token` also accepts a
    token from `POST /api/v1/tokens` in the `token` query parameter."""
    if not _keys_required():
        return ANONYMOUS_PRINCIPAL
    key = _bearer(request)
    if key is not None:
        principal = _keys().authenticate(key)
        if principal is None:
            log.info("rejected API key %s from %s", key_id_of(key) or "(malformed)", _client())
            raise _unauthorized("the API key is not valid or has been revoked", "invalid_token")
        return principal
    token = request.args.get("token") if allow_token else None
    if token:
        return _principal_from_token(token)
    raise _unauthorized("an API key is required: send Authorization: Bearer <key>")


def authenticate_websocket(request: Request) -> Principal:
    """For WebSocket handlers: the Bearer header or a `?token=` from `mint_token`."""
    return authenticate(request, allow_token=True)


def mint_token(principal: Principal) -> str:
    """A token that authenticates a WebSocket handshake as `principal` for a minute."""
    return _serializer().dumps({"key": principal.key_id})


def is_websocket_handshake(request: Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _principal_from_token(token: str) -> Principal:
    try:
        claims = _serializer().loads(token[:_MAX_CREDENTIAL_LENGTH], max_age=TOKEN_MAX_AGE)
    except BadSignature:  # includes SignatureExpired
        raise _unauthorized("the token is not valid or has expired", "invalid_token") from None
    key = _keys().get(str(claims.get("key"))) if isinstance(claims, dict) else None
    if key is None or key.revoked_at is not None:
        raise _unauthorized("the token's API key has been revoked", "invalid_token")
    return key.principal


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()[:_MAX_CREDENTIAL_LENGTH]


def _unauthorized(message: str, error: str | None = None) -> ApiError:
    challenge = 'Bearer realm="api"' + (f', error="{error}"' if error else "")
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=_TOKEN_SALT)  # type: ignore[arg-type]


def _keys_required() -> bool:
    return current_app.config["SERVICE_CONFIG"].requires_keys


def _keys() -> KeyStore:
    return current_app.extensions[KEYS_EXTENSION]


def _client() -> str:
    return request.remote_addr or "unknown"
