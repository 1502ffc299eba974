"""Settings of the database backends: several processes only on PostgreSQL, leases,
where results go."""

from __future__ import annotations

import pytest

from app.config import Config, ConfigError

PG = "postgres://u:p@db.internal:5432/app"


def test_several_processes_need_postgresql():
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY must be 1 with SQLite"):
        Config.from_env({"WEB_CONCURRENCY": "2"})
    config = Config.from_env({"WEB_CONCURRENCY": "4", "DATABASE_URL": PG})
    assert config.web_concurrency == 4
    assert config.database_url == "postgresql+psycopg://u:p@db.internal:5432/app"


def test_results_go_where_every_machine_can_read_them_by_default():
    assert Config.from_env({}).results_store == "filesystem"
    assert Config.from_env({"DATABASE_URL": PG}).results_store == "database"
    chosen = Config.from_env({"DATABASE_URL": PG, "RESULTS_STORE": "filesystem"})
    assert chosen.results_store == "filesystem"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JOB_LEASE_SECONDS", "0"),
        ("JOB_LEASE_SECONDS", "soon"),
        ("RESULTS_STORE", "s3"),
    ],
)
def test_bad_values_fail_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


def test_lease_defaults_to_thirty_seconds():
    assert Config.from_env({}).job_lease_seconds == 30
    assert Config.from_env({"JOB_LEASE_SECONDS": "5"}).job_lease_seconds == 5
