import dataclasses
import os
from pathlib import Path

import pytest

from app.config import Config, ConfigError, normalize_database_url
from app.generation.notify.signing import new_secret
from app.generation.settings import DEFAULT_RETRY_DELAYS, ServiceSettings
from app.wiring import SETTINGS_FROM_CONFIG, service_settings


def test_defaults_match_the_seed():
    config = Config.from_env({})
    assert (config.generation_workers, config.generation_queue_size) == (2, 100)
    assert (config.web_concurrency, config.port) == (1, 8000)
    assert config.generation_process_idle_seconds == 300
    assert config.is_sqlite and config.database_url.endswith("instance/generation.db")


def test_values_are_read_and_typed():
    config = Config.from_env(
        {
            "GENERATION_WORKERS": "4",
            "GENERATION_QUEUE_SIZE": "7",
            "WEB_THREADS": "16",
            "PORT": "9000",
            "RESULTS_DIR": "/tmp/r",
            "GENERATION_PROCESS_IDLE_SECONDS": "0",
        }
    )
    assert config.generation_process_idle_seconds == 0
    assert (config.generation_workers, config.generation_queue_size) == (4, 7)
    assert (config.web_threads, config.port, config.results_dir) == (16, 9000, Path("/tmp/r"))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GENERATION_WORKERS", "two", "GENERATION_WORKERS must be an integer"),
        ("GENERATION_WORKERS", "0", "GENERATION_WORKERS must be between 1 and"),
        ("GENERATION_QUEUE_SIZE", "-5", "GENERATION_QUEUE_SIZE must be between"),
        ("PORT", "70000", "PORT must be between"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL must be a sqlite"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be one of"),
        ("WEB_CONCURRENCY", "2", "WEB_CONCURRENCY must be 1"),
        ("AUTH_MODE", "sometimes", "AUTH_MODE must be one of open, keys"),
        ("AUTH_MODE", "keys", "SECRET_KEY must be at least 32 characters when AUTH_MODE=keys"),
        ("MAX_QUEUED_PER_KEY", "0", "MAX_QUEUED_PER_KEY must be between"),
        ("RATE_LIMIT", "lots", "RATE_LIMIT must look like"),
        ("RATE_LIMIT", "0/second", "RATE_LIMIT must look like"),
        ("JOB_TIMEOUT_SECONDS", "0", "JOB_TIMEOUT_SECONDS must be between"),
        ("GENERATION_PROCESS_IDLE_SECONDS", "-1", "GENERATION_PROCESS_IDLE_SECONDS must be"),
    ],
)
def test_bad_values_fail_naming_the_variable(name, value, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_env({name: value})


def test_access_settings_are_read():
    config = Config.from_env(
        {
            "AUTH_MODE": "KEYS",
            "SECRET_KEY": "s" * 32,
            "MAX_QUEUED_PER_KEY": "5",
            "RATE_LIMIT": "2/second;50/hour",
            "JOB_TIMEOUT_SECONDS": "30",
        }
    )
    assert (config.auth_mode, config.requires_keys, config.max_queued_per_key) == ("keys", True, 5)
    assert (config.rate_limit, config.job_timeout_seconds) == ("2/second;50/hour", 30)
    assert Config.from_env({}).auth_mode == "open"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"),
        ("postgresql://u@db/app", "postgresql+psycopg://u@db/app"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_fly_postgres_urls_are_normalised(url, expected):
    assert normalize_database_url(url) == expected


def test_dotenv_file_is_loaded(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("GENERATION_QUEUE_SIZE=42\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GENERATION_QUEUE_SIZE", raising=False)
    try:
        assert Config.from_env().generation_queue_size == 42
    finally:
        os.environ.pop("GENERATION_QUEUE_SIZE", None)  # load_dotenv wrote it


def test_environment_wins_over_dotenv(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("GENERATION_QUEUE_SIZE=42\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENERATION_QUEUE_SIZE", "9")
    assert Config.from_env().generation_queue_size == 9


def test_generator_settings_are_read():
    config = Config.from_env(
        {
            "GENERATION_CPU_ISOLATION": "thread",
            "REPLICATE_API_TOKEN": "r8_secret",
            "REPLICATE_API_BASE": "http://127.0.0.1:9999/v1/",
            "REPLICATE_TIMEOUT_SECONDS": "12",
        }
    )
    assert config.generation_cpu_isolation == "thread"
    assert config.replicate_api_base == "http://127.0.0.1:9999/v1"
    assert (config.replicate_api_token, config.replicate_timeout_seconds) == ("r8_secret", 12)
    defaults = Config.from_env({})
    assert defaults.generation_cpu_isolation == "process"
    assert defaults.replicate_api_base == "https://api.replicate.com/v1"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GENERATION_CPU_ISOLATION", "fork", "GENERATION_CPU_ISOLATION must be one of"),
        ("REPLICATE_API_BASE", "api.replicate.com/v1", "REPLICATE_API_BASE must be an http"),
        ("REPLICATE_API_BASE", "ftp://example.com", "REPLICATE_API_BASE must be an http"),
        ("REPLICATE_TIMEOUT_SECONDS", "0", "REPLICATE_TIMEOUT_SECONDS must be between"),
    ],
)
def test_bad_generator_settings_fail_naming_the_variable(name, value, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_env({name: value})


def test_the_replicate_token_never_shows_in_the_config_repr():
    assert "r8_secret" not in repr(Config.from_env({"REPLICATE_API_TOKEN": "r8_secret"}))


def test_websockets_get_half_the_threads_unless_told_otherwise():
    assert Config.from_env({"WEB_THREADS": "64"}).websocket_capacity == 32
    assert (
        Config.from_env({"WEB_THREADS": "64", "WS_MAX_CONNECTIONS": "50"}).websocket_capacity == 50
    )


def test_sockets_may_not_take_the_threads_http_needs():
    with pytest.raises(ConfigError, match="WS_MAX_CONNECTIONS .* WEB_THREADS"):
        Config.from_env({"WEB_THREADS": "64", "WS_MAX_CONNECTIONS": "63"})


@pytest.mark.parametrize(
    "name, value",
    [("WS_PING_INTERVAL", "0"), ("WS_PING_INTERVAL", "soon"), ("WS_MAX_CONNECTIONS", "-3")],
)
def test_bad_websocket_settings_fail_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


def test_every_setting_of_the_service_comes_from_the_configuration():
    """A new ServiceSettings field is read from the environment, or said not to be."""
    not_configurable = {"sweep_interval"}  # tests shorten it; operators have no reason to
    grouped = {"webhooks"}  # a settings value of its own: webhook_settings(config)
    fields = {field.name for field in dataclasses.fields(ServiceSettings)}
    assert set(SETTINGS_FROM_CONFIG) == fields - not_configurable - grouped
    config = Config.from_env({"GENERATION_WORKERS": "3", "MAX_QUEUED_PER_KEY": "7"})
    settings = service_settings(config)
    assert (settings.workers, settings.max_queued_per_key) == (3, 7)


def test_webhook_settings_come_from_the_environment():
    secret = new_secret()
    config = Config.from_env(
        {
            "WEBHOOK_ALLOW_HTTP": "true",
            "WEBHOOK_ALLOW_PRIVATE": "1",
            "WEBHOOK_SECRET": secret,
            "WEBHOOK_CONCURRENCY": "3",
            "WEBHOOK_PER_HOST": "1",
            "WEBHOOK_TIMEOUT_SECONDS": "4",
            "WEBHOOK_RETRY_DELAYS": "1,2.5,60",
            "FLY_APP_NAME": "gen-demo",
        },
        dotenv=False,
    )
    webhooks = service_settings(config).webhooks
    assert (webhooks.allow_http, webhooks.allow_private) == (True, True)
    assert (webhooks.concurrency, webhooks.per_host, webhooks.read_timeout) == (3, 1, 4.0)
    assert webhooks.retry_delays == (1.0, 2.5, 60.0) and webhooks.max_attempts == 4
    assert webhooks.open_secrets == (secret,)
    assert config.public_url == "https://gen-demo.fly.dev"
    assert "whsec" not in repr(config)
    defaults = service_settings(Config.from_env({}, dotenv=False)).webhooks
    assert (defaults.allow_http, defaults.allow_private, defaults.open_secrets) == (
        False,
        False,
        (),
    )
    assert defaults.retry_delays == DEFAULT_RETRY_DELAYS


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("WEBHOOK_ALLOW_PRIVATE", "maybe", "true or false"),
        ("WEBHOOK_SECRET", "hunter2", "whsec_"),
        ("WEBHOOK_RETRY_DELAYS", "5,soon", "comma-separated"),
        ("WEBHOOK_RETRY_DELAYS", "-1", "comma-separated"),
        ("PUBLIC_URL", "gen.example.com", "PUBLIC_URL"),
    ],
)
def test_bad_webhook_settings_are_refused_by_name(name, value, says):
    with pytest.raises(ConfigError, match=says):
        Config.from_env({name: value}, dotenv=False)
