"""The floor: the least a Flask endpoint can do, served like ours.

`POST /api/v1/jobs` parses the JSON body and answers 202 with a small job-shaped
document, without storing anything; `GET /health` answers like ours. Every benchmark
reports our figure as a ratio of this one, measured in the same run on the same
gunicorn settings, so a slow or busy machine moves both.
"""

from __future__ import annotations

import itertools

from flask import Flask, jsonify, request

app = Flask(__name__)
_ids = itertools.count(1)


@app.post("/api/v1/jobs")
def submit() -> tuple[object, int]:
    body = request.get_json(force=True)
    return jsonify(id=f"{next(_ids):032x}", status="queued", generator=body.get("generator")), 202


@app.get("/health")
def health() -> object:
    return jsonify(status="ok")
