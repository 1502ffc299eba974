"""API keys: who may submit jobs, as which owner, up to which priority.

A key looks like `gsk_<key_id>_<secret>`: `key_id` (8 hex digits) is public and names
the key in listings, logs and `revoke`; the secret is 32 random bytes. Only the SHA-256
of the whole key is stored. A fast hash is the right one here: bcrypt and friends slow
down guessing of *low-entropy passwords*; a 256-bit random secret cannot be guessed at
any speed, and a plain digest can be looked up through a unique index on every request
(docs/security.md says more).

A key's `name` is the owner of the jobs it submits, so rotating a key (create a new one
with the same name, then revoke the old) keeps the owner's jobs visible.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import PriorityNotAllowedError
from ..job import Priority
from ..notify.signing import new_secret
from ..store.tables import ApiKeyRow

ANONYMOUS = "anonymous"
KEY_PREFIX = "gsk_"
_KEY_PATTERN = re.compile(r"gsk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_CREATE_ATTEMPTS = 5

_table = ApiKeyRow.__table__
_columns = _table.c


class Tier(StrEnum):
    """A key's service level; its ceiling is the highest priority its jobs may ask for."""

    PREMIUM = "premium"
    STANDARD = "standard"
    FREE = "free"

    @property
    def ceiling(self) -> Priority:
        return _CEILINGS[self]


