"""Scheduling settings: defaults, parsing, and refusals that name the variable."""

import pytest

from app.config import Config, ConfigError


def test_defaults_keep_a_fixed_pool_and_a_minute_of_aging():
    config = Config.from_env({})
    assert config.generation_workers_max == config.generation_workers == 2
    assert config.priority_aging_seconds == 60
    assert (config.generation_scale_up_seconds, config.generation_worker_idle_seconds) == (5, 60)


def test_workers_max_follows_workers_unless_set():
    assert Config.from_env({"GENERATION_WORKERS": "3"}).generation_workers_max == 3
    config = Config.from_env({"GENERATION_WORKERS": "2", "GENERATION_WORKERS_MAX": "6"})
    assert (config.generation_workers, config.generation_workers_max) == (2, 6)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"GENERATION_WORKERS": "4", "GENERATION_WORKERS_MAX": "2"}, "GENERATION_WORKERS_MAX"),
        ({"PRIORITY_AGING_SECONDS": "0"}, "PRIORITY_AGING_SECONDS"),
        ({"PRIORITY_AGING_SECONDS": "soon"}, "PRIORITY_AGING_SECONDS"),
        ({"GENERATION_SCALE_UP_SECONDS": "-1"}, "GENERATION_SCALE_UP_SECONDS"),
        ({"GENERATION_WORKER_IDLE_SECONDS": "x"}, "GENERATION_WORKER_IDLE_SECONDS"),
    ],
)
def test_bad_values_fail_at_start_naming_the_variable(environ, named):
    with pytest.raises(ConfigError, match=named):
        Config.from_env(environ)
