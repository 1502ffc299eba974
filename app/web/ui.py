"""The browser page."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from ..generation import Priority

bp = Blueprint(
    "ui", __name__, template_folder="templates", static_folder="static", static_url_path="/assets"
)


@bp.get("/")
def index() -> str:
    """A page to submit jobs and follow them live."""
    return render_template(
        "index.html",
        priorities=[priority.label for priority in Priority],
        requires_keys=current_app.config["SERVICE_CONFIG"].requires_keys,
    )


@bp.get("/console")
def console() -> str:
    """The operators' console. The page holds no data: what it shows comes from the
    admin API and its stream, which only an admin key (or open mode) may read."""
    return render_template(
        "console.html", requires_keys=current_app.config["SERVICE_CONFIG"].requires_keys
    )
