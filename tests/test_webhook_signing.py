"""Webhook signatures verify with the reference Standard Webhooks library, and only for
the body, timestamp and secret they were made with; during a rotation either secret does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.generation.notify.signing import (
    SECRET_PREFIX,
    derived_secret,
    is_secret,
    new_secret,
    signature_headers,
)

BODY = json.dumps({"type": "job.succeeded", "data": {"id": "job_1"}}).encode()
MESSAGE_ID = "msg_2f1c"


def headers_for(*secrets: str, body: bytes = BODY) -> dict[str, str]:
    return signature_headers(MESSAGE_ID, datetime.now(UTC), body, secrets)


def test_a_receiver_holding_the_secret_verifies_the_delivery():
    secret = new_secret()
    headers = headers_for(secret)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    assert headers["webhook-id"] == MESSAGE_ID
    assert headers["webhook-signature"].startswith("v1,")


def test_the_timestamp_header_is_unix_seconds():
    moment = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
    headers = signature_headers(MESSAGE_ID, moment, BODY, [new_secret()])
    assert headers["webhook-timestamp"] == str(int(moment.timestamp()))


def test_a_naive_timestamp_is_read_as_utc_like_the_library_signs_it():
    secret = new_secret()
    aware = datetime.now(UTC)
    headers = signature_headers(MESSAGE_ID, aware.replace(tzinfo=None), BODY, [secret])
    assert headers["webhook-timestamp"] == str(int(aware.timestamp()))
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_a_changed_body_fails_verification():
    secret = new_secret()
    headers = headers_for(secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"succeeded", b"failed"), headers)


def test_a_changed_timestamp_header_fails_verification():
    secret = new_secret()
    headers = headers_for(secret)
    headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) + 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


def test_another_secret_fails_verification():
    headers = headers_for(new_secret())
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


@pytest.mark.parametrize("holder", ["new", "previous"])
def test_during_a_rotation_a_receiver_holding_either_secret_verifies(holder):
    secrets = {"new": new_secret(), "previous": new_secret()}
    headers = headers_for(secrets["new"], secrets["previous"])
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(secrets[holder]).verify(BODY, headers)


def test_bytes_that_are_not_utf8_are_signed_as_sent():
    secret = new_secret()
    body = b"\xff\xfe raw"
    headers = headers_for(secret, body=body)
    assert Webhook(secret).verify(body, headers, json_parse=False) is None  # None: verified
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b"!", headers, json_parse=False)


def test_new_secrets_are_distinct_valid_secrets():
    made = {new_secret() for _ in range(20)}
    assert len(made) == 20
    assert all(secret.startswith(SECRET_PREFIX) and is_secret(secret) for secret in made)


def test_a_derived_secret_is_stable_valid_and_depends_on_the_key():
    assert derived_secret("app-secret") == derived_secret("app-secret")
    assert derived_secret("app-secret") != derived_secret("other-secret")
    assert is_secret(derived_secret("app-secret"))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "whsec_",
        "c2VjcmV0LWJ5dGVzLTE2LWxvbmc=",  # no prefix
        "whsec_c2hvcnQ=",  # 5 bytes: too short to be a key
        "whsec_not base64!!",
        "whsec_c2VjcmV0LWJ5dGVzLTE2LWxvbmc",  # padding missing: strict decoding refuses
        "whsec_é",
    ],
)
def test_malformed_secrets_are_not_secrets(value):
    assert not is_secret(value)


def test_signing_needs_at_least_one_secret():
    with pytest.raises(ValueError, match="at least one"):
        signature_headers(MESSAGE_ID, datetime.now(UTC), BODY, [])


def test_signing_refuses_a_malformed_secret_without_echoing_it():
    with pytest.raises(ValueError) as refused:
        signature_headers(MESSAGE_ID, datetime.now(UTC), BODY, ["whsec_c2hvcnQ="])
    assert "c2hvcnQ" not in str(refused.value)
