"""Feedback by request id: the true label of a logged answer (POST /models/NAME/feedback), stored once per
answer; live accuracy joins it with the answer the version logged (app/monitoring/report.py)."""
from __future__ import annotations

import sqlalchemy as sa

from app.database import insert_once, prediction_feedback, predictions


class AnswerLabelledOtherwise(Exception):
    """This answer already has feedback with another label."""


def logged_answer(engine: sa.Engine, model: str, request_id: str, item: int) -> dict | None:
    """The newest logged answer of ``model`` to item ``item`` of request ``request_id``: {version, label}."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(predictions.c.version, predictions.c.label)
            .where(predictions.c.model == model, predictions.c.request_id == request_id, predictions.c.item == item)
            .order_by(predictions.c.id.desc()).limit(1)).first()
    return None if row is None else {"version": row.version, "label": row.label}


def store_feedback(engine: sa.Engine, model: str, request_id: str, item: int, label: str,
                   client: str | None) -> tuple[int, bool]:
    """Store the true label of an answer once: the same label again gives the earlier row (id, False);
    another label for a labelled answer raises AnswerLabelledOtherwise."""
    row = {"model": model, "request_id": request_id, "item": item, "label": label, "client": client}

    def earlier() -> int | None:
        with engine.connect() as conn:
            found = conn.execute(sa.select(prediction_feedback.c.id, prediction_feedback.c.label).where(
                prediction_feedback.c.model == model, prediction_feedback.c.request_id == request_id,
                prediction_feedback.c.item == item)).first()
        if found is not None and found.label != label:
            raise AnswerLabelledOtherwise(f"item {item} of request {request_id} was labelled {found.label!r} before")
        return None if found is None else found.id

    return insert_once(engine, prediction_feedback, row, earlier)


def labelled_answers(engine: sa.Engine, model: str, version: str, limit: int) -> list[tuple[str, str | None]]:
    """(true label, logged label) of the version's answers that have feedback by request id, newest first."""
    logged = predictions.alias("logged")
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(
            sa.select(prediction_feedback.c.label, logged.c.label)
            .join(logged, sa.and_(logged.c.model == prediction_feedback.c.model,
                                  logged.c.request_id == prediction_feedback.c.request_id,
                                  logged.c.item == prediction_feedback.c.item))
            .where(prediction_feedback.c.model == model, logged.c.version == version)
            .order_by(prediction_feedback.c.id.desc()).limit(limit))]
