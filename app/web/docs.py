"""The OpenAPI document of the API: openapi.json as written, with the request schema of
`POST /api/v1/jobs` built from the generators this server runs.

A job request's `params` are whatever its generator accepts, so the document says so
exactly: `JobRequest` is a `oneOf` over one schema per registered generator (its
`params_schema()`, a plugin's too), discriminated by `generator`. Generated clients get
a typed model per generator, and a fuzzer knows which params each one takes.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from ..generation.generators import Generator
from ..wiring import get_service

bp = Blueprint("docs", __name__)

SPEC_PATH = Path(__file__).with_name("openapi.json")
REQUEST_SCHEMA = "JobRequest"
DOCUMENT_EXTENSION = "openapi_document"
# The webhook URL's scheme in its pattern, as written and with WEBHOOK_ALLOW_HTTP.
HTTPS_ONLY = "^[Hh][Tt][Tt][Pp][Ss]://"
HTTP_TOO = "^[Hh][Tt][Tt][Pp][Ss]?://"


@cache
def openapi_document() -> dict[str, Any]:
    """openapi.json as written: `JobRequest` takes any generator's name and any params."""
    return json.loads(SPEC_PATH.read_text())


def document_for(generators: Iterable[Generator], *, allow_http: bool = False) -> dict[str, Any]:
    """The document with `JobRequest` as a `oneOf` over `generators`' requests, and the
    webhook schemes this server takes (`allow_http`: WEBHOOK_ALLOW_HTTP)."""
    document = copy.deepcopy(openapi_document())
    schemas = document["components"]["schemas"]
    generic = schemas[REQUEST_SCHEMA]
    if allow_http:
        webhook = generic["properties"]["webhook"]
        webhook["pattern"] = webhook["pattern"].replace(HTTPS_ONLY, HTTP_TOO, 1)
    mapping: dict[str, str] = {}
    for generator in sorted(generators, key=lambda g: g.name):
        name = _schema_name(generator.name, schemas)
        schemas[name] = _request_schema(generator, generic)
        mapping[generator.name] = f"#/components/schemas/{name}"
    schemas[REQUEST_SCHEMA] = {
        "description": generic["description"],
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "generator", "mapping": mapping},
    }
    return document


def served_document(app: Flask) -> dict[str, Any]:
    """`app`'s document, built once: its generators are fixed when it starts."""
    if DOCUMENT_EXTENSION not in app.extensions:
        service = get_service(app)
        allow_http = service.webhooks.settings.allow_http
        app.extensions[DOCUMENT_EXTENSION] = document_for(service.generators, allow_http=allow_http)
    return app.extensions[DOCUMENT_EXTENSION]


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of every route."""
    return jsonify(served_document(current_app._get_current_object()))


def _request_schema(generator: Generator, generic: dict[str, Any]) -> dict[str, Any]:
    params = generator.params_schema()
    schema = copy.deepcopy(generic)
    schema["description"] = f"A job for the {generator.name} generator."
    properties = schema["properties"]
    properties["generator"] = {"const": generator.name}
    properties["params"] = {"description": f"The {generator.name} generator's params.", **params}
    # Left out, `params` is `{}`: required exactly when the generator refuses that.
    if generator.validate({})[1]:
        schema["required"] = [*schema["required"], "params"]
    if "$defs" in params:  # its own `#/$defs/...` references resolve within it
        properties["params"]["$id"] = f"urn:generation-service:params:{generator.name}"
    return schema


def _schema_name(generator: str, taken: dict[str, Any]) -> str:
    """`images` -> `ImagesJobRequest`: a component name a client generator can use."""
    words = re.split(r"[^A-Za-z0-9]+", generator)
    name = "".join(word[:1].upper() + word[1:] for word in words) + REQUEST_SCHEMA
    while name in taken:  # two names that differ only in punctuation
        name = "_" + name
    return name
