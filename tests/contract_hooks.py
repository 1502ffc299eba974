"""Schemathesis hooks for the contract test (SCHEMATHESIS_HOOKS=tests.contract_hooks).

An Idempotency-Key names one request: the same key with another request is 422
`idempotency_key_reused` (documented, and tests/test_idempotency.py tests it). The fuzzer
cannot know that and sends "0" with many requests; each valid key it generates is made
unique (a suffix; it stays valid), so a submission is judged on its own. Invalid keys are
sent as generated.

The fuzzer calls every operation, the operators' ones too. Two of them change what every
later call answers, by design: a paused queue answers each submit 503 `paused`, and an
undrained machine starts running the queued jobs (each test server runs drained, so that
thousands of generated jobs wait instead of rendering). Each is undone right after it
succeeds, as tests/test_fuzz.py does, so the calls after it are tested against the same
server.
"""

from __future__ import annotations

import itertools
import re
from urllib.parse import quote

import requests
import schemathesis

IDEMPOTENCY_KEY = re.compile(r"(?=.{1,255}$)[!-~]([ -~]*[!-~])?", re.ASCII)  # as documented
_suffixes = itertools.count()

UNDO = {
    "POST /api/v1/admin/queue/pause": "/api/v1/admin/queue/resume",
    "POST /api/v1/admin/machines/{machine}/undrain": "/api/v1/admin/machines/{machine}/drain",
}


@schemathesis.hook
def before_call(context, case, kwargs) -> None:  # noqa: ANN001 (schemathesis' signature)
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and IDEMPOTENCY_KEY.fullmatch(key):
        suffix = f"~{next(_suffixes)}"
        case.headers["Idempotency-Key"] = key[: 255 - len(suffix)] + suffix


@schemathesis.hook
def after_call(context, case, response) -> None:  # noqa: ANN001 (schemathesis' signature)
    undo = UNDO.get(case.operation.label)
    if undo is None or response.status_code != 200:
        return
    names = {
        name: quote(str(value), safe="") for name, value in (case.path_parameters or {}).items()
    }
    base = response.request.url.split("/api/v1/", 1)[0]
    key = response.request.headers.get("Authorization")
    headers = {"Authorization": key} if key else {}
    undone = requests.post(base + undo.format(**names), headers=headers, timeout=10)
    # A machine that is not running cannot be drained again, and need not be.
    if undone.status_code != 404:
        undone.raise_for_status()
