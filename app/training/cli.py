"""`modelserve train ...` and `modelserve evaluate ...`.

Heavy imports (TensorFlow, matplotlib, tqdm) happen inside the commands, so
the server never loads them.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from app.cli_options import data_option


train_cli = AppGroup("train", help="Train a model on the real data and write a new model version.")
evaluate_cli = AppGroup("evaluate", help="Re-measure a saved model on its held-out test data.")


def init_app(app) -> None:
    """Register the commands."""
    app.cli.add_command(train_cli)
    app.cli.add_command(evaluate_cli)


def resolve_data_dir(data_dir: Path | None) -> Path:
    """The --data folder, or the configured default; it must exist."""
    path = Path(data_dir or current_app.settings.data_dir)
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

    out = train_review_model(data_dir_for_review(data_dir), current_app.settings.model_dir, seed=seed)
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

    for out in train_trio(data_dir_for_review(data_dir), current_app.settings.model_dir, seed, set(only)):
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
        out = train_final(malaria_data_dir(data_dir), current_app.settings.model_dir, VARIANTS[variant], seed)
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
        out = publish_int8(malaria_data_dir(data_dir), current_app.settings.model_dir, seed)
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

    folder = Path(find_manifest(current_app.settings.model_dir, "malaria_cell").directory)
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
