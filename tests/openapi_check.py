"""Checks that a response matches what app/web/openapi.json promises for it."""

from __future__ import annotations

import re

from flask import Flask
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse

from app.web.docs import served_document

SPEC_URI = "urn:generation-service:openapi"


def spec_path(rule: str) -> str:
    """Flask's `/jobs/<job_id>` as OpenAPI's `/jobs/{job_id}`."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def assert_conforms(app: Flask, method: str, url: str, response: TestResponse) -> None:
    path = url.split("?", 1)[0]
    rule, _ = app.url_map.bind("localhost").match(path, method, return_rule=True)
    template = spec_path(rule.rule)
    document = served_document(app)
    operation = document["paths"][template][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {template} -> {status} not documented"
    where, answer = _response(document, ("paths", template, method.lower(), "responses", status))
    content = answer.get("content", {})
    if not content:  # documented without a body (304, 101)
        assert not response.get_data(), f"{method} {template} {status}: a body not documented"
        return
    media_type = response.mimetype
    # OpenAPI allows media type ranges (`image/*`, `*/*`); the most specific one applies.
    ranges = (media_type, media_type.split("/")[0] + "/*", "*/*")
    documented = next((name for name in ranges if name in content), None)
    assert documented, f"{method} {template} {status}: {media_type} not documented"
    if media_type != "application/json":
        return
    pointer = _pointer(*where, "content", media_type, "schema")
    registry = Registry().with_resource(
        SPEC_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    validator = Draft202012Validator({"$ref": f"{SPEC_URI}#/{pointer}"}, registry=registry)
    errors = sorted(validator.iter_errors(response.get_json()), key=str)
    assert not errors, f"{method} {template} {status}: {errors[0].message}"


def _response(document: dict, where: tuple[str, ...]) -> tuple[tuple[str, ...], dict]:
    """The response object at `where`, following a `$ref` to a shared one
    (`#/components/responses/...`), with the path it was found at."""
    answer = document
    for part in where:
        answer = answer[part]
    ref = answer.get("$ref")
    if ref is None:
        return where, answer
    target = tuple(ref.removeprefix("#/").split("/"))
    return _response(document, target)
