"""API keys: stored as hashes, tiers as priority ceilings, managed from the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from app import create_app
from app.generation import Priority, PriorityNotAllowedError
from app.generation.intake.keys import ANONYMOUS_PRINCIPAL, KeyStore, Principal, Tier
from app.generation.notify.signing import derived_secret, new_secret
from app.generation.store.tables import ApiKeyRow
from app.wiring import get_service

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def keys(service) -> KeyStore:
    return KeyStore(service.store.engine)


def test_only_the_hash_of_a_key_is_stored(keys):
    record, key = keys.create("alice", Tier.PREMIUM)
    with keys._engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(select(ApiKeyRow.__table__))]
    assert len(rows) == 1
    assert rows[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    stored = " ".join(str(value) for value in rows[0].values())
    assert key not in stored and key.rsplit("_", 1)[1] not in stored
    assert key.startswith(f"gsk_{record.key_id}_")


def test_a_live_key_authenticates_as_its_name_and_tier(keys):
    record, key = keys.create("alice", Tier.FREE)
    assert keys.authenticate(key) == Principal("alice", Tier.FREE, record.key_id)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # unknown secret
        lambda key: key.upper(),  # malformed id
        lambda key: key + "x",  # too long
        lambda key: "",
        lambda key: "gsk_\x00",
    ],
)
def test_unknown_or_malformed_keys_do_not_authenticate(keys, mangle):
    _, key = keys.create("alice", Tier.STANDARD)
    assert keys.authenticate(mangle(key)) is None


def test_a_revoked_key_stops_working_at_once(keys):
    record, key = keys.create("alice", Tier.STANDARD)
    assert keys.revoke(record.key_id).revoked_at is not None
    assert keys.authenticate(key) is None
    assert keys.revoke(record.key_id) is None  # already revoked
    assert keys.all() == [] and len(keys.all(include_revoked=True)) == 1


def test_rotating_a_key_keeps_the_owner(keys):
    old, old_key = keys.create("alice", Tier.STANDARD)
    _, new_key = keys.create("alice", Tier.STANDARD)
    keys.revoke(old.key_id)
    assert keys.authenticate(old_key) is None
    assert keys.authenticate(new_key).owner == "alice"


@pytest.mark.parametrize("name", ["anonymous", "", "-leading-dash", "a b", "x" * 65, "é"])
def test_key_names_are_checked(keys, name):
    with pytest.raises(ValueError, match="key name"):
        keys.create(name, Tier.STANDARD)


@pytest.mark.parametrize(
    ("tier", "ceiling"),
    [(Tier.PREMIUM, Priority.HIGH), (Tier.STANDARD, Priority.NORMAL), (Tier.FREE, Priority.LOW)],
)
def test_a_tier_defaults_to_its_ceiling_and_allows_lower(tier, ceiling):
    principal = Principal("alice", tier, "0000abcd")
    assert principal.priority_for(None) is ceiling
    assert principal.priority_for(Priority.LOW) is Priority.LOW
    for above in (p for p in Priority if p < ceiling):
        with pytest.raises(PriorityNotAllowedError):
            principal.priority_for(above)


@pytest.mark.parametrize(
    ("tier", "allowed"),
    [
        (Tier.PREMIUM, (Priority.HIGH, Priority.NORMAL, Priority.LOW)),
        (Tier.STANDARD, (Priority.NORMAL, Priority.LOW)),
        (Tier.FREE, (Priority.LOW,)),
    ],
)
def test_a_principal_lists_the_priorities_it_may_ask_for_highest_first(tier, allowed):
    principal = Principal("alice", tier, "0000abcd")
    assert principal.allowed_priorities() == allowed
    for priority in allowed:  # the list and the check are one rule
        assert principal.priority_for(priority) is priority


def test_the_anonymous_caller_may_ask_any_priority_and_gets_normal_by_default():
    assert ANONYMOUS_PRINCIPAL.priority_for(None) is Priority.NORMAL
    assert [ANONYMOUS_PRINCIPAL.priority_for(p) for p in Priority] == list(Priority)
    assert ANONYMOUS_PRINCIPAL.allowed_priorities() == tuple(Priority)


@pytest.fixture
def cli_app(config, make_service):
    return create_app(config, service=make_service())


def test_cli_create_prints_the_key_once_as_the_last_line(cli_app):
    runner = cli_app.test_cli_runner()
    created = runner.invoke(args=["keys", "create", "alice", "--tier", "premium"])
    assert created.exit_code == 0, created.output
    key = created.output.splitlines()[-1]
    assert created.output.count(key) == 1
    assert cli_app.extensions["keys"].authenticate(key).tier is Tier.PREMIUM
    listing = runner.invoke(args=["keys", "list"])
    key_id = key.split("_")[1]
    assert key_id in listing.output and "alice" in listing.output and "premium" in listing.output
    assert key not in listing.output


def test_cli_revoke_and_its_errors(cli_app):
    runner = cli_app.test_cli_runner()
    key = runner.invoke(args=["keys", "create", "bob"]).output.splitlines()[-1]
    key_id = key.split("_")[1]
    assert runner.invoke(args=["keys", "revoke", key_id]).exit_code == 0
    assert cli_app.extensions["keys"].authenticate(key) is None
    again = runner.invoke(args=["keys", "revoke", key_id])
    assert again.exit_code == 1 and "no live key" in again.output
    assert "revoked" in runner.invoke(args=["keys", "list", "--all"]).output
    bad = runner.invoke(args=["keys", "create", "anonymous"])
    assert bad.exit_code == 2 and "key name" in bad.output
    bad_tier = runner.invoke(args=["keys", "create", "carol", "--tier", "gold"])
    assert bad_tier.exit_code == 2


def test_cli_commands_start_no_worker_threads(cli_app):
    before = set(threading.enumerate())  # not earlier tests' services: only what these start
    runner = cli_app.test_cli_runner()
    assert runner.invoke(args=["keys", "create", "alice"]).exit_code == 0
    assert runner.invoke(args=["keys", "list"]).exit_code == 0
    assert not get_service(cli_app).accepting
    assert [thread.name for thread in set(threading.enumerate()) - before] == []


def test_the_real_flask_command_creates_a_usable_key(tmp_path):
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'keys.db'}",
        "RESULTS_DIR": str(tmp_path / "results"),
        "AUTH_MODE": "keys",
        "SECRET_KEY": "s" * 32,
    }

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "flask", "--app", "wsgi", "keys", *args]
        return subprocess.run(
            command,
            cwd=tmp_path,
            env=env | {"PYTHONPATH": str(PROJECT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    created = flask("create", "alice", "--tier", "free")
    key = created.stdout.splitlines()[-1]
    assert key.startswith("gsk_") and created.stdout.count(key) == 1
    listed = flask("list")
    assert "alice" in listed.stdout and "free" in listed.stdout and key not in listed.stdout


def test_cli_webhook_secrets_are_shown_once_rotated_and_printed(cli_app):
    runner = cli_app.test_cli_runner()
    created = runner.invoke(
        args=["keys", "create", "dora", "--webhook", "https://93.184.216.34/hooks"]
    )
    assert created.exit_code == 0, created.output
    keys = cli_app.extensions["keys"]
    (record,) = keys.all()
    (secret,) = keys.webhook_secrets(record.key_id)
    assert created.output.count(secret) == 1 and created.output.splitlines()[-1].startswith("gsk_")
    assert record.webhook_url == "https://93.184.216.34/hooks"
    rotated = runner.invoke(args=["keys", "rotate-webhook-secret", record.key_id])
    assert rotated.exit_code == 0, rotated.output
    new = rotated.output.splitlines()[-1]
    assert new.startswith("whsec_") and keys.webhook_secrets(record.key_id) == [new, secret]
    assert runner.invoke(args=["keys", "set-webhook", record.key_id]).exit_code == 0
    assert keys.get(record.key_id).webhook_url is None
    unsafe = runner.invoke(args=["keys", "set-webhook", record.key_id, "https://10.0.0.1/h"])
    assert unsafe.exit_code == 2 and "private" in unsafe.output
    missing = runner.invoke(args=["keys", "rotate-webhook-secret", "00000000"])
    assert missing.exit_code == 1 and "no key" in missing.output
    assert runner.invoke(args=["webhooks", "new-secret"]).output.startswith("whsec_")


def test_open_mode_secret_comes_from_webhook_secret_else_secret_key(config):
    configured = new_secret()
    for settings, expected in (
        ({"webhook_secret": configured}, configured),
        ({"secret_key": "k" * 40}, derived_secret("k" * 40)),
    ):
        app = create_app(dataclasses.replace(config, **settings))
        shown = app.test_cli_runner().invoke(args=["webhooks", "secret"])
        assert shown.output.strip() == expected
    none = create_app(config).test_cli_runner().invoke(args=["webhooks", "secret"])
    assert none.exit_code == 1 and "WEBHOOK_SECRET" in none.output
