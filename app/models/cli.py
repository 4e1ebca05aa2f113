"""`modelserve models ...`: the model store's versions, their aliases, adding a model, publishing a folder,
and making running servers follow."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from app.models.base import ManifestError
from app.models.store import StoreUnavailable

models_cli = AppGroup("models", help="Inspect the model folder and reload running servers.")


def init_app(app) -> None:
    """Register the commands."""
    app.cli.add_command(models_cli)


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
    seconds = current_app.settings.model_poll_seconds
    if seconds:
        return f"every running worker picks it up within MODEL_POLL_SECONDS ({seconds} s), no request waiting"
    return "running servers pick it up on `flask models reload --restart` (no request is dropped)"


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

    store, source = model_store(), Path(source or current_app.settings.model_dir)
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
    seconds = current_app.settings.model_poll_seconds
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

    path = Path(pidfile or current_app.settings.gunicorn_pidfile or running_server_pidfile())
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
