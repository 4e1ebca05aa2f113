"""Server-rendered pages (no CDN, no front-end build)."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static/web")


@bp.get("/ui/jobs")
def jobs_page():
    """Post a job, watch its status, see the result (what the AzureMLDeploy test page did).
    ---
    get:
      summary: Web page for the job API
      tags: [web]
      responses:
        200:
          description: HTML page
          content: {text/html: {schema: {type: string}}}
    """
    registry = current_app.extensions["model_registry"]
    return render_template("jobs.html", models=registry.names())


@bp.after_app_request
def security_headers(response):
    """Conservative security headers on every response (pages and API alike)."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
        )
    return response
