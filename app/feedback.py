"""Review feedback: the true labels users send for reviews (POST /review/feedback), kept by FeedbackStore,
which owns every statement on them, and `modelserve feedback ...`, which lists, exports and deletes them
and learns them into a new version behind the accuracy gate."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from app.cli_options import data_option
from app.database import insert_once, review_feedback

from app.models.cli import how_servers_follow, model_store, publish_copy
from app.models.store import StoreUnavailable

feedback_cli = AppGroup("feedback", help="Online learning from user feedback.")


class KeyReused(Exception):
    """An Idempotency-Key already named other feedback."""


class FeedbackStore:
    """Review feedback rows: stored once per repeat, listed, learned, exported and deleted."""

    table = review_feedback

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def store(self, model: str, review: str, label: str, answered_by: str, client: str,
              idempotency_key: str | None) -> tuple[int, bool]:
        """Store one row once: a client's repeat (same text and label, or same Idempotency-Key) gives the
        earlier row's id. Returns (id, created); KeyReused when the key named other feedback."""
        row = {"review": review, "label": label, "model": model, "client": client, "answered_by_version": answered_by,
               "content_hash": hashlib.sha256("\0".join([client, model, label, review]).encode()).hexdigest(),
               "idempotency_key": idempotency_key}
        return insert_once(self.engine, self.table, row, lambda: self.earlier(row))

    def earlier(self, row: dict) -> int | None:
        """The id of a stored row this one repeats."""
        table = self.table
        with self.engine.connect() as conn:
            if row["idempotency_key"]:
                found = conn.execute(sa.select(table.c.id, table.c.content_hash)
                                     .where(table.c.idempotency_key == row["idempotency_key"])).first()
                if found is not None:
                    if found.content_hash != row["content_hash"]:
                        raise KeyReused("this Idempotency-Key was already used for different feedback")
                    return found.id
            return conn.execute(sa.select(table.c.id).where(table.c.content_hash == row["content_hash"])).scalar()

    def unlearned(self, model: str) -> list:
        """(id, review, label) of the model's rows no version has learned yet, oldest first."""
        table = self.table
        with self.engine.connect() as conn:
            return conn.execute(sa.select(table.c.id, table.c.review, table.c.label)
                                .where(table.c.model == model, table.c.learned_in_version.is_(None))
                                .order_by(table.c.id)).all()

    def mark_learned(self, ids: list[int], version: str) -> None:
        """Record the version these rows were learned into."""
        with self.engine.begin() as conn:
            conn.execute(sa.update(self.table).where(self.table.c.id.in_(ids)).values(learned_in_version=version))

    def counts(self) -> list:
        """(label, learned-in version or None, rows) of every group."""
        table = self.table
        with self.engine.connect() as conn:
            return conn.execute(sa.select(table.c.label, table.c.learned_in_version, sa.func.count())
                                .group_by(table.c.label, table.c.learned_in_version)).all()

    def export(self, path: Path) -> int:
        """Every row into a CSV file (id, time, model, label, versions, review); returns how many."""
        table = self.table
        columns = [table.c.id, table.c.created_at, table.c.model, table.c.label, table.c.answered_by_version,
                   table.c.learned_in_version, table.c.review]
        with self.engine.connect() as conn, open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([c.name for c in columns])
            rows = conn.execute(sa.select(*columns).order_by(table.c.id)).all()
            writer.writerows(rows)
        return len(rows)

    def delete(self, ids: list[int]) -> int:
        """Delete rows by id; returns how many were."""
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(self.table).where(self.table.c.id.in_(ids))).rowcount


def feedback_store() -> FeedbackStore:
    """The current app's feedback store."""
    from app.db import get_engine

    return FeedbackStore(get_engine())


def init_app(app) -> None:
    """Register the commands."""
    app.cli.add_command(feedback_cli)


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
    from app.training.review import learn_from_feedback

    store = feedback_store()
    rows = store.unlearned(model_name)
    if not rows:
        click.echo("no new feedback; nothing to learn")
        return
    model = current_app.extensions["model_registry"].get(model_name)
    data = Path(data_dir or current_app.settings.data_dir)
    out = learn_from_feedback(model, [r.review for r in rows], [r.label for r in rows], data if data.is_dir() else None)
    new_version = out.name
    store.mark_learned([r.id for r in rows], new_version)
    if model_store().remote:  # the new version goes where every instance reads (the promotion gate needs it there)
        try:
            publish_copy(model_store(), out, model_name, new_version)
        except (StoreUnavailable, FileExistsError) as exc:
            raise click.ClickException(f"version {new_version} could not be published to the store: {exc}") from exc
    click.echo(f"learned {len(rows)} feedback rows into {model_name} version {new_version} ({out})")
    promote_if_not_worse(model_name, model.version, model.manifest.metrics, out, margin, force)


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
    rows = feedback_store().counts()
    if not rows:
        click.echo("no feedback stored yet (POST /review/feedback, or the buttons on /ui/review)")
    for label, version, count in rows:
        click.echo(f"{label:9s} {'learned in v' + version if version else 'not learned yet':20s} {count}")


@feedback_cli.command("export")
@click.argument("path", type=click.Path(path_type=Path))
def export_feedback(path):
    """Write every feedback row to a CSV file (id, time, label, versions, review)."""
    click.echo(f"wrote {feedback_store().export(path)} feedback rows to {path}")


@feedback_cli.command("delete")
@click.argument("ids", nargs=-1, type=int, required=True)
def delete_feedback(ids):
    """Delete feedback rows by id (see `flask feedback export`)."""
    click.echo(f"deleted {feedback_store().delete(list(ids))} feedback rows")
