"""`flask train ...`, `flask evaluate ...` and `flask feedback ...` commands.

Heavy imports (TensorFlow, matplotlib, tqdm) happen inside the commands, so
the server never loads them.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from app.models.base import ManifestError
from app.models.store import StoreUnavailable

train_cli = AppGroup("train", help="Train a model on the real data and write a new model version.")
evaluate_cli = AppGroup("evaluate", help="Re-measure a saved model on its held-out test data.")
feedback_cli = AppGroup("feedback", help="Online learning from user feedback.")
models_cli = AppGroup("models", help="Inspect the model folder and reload running servers.")


def data_option(func):
    """--data: the shared data folder (default: MODELSERVE_DATA_DIR)."""
    return click.option(
        "--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Folder holding imdb/, malaria/ and stopwords/ (default: the DATA_DIR setting).",
    )(func)


def resolve_data_dir(data_dir: Path | None) -> Path:
    """The --data folder, or the configured default; it must exist."""
    path = Path(data_dir or current_app.config["DATA_DIR"])
    if not path.is_dir():
        raise click.ClickException(f"data folder {path} does not exist (give --data or set MODELSERVE_DATA_DIR)")
    return path


def data_dir_for_review(data_dir: Path | None) -> Path:
    """Accept either the shared data folder or its imdb/ subfolder for --data."""
    path = resolve_data_dir(data_dir)
    return path.parent if (path / "train.csv.gz").exists() else path


def malaria_data_dir(data_dir: Path | None) -> Path:
    """Accept the shared data folder or its malaria/ subfolder for --data."""
    path = resolve_data_dir(data_dir)
    return path.parent if (path / "MANIFEST.csv").exists() else path


@train_cli.command("review")
@data_option
@click.option("--seed", default=0, show_default=True, help="Seed for shuffling and cross-validation.")
def train_review(data_dir, seed):
    """Movie-review sentiment model (IMDb train split; figures from the test split)."""
    from app.training.review import train_review_model

    out = train_review_model(data_dir_for_review(data_dir), Path(current_app.config["MODEL_DIR"]), seed=seed)
    click.echo(f"wrote {out}")
    click.echo(json.dumps(json.loads((out / "manifest.json").read_text())["metrics"], indent=2))


@train_cli.command("trio")
@data_option
@click.option("--seed", default=0, show_default=True, help="Seed for SGD shuffling and the decision tree.")
@click.option("--only", multiple=True, type=click.Choice(["logistic_regression", "linear_svc", "decision_tree"]),
              help="Train only this member (repeatable; default: all three).")
def train_trio_command(data_dir, seed, only):
    """Logistic regression, linear SVC and decision tree on the hashed IMDb features."""
    from app.training.sklearn_trio import train_trio

    for out in train_trio(data_dir_for_review(data_dir), Path(current_app.config["MODEL_DIR"]), seed, set(only)):
        metrics = json.loads((out / "manifest.json").read_text())["metrics"]
        click.echo(f"wrote {out}: test accuracy {metrics['accuracy']:.4f}, ROC AUC {metrics['roc_auc']:.4f}")


def variant_option(func):
    """--variant: one of the cross-validated network recipes."""
    from app.training.malaria_cv import VARIANTS

    return click.option("--variant", required=True, type=click.Choice(sorted(VARIANTS)),
                        help="Network and training recipe (app/training/malaria_cv.py VARIANTS).")(func)


@train_cli.command("malaria-fold")
@data_option
@variant_option
@click.option("--fold", required=True, type=click.IntRange(0, 4), help="Which of the five patient folds to hold out.")
@click.option("--seed", default=0, show_default=True, help="Seed for the patient folds, weights and augmentation.")
def train_malaria_fold(data_dir, variant, fold, seed):
    """Train a variant on four patient folds, measure it on the fifth; writes evaluation/malaria_cv/VARIANT/fold-N.json."""
    from app.training.malaria_cv import VARIANTS, run_fold

    try:
        out = run_fold(malaria_data_dir(data_dir), VARIANTS[variant], fold, seed)
    except (RuntimeError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    metrics = json.loads(out.read_text())["metrics"]
    click.echo(f"wrote {out}: accuracy {metrics['accuracy']:.4f}, ROC AUC {metrics['roc_auc']:.4f}, "
               f"sensitivity {metrics['sensitivity']:.4f}, specificity {metrics['specificity']:.4f}")


@train_cli.command("malaria")
@data_option
@variant_option
@click.option("--seed", default=0, show_default=True, help="Seed for the weights and augmentation.")
def train_malaria(data_dir, variant, seed):
    """Train a cross-validated variant on every patient and publish it as the next malaria_cell version
    (its manifest carries the variant's cross-validated figures; run `make malaria-cv` first)."""
    from app.training.malaria_cv import VARIANTS, train_final

    try:
        out = train_final(malaria_data_dir(data_dir), Path(current_app.config["MODEL_DIR"]), VARIANTS[variant], seed)
    except (RuntimeError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    click.echo(f"wrote {out}: cross-validated accuracy {metrics['accuracy']:.4f} ± {metrics['accuracy_std']:.4f}, "
               f"ROC AUC {metrics['roc_auc']:.4f}")


@train_cli.command("malaria-int8")
@data_option
@variant_option
@click.option("--seed", default=0, show_default=True, help="The patient folds' seed (as in malaria-fold).")
def train_malaria_int8(data_dir, variant, seed):
    """Quantize every fold's network to int8 and cross-validate it against float32 (evaluation/malaria_cv/VARIANT-int8/)."""
    from app.training.malaria_int8 import cross_validate_int8

    try:
        path, comparison = cross_validate_int8(malaria_data_dir(data_dir), variant, seed)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {path}: accuracy fp32 {comparison['fp32']['accuracy']['mean']:.4%} "
               f"int8 {comparison['int8']['accuracy']['mean']:.4%}, speed-up {comparison['int8_speedup_median']}, "
               f"kept: {comparison['kept']}")


@train_cli.command("malaria-quantize")
@data_option
@click.option("--seed", default=0, show_default=True, help="Seed for choosing the calibration cells.")
def train_malaria_quantize(data_dir, seed):
    """Publish the newest malaria_cell version quantized to int8 as the next version (float32 file kept beside it);
    refused unless `flask train malaria-int8` kept int8 for its variant."""
    from app.training.malaria_int8 import publish_int8

    try:
        out = publish_int8(malaria_data_dir(data_dir), Path(current_app.config["MODEL_DIR"]), seed)
    except (RuntimeError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    click.echo(f"wrote {out}: cross-validated int8 accuracy {metrics['accuracy']:.4f} ± {metrics['accuracy_std']:.4f}, "
               f"ROC AUC {metrics['roc_auc']:.4f}")


@train_cli.command("malaria-cell-check")
@data_option
@click.option("--quantile", default=0.998, show_default=True, type=click.FloatRange(0.9, 1.0),
              help="The share of training cells the check accepts (its threshold).")
@click.option("--results", type=click.Path(path_type=Path), default=None,
              help="Where the figures go (default: evaluation/malaria_cell_check.json).")
def train_malaria_cell_check(data_dir, quantile, results):
    """Fit the served malaria_cell version's cell-likeness check, measure its false alarms by patient and its
    detection of images that are not cells, and add it to that version (evaluation/malaria_cell_check.json)."""
    from app.batch.core import find_manifest
    from app.training.cell_check import RESULTS, evaluate_and_ship, ship

    folder = Path(find_manifest(current_app.config["MODEL_DIR"], "malaria_cell").directory)
    figures = evaluate_and_ship(malaria_data_dir(data_dir), quantile)
    ship(folder, figures)
    results = results or RESULTS
    results.write_text(json.dumps({k: v for k, v in figures.items() if k != "shipped"}, indent=2) + "\n")
    click.echo(f"false alarms on held-out patients' cells: {figures['false_alarms']['false_alarm_rate']:.2%}; "
               f"detection: " + ", ".join(f"{k} {v:.0%}" for k, v in figures["detection_rate"].items()
                                          if k != "measured"))
    click.echo(f"added to {folder}; figures in {results}")


@train_cli.command("malaria-cv-report")
@variant_option
def malaria_cv_report(variant):
    """Pool the fold results written so far: mean ± std, pooled figures, worst patients (summary.json, plot)."""
    from app.training.malaria_cv import table_row, write_summary

    try:
        path, summary = write_summary(variant)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {path} (folds {summary['folds_done']} of {summary['folds']})")
    click.echo("| variant | multiply-adds | folds | accuracy | ROC AUC | sensitivity | specificity | worst patient | training per fold |")
    click.echo(table_row(summary))
    worst = ", ".join(f"{p} {t['accuracy']:.0%} of {t['cells']}" for p, t in summary["per_patient_accuracy"]["worst"].items())
    click.echo(f"worst patients: {worst}")


@evaluate_cli.command("review")
@data_option
@click.option("-V", "--model-version", "version", default=None, help="Model version (default: newest).")
def evaluate_review(data_dir, version):
    """Measure the saved sentiment model on the IMDb test split and compare with its manifest."""
    from app.training.review import MODEL_NAME, evaluate_text_model

    model = current_app.extensions["model_registry"].get(MODEL_NAME, version)
    metrics = evaluate_text_model(model, data_dir_for_review(data_dir))
    recorded = model.manifest.metrics.get("accuracy")
    click.echo(json.dumps(metrics, indent=2))
    click.echo(f"accuracy now {metrics['accuracy']:.5f}, recorded in manifest {recorded}")


@feedback_cli.command("learn")
@data_option
@click.option("--model", "model_name", default="review_sentiment", show_default=True,
              help="Text model whose production version learns the feedback.")
@click.option("--margin", default=0.001, show_default=True,
              help="Largest accuracy loss (a fraction: 0.001 is 0.1 point) that still promotes the new version.")
@click.option("--promote", "force", is_flag=True, help="Promote the new version whatever its accuracy (logged).")
def learn(data_dir, model_name, margin, force):
    """partial_fit the production version on unused feedback into a new version; promote it only if
    its accuracy on the IMDb test split (never trained on) is not worse than production's by more than --margin."""
    from app.db import get_engine, review_feedback
    from app.training.review import learn_from_feedback

    engine = get_engine()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(review_feedback.c.id, review_feedback.c.review, review_feedback.c.label)
            .where(review_feedback.c.model == model_name, review_feedback.c.learned_in_version.is_(None))
            .order_by(review_feedback.c.id)
        ).all()
    if not rows:
        click.echo("no new feedback; nothing to learn")
        return
    model = current_app.extensions["model_registry"].get(model_name)
    data = Path(data_dir or current_app.config["DATA_DIR"])
    out = learn_from_feedback(model, [r.review for r in rows], [r.label for r in rows], data if data.is_dir() else None)
    new_version = out.name
    with engine.begin() as conn:
        conn.execute(
            sa.update(review_feedback)
            .where(review_feedback.c.id.in_([r.id for r in rows]))
            .values(learned_in_version=new_version)
        )
    if model_store().remote:  # the new version goes where every instance reads (the promotion gate needs it there)
        try:
            publish_copy(model_store(), out, model_name, new_version)
        except (StoreUnavailable, FileExistsError) as exc:
            raise click.ClickException(f"version {new_version} could not be published to the store: {exc}") from exc
    click.echo(f"learned {len(rows)} feedback rows into {model_name} version {new_version} ({out})")
    promote_if_not_worse(model_name, model.version, model.manifest.metrics, out, margin, force)


def publish_copy(store, folder: Path, name: str, version: str) -> str:
    """Upload a copy of a local version folder to a shared store (the folder stays); returns where it went."""
    staging = store.staging(name, version)
    shutil.copytree(folder, staging, dirs_exist_ok=True)
    return store.publish(staging, name, str(version))


def model_store():
    """The model store the settings name (a shared store's changes reach every instance)."""
    return current_app.extensions["model_registry"].store


def how_servers_follow() -> str:
    """What a running server needs to pick up a change to the store."""
    seconds = current_app.config["MODEL_POLL_SECONDS"]
    if seconds:
        return f"every running worker picks it up within MODEL_POLL_SECONDS ({seconds} s), no request waiting"
    return "running servers pick it up on `flask models reload --restart` (no request is dropped)"


def keep_production(name: str, production: str, folder: Path, why: str) -> None:
    """Leave production where it is (pinning it, so that the newer version does not become the default)."""
    from app.models.aliases import PRODUCTION, read_aliases, set_alias

    if PRODUCTION not in read_aliases(model_store(), name):
        set_alias(model_store(), name, production)
    click.echo(f"NOT promoted: version {folder.name} stays unpromoted because {why}. "
               f"Production stays v{production}.")


def promote_if_not_worse(name: str, production: str, before: dict, folder: Path, margin: float, force: bool) -> None:
    """The gate of online learning: a new version serves only if it measured no worse than production."""
    import logging

    from app.models.aliases import set_alias

    after = json.loads((folder / "manifest.json").read_text()).get("metrics", {})
    old, new = before.get("accuracy"), after.get("accuracy")
    if force:
        logging.getLogger("app.training").warning("version %s of %s promoted with --promote (accuracy %s, "
                                                   "production v%s %s)", folder.name, name, new, production, old)
        verdict = "promoted with --promote"
    elif not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
        return keep_production(name, production, folder, "it could not be compared with production (no test data "
                               "to measure it); `flask models promote` it after checking it yourself")
    elif new < old - margin:
        return keep_production(name, production, folder, f"its accuracy on the IMDb test split is {new:.5f}, "
                               f"production's {old:.5f}: worse by {100 * (old - new):.3f} points, more than the "
                               f"margin of {100 * margin:.3f}")
    else:
        verdict = f"promoted: accuracy {new:.5f} against production v{production} {old:.5f}"
    set_alias(model_store(), name, folder.name)
    click.echo(f"{verdict}; production is now v{folder.name}; {how_servers_follow()}")


@feedback_cli.command("list")
def list_feedback():
    """Show stored feedback counts by label and learning state."""
    from app.db import get_engine, review_feedback

    with get_engine().connect() as conn:
        rows = conn.execute(
            sa.select(review_feedback.c.label, review_feedback.c.learned_in_version, sa.func.count())
            .group_by(review_feedback.c.label, review_feedback.c.learned_in_version)
        ).all()
    if not rows:
        click.echo("no feedback stored yet (POST /review/feedback, or the buttons on /ui/review)")
    for label, version, count in rows:
        click.echo(f"{label:9s} {'learned in v' + version if version else 'not learned yet':20s} {count}")


@feedback_cli.command("export")
@click.argument("path", type=click.Path(path_type=Path))
def export_feedback(path):
    """Write every feedback row to a CSV file (id, time, label, versions, review)."""
    import csv

    from app.db import get_engine, review_feedback as table

    columns = [table.c.id, table.c.created_at, table.c.model, table.c.label, table.c.answered_by_version,
               table.c.learned_in_version, table.c.review]
    with get_engine().connect() as conn, open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([c.name for c in columns])
        rows = conn.execute(sa.select(*columns).order_by(table.c.id)).all()
        writer.writerows(rows)
    click.echo(f"wrote {len(rows)} feedback rows to {path}")


@feedback_cli.command("delete")
@click.argument("ids", nargs=-1, type=int, required=True)
def delete_feedback(ids):
    """Delete feedback rows by id (see `flask feedback export`)."""
    from app.db import get_engine, review_feedback as table

    with get_engine().begin() as conn:
        deleted = conn.execute(sa.delete(table).where(table.c.id.in_(ids))).rowcount
    click.echo(f"deleted {deleted} feedback rows")


@models_cli.command("list")
def list_models():
    """Every model version in MODEL_DIR: verified and loadable, or refused and why; aliases and the default."""
    registry = current_app.extensions["model_registry"]
    registry.load_all()
    click.echo(f"{'MODEL':22s} {'VERSION':8s} {'STATUS':8s} {'ACCURACY':16s} {'MEASURED ON':45s} TAGS")
    for model in sorted(registry.all_models(), key=lambda m: (m.name, int(m.version))):
        tags = registry.version_tags(model.name, model.version)
        accuracy, measured_on = held_out_accuracy(model.manifest.metrics)
        click.echo(f"{model.name:22s} {'v' + model.version:8s} {'ok':8s} {accuracy:16s} {measured_on:45s} "
                   f"{' '.join(sorted(tags))}")
    for key, reason in sorted(registry.refused.items()):
        name, _, version = key.partition("/")
        click.echo(f"{name:22s} {'v' + version:8s} REFUSED  {reason}")
    if registry.refused:
        raise SystemExit(1)


def answer_summary(manifest: dict) -> str:
    """What a model's answers will hold, in words: its outputs, and whether scores are probabilities."""
    labels = manifest.get("labels") or []
    words = {"label": f"label (one of {', '.join(labels)})" if labels else "label",
             "probabilities": "probabilities" + (" per label" if labels else ""),
             "decision_scores": "decision_scores" + (" per label" if labels else "") + " (NOT probabilities: "
                                "the classifier's decision function; the highest wins)",
             "decision_score": "decision_score (NOT a probability)"}
    return " and ".join(words.get(spec["name"], spec["name"]) for spec in manifest["outputs"])


def held_out_accuracy(metrics: dict) -> tuple[str, str]:
    """(accuracy, what it was measured on), as the manifest states them: "0.9186" and "IMDb official test
    split", or "0.9660 ± 0.0032" and "5-fold cross-validation by patient"; "-" where none is stated."""
    accuracy = metrics.get("accuracy")
    if not isinstance(accuracy, (int, float)):
        return "-", "-"
    spread = metrics.get("accuracy_std")
    shown = f"{accuracy:.4f}" + (f" ± {spread:.4f}" if isinstance(spread, (int, float)) else "")
    dataset = str(metrics.get("dataset") or "not stated in the manifest")
    return shown, dataset.split(" (")[0].split(" over ")[0].split(":")[0][:45]


@models_cli.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--alias", default="production", show_default=True, help="Alias to point at VERSION.")
def promote(name, version, alias):
    """Point an alias (production: what requests without a version get) at a version."""
    from app.models.aliases import AliasError, set_alias

    try:
        before = set_alias(model_store(), name, version, alias)
    except (AliasError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name} {alias}: {before or '(none)'} -> {version}")
    click.echo(how_servers_follow())


@models_cli.command("rollback")
@click.argument("name")
@click.option("--alias", default="production", show_default=True, help="Alias to move back.")
def rollback(name, alias):
    """Point an alias back at the version it had before its last promotion."""
    from app.models.aliases import AliasError, roll_back

    try:
        before, after = roll_back(model_store(), name, alias)
    except (AliasError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name} {alias}: {before} -> {after}")
    click.echo(how_servers_follow())


def number_list(text: str | None, what: str) -> list[float] | None:
    """'0.5,0.5,0.5' -> [0.5, 0.5, 0.5]."""
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{what} must be numbers separated by commas") from None


@models_cli.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("-V", "--model-version", "version", type=click.IntRange(min=1), default=None,
              help="Version number (default: the next one).")
@click.option("--labels", default="", help="Comma-separated class labels, in the model's output order.")
@click.option("--description", default="", help="One line saying what the model does.")
@click.option("--class", "python_class", default="model:Model", show_default=True,
              help="For a folder: the Model subclass to serve, as module:Class.")
@click.option("--trust", multiple=True, help="For a .skops file: a type to trust (repeatable; read it first).")
@click.option("--image", is_flag=True, help="ONNX image classifier: take encoded images, preprocess as configured.")
@click.option("--input-size", default=None, help="Image model: H,W (default: from the graph).")
@click.option("--resize", type=click.Choice(["pad", "crop", "stretch"]), default="pad", show_default=True,
              help="Image model: fit the image to the input size by padding, center-cropping or stretching.")
@click.option("--filter", "resample", type=click.Choice(["nearest", "bilinear", "bicubic", "lanczos"]),
              default="bilinear", show_default=True, help="Image model: the resampling filter.")
@click.option("--scale", type=float, default=1 / 255, show_default=True, help="Image model: factor on 0..255 pixels.")
@click.option("--mean", default=None, help="Image model: per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406")
@click.option("--std", default=None, help="Image model: per-channel std divided by, e.g. 0.229,0.224,0.225")
@click.option("--layout", type=click.Choice(["NHWC", "NCHW"]), default=None, help="Image model (default: from the graph).")
@click.option("--logits", is_flag=True, help="Image model: the graph outputs logits (softmax is applied).")
@click.option("--reference", type=click.Path(exists=True, path_type=Path), default=None,
              help="Held-out data (a CSV/Parquet table, or a folder of images): the reference profile drift is "
                   "measured against is written from it.")
def add_model_command(name, path, version, labels, description, python_class, trust, image, input_size, resize,
                      resample, scale, mean, std, layout, logits, reference):
    """Serve a model file (.onnx, .skops, .joblib) or a folder with a Python class as NAME.

    Copies it into MODEL_DIR/NAME/VERSION/, infers its inputs and outputs, writes the
    manifest with hashes, and runs a smoke prediction. Running servers serve it within
    MODEL_POLL_SECONDS.
    """
    from app.models.add import AddError, AddOptions, add_model

    image_settings = None
    if image:
        size = [int(x) for x in number_list(input_size, "--input-size")] if input_size else None
        image_settings = {"input_size": size, "resize": resize, "filter": resample, "scale": scale,
                          "mean": number_list(mean, "--mean") or [0.0, 0.0, 0.0],
                          "std": number_list(std, "--std") or [1.0, 1.0, 1.0], "layout": layout,
                          "output_kind": "logits" if logits else "probabilities"}
    options = AddOptions(version=version, labels=[x.strip() for x in labels.split(",") if x.strip()],
                         description=description, python_class=python_class, trust=list(trust), image=image_settings,
                         reference=reference)
    try:
        folder, manifest, rows = add_model(model_store(), name, path, options)
    except (AddError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"added {name} version {manifest['version']} ({manifest['runtime']}) in {folder}")
    click.echo("inputs:  " + ", ".join(f"{s['name']} {s['datatype']} {s['shape']}" for s in manifest["inputs"]))
    click.echo("outputs: " + ", ".join(f"{s['name']} {s['datatype']} {s['shape']}" for s in manifest["outputs"]))
    click.echo(f"answers: {answer_summary(manifest)}")
    click.echo(f"smoke prediction: {json.dumps(rows[0])}")
    if "reference.json" in manifest["artifacts"]:
        click.echo(f"reference profile: from {reference.name} (drift: modelserve monitor report {name})")
    else:
        click.echo(f"reference profile: none (drift needs one: modelserve monitor reference {name} HELD-OUT-DATA)")
    click.echo(f"serve it: {how_servers_follow()}")


@models_cli.command("publish")
@click.argument("source", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "names", multiple=True, help="Publish only this model (repeatable; default: all).")
def publish_models(source, names):
    """Copy a local model folder's versions (default: MODEL_DIR) into the shared MODEL_STORE: each verified
    against its manifest first, artifacts uploaded before the manifest; versions the store has are skipped,
    and a model's aliases are copied when the store has none."""
    from app.models.aliases import ALIASES_FILE
    from app.models.registry import discover

    store, source = model_store(), Path(source or current_app.config["MODEL_DIR"])
    if not store.remote:
        raise click.ClickException("MODEL_STORE names no shared store (s3://, gs:// or file://) to publish to")
    try:
        for manifest in discover(source, set(names) or None):
            where = f"{manifest.name} v{manifest.version}"
            if store.exists(f"{manifest.name}/{manifest.version}/manifest.json"):
                click.echo(f"{where}: already in the store")
                continue
            try:
                manifest.verify_artifacts()
            except ManifestError as exc:
                raise click.ClickException(f"{where} not published: {exc}") from None
            click.echo(f"{where}: published to {publish_copy(store, manifest.directory, manifest.name, manifest.version)}")
        for aliases in sorted(source.glob(f"*/{ALIASES_FILE}")):
            name = aliases.parent.name
            if (not names or name in names) and store.read_text(f"{name}/{ALIASES_FILE}") is None:
                store.write_text(f"{name}/{ALIASES_FILE}", aliases.read_text())
                click.echo(f"{name}: aliases published")
    except StoreUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


@models_cli.command("reload")
@click.option("--restart", is_flag=True, help="Restart gunicorn's workers instead (SIGHUP: new code too); "
                                              "requests wait while the new workers load.")
@click.option("--pidfile", default=None, help="With --restart: gunicorn pidfile (default: GUNICORN_PIDFILE, else the "
                                              "one running server of this checkout, instance/gunicorn-PORT.pid).")
def reload_models(restart, pidfile):
    """Make running servers load new model versions, aliases and unloads without making a request wait.

    Every worker watches the model store (MODEL_POLL_SECONDS) and loads what changed beside what it
    serves; this asks the workers serving the local folder to load it again at their next check.
    """
    seconds = current_app.config["MODEL_POLL_SECONDS"]
    store = model_store()
    if not restart and seconds:
        if store.remote:
            click.echo(f"instances follow {store.url} by themselves within MODEL_POLL_SECONDS ({seconds} s)")
        else:
            store.request_reload()
            click.echo(f"asked every worker serving {store.url} to load it again: within {seconds} s, "
                       "the models they serve answering meanwhile")
        return
    restart_workers(pidfile)


def restart_workers(pidfile: str | None) -> None:
    """SIGHUP to this checkout's gunicorn master: new workers start (and load the models), old ones finish."""
    import os
    import signal

    from app.config import is_our_server

    path = Path(pidfile or os.environ.get("GUNICORN_PIDFILE") or running_server_pidfile())
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        raise click.ClickException(f"no gunicorn pid in {path}; is the server running?") from None
    if not is_our_server(pid, same_checkout=False):
        raise click.ClickException(f"process {pid} (from {path}) is not a running gunicorn; nothing was signalled")
    os.kill(pid, signal.SIGHUP)
    click.echo(f"sent SIGHUP to gunicorn master {pid}: new workers load the models, old ones finish their requests")


def running_server_pidfile() -> Path:
    """The pidfile of the one gunicorn of this checkout running now (instance/gunicorn-PORT.pid); a clear
    error when there is none or several. Pidfiles whose process is gone or is not this checkout's
    gunicorn are passed over."""
    from app.config import is_our_server, pidfile_folder

    alive = []
    for path in sorted(pidfile_folder().glob("gunicorn-*.pid")):
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
        if is_our_server(pid):
            alive.append(path)
    if len(alive) == 1:
        return alive[0]
    if not alive:
        raise click.ClickException("no running server of this checkout found (no live instance/gunicorn-*.pid); "
                                   "is it running?")
    raise click.ClickException("several servers are running; say which with --pidfile: "
                               + ", ".join(str(p) for p in alive))


@click.command("score")
@click.argument("model_name", metavar="MODEL")
@click.argument("source", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.argument("output", metavar="OUTPUT", type=click.Path(path_type=Path))
@click.option("-V", "--model-version", "version", default=None,
              help="Model version (default: the production alias, else the newest).")
@click.option("--batch-size", default=64, show_default=True, help="Items per model call.")
@click.option("--column", "columns", multiple=True, help="Text column, or feature columns (repeatable).")
@click.option("--key", default=None, help="Column that identifies a row (default: the row number).")
@click.option("--threads", default=None, type=int, help="ONNX Runtime threads (default: every core).")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar with the total and the time left (default: on a terminal only).")
@with_appcontext
def score_command(model_name, source, output, version, batch_size, columns, key, threads, progress):
    """Score a folder of images or a CSV/Parquet table into OUTPUT (.csv or .parquet); resumes when re-run.

    Example: modelserve score review_sentiment reviews.csv scores.parquet --column text --key id
    """
    import os

    from app.batch.core import ScoringError, load_model
    from app.batch.files import SourceError
    from app.batch.local import score_dataset
    from app.models.base import Limits

    try:
        store = model_store()
        model = load_model(store.fetch(model_name, version) if store.remote else store.root, model_name, version, batch_size,
                           threads or os.cpu_count() or 1, Limits.from_config(current_app.config))
        if progress is None:
            progress = sys.stderr.isatty()
        summary = score_dataset(model, source, output, batch_size, list(columns) or None, key, progress)
    except (ScoringError, SourceError, StoreUnavailable, FileNotFoundError, ManifestError) as exc:
        raise click.ClickException(str(exc)) from exc
    resumed = f", {summary.skipped} from an earlier run" if summary.skipped else ""
    click.echo(f"scored {summary.scored} items with {model.name} v{model.version} in {summary.seconds:.1f} s "
               f"({summary.rate:.0f} items/s): {summary.errors} {'error' if summary.errors == 1 else 'errors'}{resumed}; "
               f"results in {output}")


db_cli = AppGroup("db", help="Database schema.")


@db_cli.command("upgrade")
def db_upgrade():
    """Bring the database schema to the newest migration (a release step; exits non-zero if it cannot)."""
    from app.db import DatabaseUnavailable, ensure_schema
    from app.migrations import current_and_head

    app = current_app._get_current_object()
    app.extensions["db_schema_current"] = False
    try:
        ensure_schema(app, migrate=True)
    except DatabaseUnavailable as exc:
        raise click.ClickException(f"database unavailable: {exc}") from exc
    current, _ = current_and_head(app.extensions["db_engine"])
    click.echo(f"database schema at revision {current}")
