"""The browser page."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint(
    "ui", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)


@bp.get("/")
def index() -> str:
    """A page to submit jobs and follow them."""
    return render_template("index.html")
