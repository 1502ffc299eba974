"""Third-party generators: discovered through entry points, listed by the API, run as jobs."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from app import create_app
from app.config import Config
from app.generation import JobStatus
from app.generation.generators import ENTRY_POINT_GROUP, GeneratorRegistry, default_registry
from app.wiring import build_registry

from .conftest import wait_for
from .cpu_generators import WhereGenerator
from .openapi_check import assert_conforms

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "spirograph"


def entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def make_where() -> WhereGenerator:
    return WhereGenerator()


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, pip-installed (offline, from a copy) into its own directory."""
    source = tmp_path_factory.mktemp("source") / "spirograph"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(site), str(source)],
        check=True,
    )  # fmt: skip
    return site


@pytest.fixture
def installed(example_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(example_site))
    return example_site


@pytest.fixture
def registry(installed: Path) -> GeneratorRegistry:
    registry = default_registry()
    registry.discover()
    return registry


def test_an_installed_plugin_is_discovered_and_runs_in_a_worker_process(make_service, registry):
    assert "spirograph" in registry.names()
    service = make_service(cpu_isolation="process")
    service.start()
    job = service.submit("spirograph", {"count": 2, "seed": 7, "size": 128})
    done = wait_for(service, job.id, timeout=30)
    assert done.status is JobStatus.SUCCEEDED, done.error
    with service.results.open(done.id, done.lease_epoch) as stream:
        archive = zipfile.ZipFile(io.BytesIO(stream.read()))
    assert archive.namelist() == ["spiro-01.svg", "spiro-02.svg", "manifest.json"]
    assert archive.read("spiro-01.svg").startswith(b"<svg")


def test_the_api_lists_an_installed_plugin_with_its_schema(config, service):
    app = create_app(config, service=service)
    response = app.test_client().get("/api/v1/generators")
    assert_conforms(app, "GET", "/api/v1/generators", response)
    listed = {g["name"]: g for g in response.get_json()["generators"]}
    assert set(listed) == {"images", "noop", "spirograph"}
    assert listed["spirograph"]["cpu_bound"] is True
    assert listed["spirograph"]["params_schema"]["properties"]["count"]["maximum"] == 12
    assert listed["images"]["params_schema"]["required"] == ["prompt"]


def test_the_examples_own_tests_pass(installed):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(installed), str(EXAMPLE.parents[1])]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_wiring_registers_builtins_and_plugins(installed):
    assert build_registry(Config()).names() == ["images", "noop", "spirograph"]
    with_token = build_registry(Config(replicate_api_token="r8_x"))
    assert with_token.names() == ["images", "noop", "replicate", "spirograph"]


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("broken", "no_such_module_anywhere:Generator", "No module named"),
        ("notgen", "builtins:dict", "not a Generator"),
        ("other", "tests.cpu_generators:WhereGenerator", "must be the same"),
        ("images", "app.generation.generators.images:ImagesGenerator", "already registered"),
    ],
)
def test_a_broken_plugin_is_logged_and_skipped(caplog, name, value, complaint):
    registry = default_registry()
    caplog.set_level(logging.ERROR)
    added = registry.discover(found=[entry_point(name, value)])
    assert added == [] and registry.names() == ["images", "noop"]
    assert f"generator plugin {name!r}" in caplog.text and complaint in caplog.text


def test_good_plugins_load_beside_broken_ones():
    registry = default_registry()
    added = registry.discover(
        found=[
            entry_point("broken", "no_such_module_anywhere:Generator"),
            entry_point("where", "tests.test_plugins:make_where"),
        ]
    )
    assert added == ["where"] and registry.names() == ["images", "noop", "where"]


@pytest.mark.parametrize("bad", ["", "Upper", "has space", "1digit", "x" * 65])
def test_registry_refuses_bad_generator_names(bad):
    generator = WhereGenerator()
    generator.name = bad
    with pytest.raises(ValueError, match="generator name"):
        GeneratorRegistry([generator])