_CEILINGS = {Tier.PREMIUM: Priority.HIGH, Tier.STANDARD: Priority.NORMAL, Tier.FREE: Priority.LOW}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the owner of the jobs they touch, and their tier."""

    owner: str
    tier: Tier
    key_id: str | None = None  # None for the anonymous caller of AUTH_MODE=open
    default: Priority | None = None  # asked for nothing: this (None: the tier's ceiling)
    webhook_url: str | None = None  # the key's default webhook target
    admin: bool = False  # an operator: may steer the queue and every owner's jobs

    def priority_for(self, requested: Priority | None) -> Priority:
        """The priority a job gets: the default (the tier's ceiling unless said otherwise)
        unless another one no higher than the ceiling is asked for."""
        if requested is None:
            return self.default or self.tier.ceiling
        if requested < self.tier.ceiling:  # a smaller value runs sooner
            raise PriorityNotAllowedError(requested.label, self.tier.value, self.tier.ceiling.label)
        return requested

    def allowed_priorities(self) -> tuple[Priority, ...]:
        """The priorities this caller may ask for, highest first: its tier's ceiling and
        every one below it (what `priority_for` accepts)."""
        return tuple(priority for priority in Priority if priority >= self.tier.ceiling)

    def limits(
        self, requested: Priority | None, max_queued_per_key: int | None
    ) -> tuple[Priority, int | None]:
        """The admission policy for this caller: the priority its job gets (the tier's
        ceiling bounds it; PriorityNotAllowedError above) and how many queued jobs its
        owner may have (a key's owner: `max_queued_per_key`; open mode's one owner: no
        cap)."""
        return self.priority_for(requested), max_queued_per_key if self.key_id else None


def limits_for(
    principal: Principal | None,
    requested: Priority | None,
    owner: str,
    max_queued: int | None,
    max_queued_per_key: int | None,
) -> tuple[Priority, str, int | None]:
    """The priority, owner and queued-jobs cap of a submission: a principal's by the
    admission policy (`Principal.limits`), a trusted caller's (no principal) as it asks."""
    if principal is None:
        return requested or Priority.NORMAL, owner, max_queued
    priority, quota = principal.limits(requested, max_queued_per_key)
    return priority, principal.owner, quota


# Open mode has one owner on a trusted network: all three priorities are theirs to use
# (the product is about them), NORMAL unless they ask, and the operator's calls too.
ANONYMOUS_PRINCIPAL = Principal(ANONYMOUS, Tier.PREMIUM, default=Priority.NORMAL, admin=True)


@dataclass(frozen=True)
class ApiKey:
    """What is known about a key, without its secret."""

    key_id: str
    name: str
    tier: Tier
    created_at: datetime
    revoked_at: datetime | None
    webhook_url: str | None = None
    admin: bool = False

    @property
    def principal(self) -> Principal:
        return Principal(
            self.name, self.tier, self.key_id, webhook_url=self.webhook_url, admin=self.admin
        )


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The public id of a well-formed key, or None if `key` cannot be one of ours."""
    match = _KEY_PATTERN.fullmatch(key)
    return match.group(1) if match else None


def check_name(name: str) -> str:
    if not _NAME_PATTERN.fullmatch(name) or name == ANONYMOUS:
        raise ValueError(
            "a key name is 1-64 letters, digits or ._@- starting with a letter or digit, "
            f"and not {ANONYMOUS!r}"
        )
    return name


class KeyStore:
    """The `api_keys` table. Each method is one short transaction."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))

    def create(
        self, name: str, tier: Tier, *, webhook_url: str | None = None, admin: bool = False
    ) -> tuple[ApiKey, str]:
        """Store a new key, with a webhook signing secret of its own (`webhook_secrets`)
        and optionally a default webhook target; returns its record and the key itself
        (never stored)."""
        check_name(name)
        for _ in range(_CREATE_ATTEMPTS):
            key_id = secrets.token_hex(4)
            key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            values = {
                "key_id": key_id,
                "key_hash": hash_key(key),
                "name": name,
                "tier": tier.value,
                "created_at": self._clock(),
                "revoked_at": None,
                "webhook_url": webhook_url,
                "webhook_secret": new_secret(),
                "admin": admin,
            }
            try:
                with self._engine.begin() as connection:
                    connection.execute(insert(_table).values(values))
            except IntegrityError:  # a key_id collision (1 in 4 billion): draw again
                continue
            return _record(values), key
        raise RuntimeError("could not draw an unused key id")

    def authenticate(self, key: str) -> Principal | None:
        """The principal of a live key; None for a malformed, unknown or revoked one."""
        if key_id_of(key) is None:
            return None
        query = select(_table).where(
            _columns.key_hash == hash_key(key), _columns.revoked_at.is_(None)
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return _record(row._mapping).principal if row else None

    def get(self, key_id: str) -> ApiKey | None:
        with self._engine.connect() as connection:
            row = connection.execute(select(_table).where(_columns.key_id == key_id)).first()
        return _record(row._mapping) if row else None

    def all(self, *, include_revoked: bool = False) -> list[ApiKey]:
        query = select(_table).order_by(_columns.name, _columns.pk)
        if not include_revoked:
            query = query.where(_columns.revoked_at.is_(None))
        with self._engine.connect() as connection:
            return [_record(row._mapping) for row in connection.execute(query)]

    def webhook_secrets(self, key_id: str) -> list[str]:
        """The secrets that sign the key's webhooks: its own, then the one it replaced
        while the rotation's overlap lasts. A key made before webhooks gets its secret
        here, on first use (`rotate_webhook_secret` shows it). [] for an unknown key."""
        with self._engine.connect() as connection:
            row = connection.execute(select(_table).where(_columns.key_id == key_id)).first()
        if row is None:
            return []
        if row.webhook_secret is None:
            self._set_secret_if_missing(key_id)
            return self.webhook_secrets(key_id)
        secrets_now = [row.webhook_secret]
        until = row.webhook_previous_until
        if row.webhook_previous_secret and until is not None and until > self._clock():
            secrets_now.append(row.webhook_previous_secret)
        return secrets_now

    def rotate_webhook_secret(self, key_id: str, overlap: timedelta) -> str | None:
        """Give the key a new webhook signing secret and return it (shown once); the old
        one keeps signing too for `overlap`. None if there is no such key."""
        secret = new_secret()
        statement = (
            update(_table)
            .where(_columns.key_id == key_id)
            .values(
                webhook_previous_secret=_columns.webhook_secret,
                webhook_previous_until=self._clock() + overlap,
                webhook_secret=secret,
            )
        )
        with self._engine.begin() as connection:
            changed = connection.execute(statement).rowcount
        return secret if changed else None

    def set_webhook_url(self, key_id: str, url: str | None) -> ApiKey | None:
        """Set (or with None, clear) the key's default webhook target."""
        statement = (
            update(_table)
            .where(_columns.key_id == key_id)
            .values(webhook_url=url)
            .returning(*_table.c)
        )
        with self._engine.begin() as connection:
            row = connection.execute(statement).first()
        return _record(row._mapping) if row else None

    def _set_secret_if_missing(self, key_id: str) -> None:
        statement = (
            update(_table)
            .where(_columns.key_id == key_id, _columns.webhook_secret.is_(None))
            .values(webhook_secret=new_secret())
        )
        with self._engine.begin() as connection:
            connection.execute(statement)

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a live key at once; None if there is no live key with that id."""
        statement = (
            update(_table)
            .where(_columns.key_id == key_id, _columns.revoked_at.is_(None))
            .values(revoked_at=self._clock())
            .returning(*_table.c)
        )
        with self._engine.begin() as connection:
            row = connection.execute(statement).first()
        return _record(row._mapping) if row else None


def _record(values: Mapping[str, Any]) -> ApiKey:
    return ApiKey(
        key_id=values["key_id"],
        name=values["name"],
        tier=Tier(values["tier"]),
        created_at=values["created_at"],
        revoked_at=values["revoked_at"],
        webhook_url=values["webhook_url"],
        admin=bool(values["admin"]),
    )
