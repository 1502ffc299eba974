"""The OpenAPI document is the contract, checked by an independent fuzzer.

Schemathesis reads `/openapi.json` from a real gunicorn server and runs every check in
every phase (the document's examples, coverage of each boundary and violation, random
fuzzing, and stateful sequences that follow the document's links) against every
operation, in open mode and in keys mode (an admin key of the premium tier, so every
operation is reachable). Any finding fails the test, with schemathesis' report (each
finding has a curl command that reproduces it).

The run is bounded (MAX_EXAMPLES per operation and phase) and seeded, so CI repeats the
same requests; docs/api.md says how to run it longer or with another seed. The server is
drained (this machine claims nothing): generated jobs wait in the queue instead of
rendering for minutes. tests/contract_hooks.py undoes the two operator calls that would
change every later answer (pause, undrain); tests/schemathesis.toml says that a
WebSocket route succeeds with 101.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.web.docs import openapi_document

from .servers import PROJECT_ROOT, create_key, flask_cli, gunicorn

# Longer or different runs: CONTRACT_EXAMPLES=500 CONTRACT_SEED=7 (docs/api.md).
MAX_EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "20"))
SEED = int(os.environ.get("CONTRACT_SEED", "2126"))
MACHINE = "contract"
CONFIG = Path(__file__).with_name("schemathesis.toml")
SECRET = "contract-test-secret-key-of-at-least-32-chars"
SERVER_ENV = {
    "FLY_MACHINE_ID": MACHINE,
    "SECRET_KEY": SECRET,
    "GENERATION_QUEUE_SIZE": "100000",  # never full: a 503 queue_full would end a run
    "MAX_QUEUED_PER_KEY": "100000",
    "RATE_LIMIT": "100000/second",
    "WEBHOOK_ALLOW_PRIVATE": "true",  # hosts resolve to 127.0.0.1 (tests/wsgi_contract.py)
    "WEBHOOK_SECRET": "whsec_" + "Y29udHJhY3QtdGVzdC13ZWJob29rLXNlY3JldA==",
}


def prepared_database(tmp_path: Path, auth_mode: str) -> tuple[dict[str, str], list[str]]:
    """Environment of a server in `auth_mode`, and the fuzzer's header options."""
    env = (
        os.environ
        | SERVER_ENV
        | {
            "AUTH_MODE": auth_mode,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
            "RESULTS_DIR": str(tmp_path / "results"),
        }
    )
    flask_cli(env, "db", "upgrade")
    if auth_mode == "open":
        return env, []
    key = create_key(env, "fuzzer", "--tier", "premium", "--admin")
    return env, ["-H", f"Authorization: Bearer {key}"]


def schemathesis(url: str, headers: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        *headers,
    ]
    return subprocess.run(
        command,
        cwd=tmp_path,
        env=os.environ
        | {"SCHEMATHESIS_HOOKS": "tests.contract_hooks", "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("auth_mode", ["open", "keys"])
def test_the_fuzzer_finds_nothing_the_document_does_not_say(tmp_path, auth_mode):
    env, headers = prepared_database(tmp_path, auth_mode)
    with gunicorn(tmp_path, env=env, app="tests.wsgi_contract:app") as server:
        flask_cli(env, "queue", "drain", MACHINE)  # once the server reports from MACHINE
        run = schemathesis(server.url, headers, tmp_path)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    # A run that tested nothing would pass too: it must have reached every operation.
    assert f"Tested: {len(http_operations())}\n" in report, report
    assert "✅ Stateful" in report, report


def http_operations() -> list[str]:
    """The operations schemathesis tests: all but the WebSocket routes (those answer 101)
    and `GET /openapi.json`, the document it was given (it does not test that one)."""
    paths = openapi_document()["paths"]
    return [
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        for method, operation in operations.items()
        if method != "parameters"
        and "101" not in operation["responses"]
        and path != "/openapi.json"
    ]
