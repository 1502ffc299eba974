"""The OpenAPI document of the API, served as written in openapi.json."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify

bp = Blueprint("docs", __name__)

SPEC_PATH = Path(__file__).with_name("openapi.json")


@cache
def openapi_document() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of every route."""
    return jsonify(openapi_document())
