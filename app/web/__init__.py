"""Server-rendered pages (no CDN, no front-end build)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from flask import Blueprint, abort, current_app, render_template, request, send_from_directory
from PIL import Image

from app.api import registry
from app.api.classify import CELL_MODEL
from app.api.review import REVIEW_MODEL
from app.config import PROJECT_ROOT
from app.endpoints import public, undocumented

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static/web")
# Plots are drawn for 100 CSS pixels per inch; a PNG stored at 200 dpi shows at half its
# pixel size, sharp on high-density screens (app/training/plots.py).
DISPLAY_DPI = 100


def plot_files(model) -> list[str]:
    """PNG artifacts listed (and hashed) in a model's manifest."""
    return sorted(name for name in model.manifest.artifacts if name.endswith(".png"))


@lru_cache(maxsize=256)
def display_size(path: Path) -> tuple[int, int]:
    """CSS width and height of a plot: its pixel size scaled by the dpi recorded in the PNG."""
    with Image.open(path) as image:
        scale = DISPLAY_DPI / float(image.info.get("dpi", (DISPLAY_DPI,))[0] or DISPLAY_DPI)
        return round(image.width * scale), round(image.height * scale)


def plots_of(model) -> list[dict]:
    """A model's plots with the size to show them at and what they show."""
    return [{**dict(zip(("file", "width", "height"), (name, *display_size(model.manifest.directory / name)))),
             "caption": plot_caption(model, name)} for name in plot_files(model)]


@bp.get("/")
@public
def home():
    """Home page with links to every page.
    ---
    get:
      summary: Home page
      tags: [web]
      responses:
        200: {description: HTML page, content: {text/html: {schema: {type: string}}}}
    """
    return render_template("home.html")


EXAMPLE_CELLS = PROJECT_ROOT / "examples" / "cells"
# The models the product is built around, shown first.
FLAGSHIPS = (REVIEW_MODEL, CELL_MODEL)


def example_cells() -> list[dict]:
    """The committed example cells (examples/cells/LABEL/FILE.png), for one-click tries."""
    return [{"label": path.parent.name, "file": f"{path.parent.name}/{path.name}"}
            for path in sorted(EXAMPLE_CELLS.glob("*/*.png"))]


@bp.get("/ui/classify")
@public
def classify_page():
    """Upload a cell image and see the prediction with probabilities.
    ---
    get:
      summary: Cell classification page
      tags: [web]
      responses:
        200: {description: HTML page, content: {text/html: {schema: {type: string}}}}
    """
    return render_template("classify.html", examples=example_cells())


@bp.get("/ui/examples/cells/<label>/<filename>")
def example_cell(label: str, filename: str):
    """One of the committed example cells (nothing else under examples/ is served).
    ---
    get:
      summary: An example cell image
      tags: [web]
      responses:
        200: {description: PNG image, content: {image/png: {schema: {type: string, format: binary}}}}
    """
    if f"{label}/{filename}" not in {cell["file"] for cell in example_cells()}:
        abort(404)
    return send_from_directory(EXAMPLE_CELLS / label, filename, mimetype="image/png", max_age=3600)


@bp.get("/ui/review")
@public
def review_page():
    """Type a review, see its sentiment, send correct/incorrect feedback.
    ---
    get:
      summary: Review sentiment page
      tags: [web]
      responses:
        200: {description: HTML page, content: {text/html: {schema: {type: string}}}}
    """
    return render_template("review.html")


@bp.get("/ui/models")
def models_page():
    """Every model with its version, held-out metrics and training plots.
    ---
    get:
      summary: Model catalogue page
      tags: [web]
      responses:
        200: {description: HTML page, content: {text/html: {schema: {type: string}}}}
    """
    reg = registry()
    models = sorted(reg.all_models(), key=card_order)
    plots = {f"{m.name}/{m.version}": plots_of(m) for m in models}
    tags = {f"{m.name}/{m.version}": reg.version_tags(m.name, m.version) for m in models}
    log = current_app.extensions.get("prediction_log")
    if log is not None:
        log.flush(1.0)  # once for the page: every card then follows the requests just answered
    return render_template("models.html", models=models, plots=plots, tags=tags, refused=reg.refused,
                           monitoring={f"{m.name}/{m.version}": monitoring_summary(log, m) for m in models})


def monitoring_summary(log, model) -> dict | None:
    """The model card's line on production: requests logged, drift, live accuracy (None when the log is off or
    the database does not answer: the page still shows the rest)."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.monitoring.report import monitoring_report

    if log is None:
        return None
    try:
        return monitoring_report(log, model, last=1000, flush=False)
    except SQLAlchemyError:
        return None


def card_order(model) -> tuple:
    """The flagship models first, then the best held-out accuracy first; versions of a model newest first."""
    accuracy = model.manifest.metrics.get("accuracy")
    return (model.name not in FLAGSHIPS, FLAGSHIPS.index(model.name) if model.name in FLAGSHIPS else 0,
            -(accuracy if isinstance(accuracy, (int, float)) else -1), model.name, -int(model.version))


def plot_caption(model, filename: str) -> str:
    """What a plot shows, said by the page (the titles drawn into older plots name the version they were made
    for, which a version that quantizes another's network inherits)."""
    source = (model.manifest.get("training") or {}).get("quantization", {}).get("from_version")
    captions = {
        "confusion_matrix.png": "Confusion matrix on the held-out data",
        "roc_curve.png": "ROC curve on the held-out data",
        "per_patient_accuracy.png": "Accuracy per held-out patient (cross-validation by patient)",
        "training_accuracy.png": "Training accuracy by epoch",
        "training_loss.png": "Training loss by epoch",
    }
    caption = captions.get(filename, filename.removesuffix(".png").replace("_", " "))
    if source and filename.startswith("training_"):
        caption += f" of the float32 network of version {source}, which this version quantizes"
    return caption



@bp.get("/ui/models/<name>/<version>/<filename>")
def model_plot(name: str, version: str, filename: str):
    """A plot PNG listed in a model's manifest (nothing else in the model folder is served).
    ---
    get:
      summary: A model's evaluation or training plot
      tags: [web]
      responses:
        200: {description: PNG image, content: {image/png: {schema: {type: string, format: binary}}}}
    """
    model = registry().get(name, version)
    if filename not in plot_files(model):
        abort(404)
    return send_from_directory(model.manifest.directory, filename, mimetype="image/png")


@bp.get("/favicon.ico")
@public
@undocumented
def favicon():
    """The icon browsers ask for on every page (a static file, so not in the API description)."""
    return send_from_directory(bp.static_folder, "favicon.svg", mimetype="image/svg+xml", max_age=86400)


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
    models = sorted(registry().all_models(), key=card_order)
    kinds = {}
    for model in models:  # one entry per name, the best-placed version's input kind
        spec = model.inputs[0] if len(model.inputs) == 1 else None
        kinds.setdefault(model.name, "image" if spec is not None and spec.content == "image" else
                         "text" if spec is not None and spec.datatype == "BYTES" else "json")
    return render_template("jobs.html", models=kinds)


# Pages load their scripts and styles as files from this server; nothing inline runs.
PAGE_POLICY = "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
# Everything else (JSON, job results, images) is data: it may load and run nothing.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"


@bp.after_app_request
def security_headers(response):
    """Conservative security headers on every response (pages and API alike)."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    page = response.mimetype == "text/html" and request.blueprint in ("web", "docs")
    response.headers.setdefault("Content-Security-Policy", PAGE_POLICY if page else API_POLICY)
    if response.mimetype == "text/html":
        response.headers.setdefault("X-Frame-Options", "DENY")
    return response
