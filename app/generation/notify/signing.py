"""Signing webhook deliveries to the Standard Webhooks spec (https://www.standardwebhooks.com).

A receiver checks three headers: `webhook-id` (the message id, so a redelivery can be
recognised), `webhook-timestamp` (Unix seconds, so an old capture cannot be replayed)
and `webhook-signature` (HMAC-SHA256 over `id.timestamp.body`). Following the spec
rather than inventing a scheme lets receivers verify with any Standard Webhooks library.

Secrets look like `whsec_<base64 of the key bytes>`. During a rotation more than one
secret is live; every delivery then carries one signature per secret, so a receiver
holding either the new or the previous secret verifies throughout the overlap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from secrets import token_bytes

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
# 128 bits is the least a signing key should have; new secrets get 256.
_MIN_SECRET_BYTES = 16
_NEW_SECRET_BYTES = 32
# The derivation's label: a derived key is good for webhook signing and nothing else, so
# it reveals nothing about the application secret or keys derived for other purposes.
_DERIVATION_LABEL = b"generation-service webhook signing"


def new_secret() -> str:
    """A fresh random signing secret, in the `whsec_` form receivers' libraries expect."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(_NEW_SECRET_BYTES)).decode()


def is_secret(value: str) -> bool:
    """Whether `value` is a usable signing secret: `whsec_` and strict base64 of >= 16 bytes.

    Strict, unlike the library (which pads and skips stray characters), so a truncated or
    mistyped secret is caught when configured instead of silently signing with another key.
    """
    if not value.startswith(SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII str
        return False
    return len(key) >= _MIN_SECRET_BYTES


def signature_headers(
    message_id: str, timestamp: datetime, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery of `body`.

    `body` must be the exact bytes sent: the signature covers them byte for byte.
    `secrets` are the live secrets, newest first; each yields one `v1,<base64>`
    signature, space-separated, which is how the spec carries several.
    """
    if not secrets:
        raise ValueError("at least one webhook signing secret is needed")
    live = list(dict.fromkeys(secrets))  # a repeated secret would only repeat a signature
    if not all(is_secret(secret) for secret in live):
        # The secret itself stays out of the message: it would end up in logs.
        raise ValueError("a webhook signing secret is not a whsec_ secret of at least 16 bytes")
    signatures = [Webhook(secret).sign(message_id, timestamp, body) for secret in live]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(_unix_seconds(timestamp)),
        "webhook-signature": " ".join(signatures),
    }


def derived_secret(key: str) -> str:
    """A stable signing secret derived from the application secret `key`.

    Open mode configures no WEBHOOK_SECRET; deriving one keeps signatures stable across
    restarts and across the processes of one deployment, without storing another secret.
    """
    digest = hmac.new(key.encode(), _DERIVATION_LABEL, hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode()


def _unix_seconds(timestamp: datetime) -> int:
    """The timestamp exactly as the library signs it: naive means UTC, fractions floored.

    `datetime.timestamp()` reads a naive datetime as *local* time; the header must carry
    the very seconds that were signed, or no receiver could verify.
    """
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    return math.floor(timestamp.timestamp())
