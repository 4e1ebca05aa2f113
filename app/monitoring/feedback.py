"""Feedback by request id: the true label of a logged answer (POST /models/NAME/feedback), stored once per
answer; live accuracy joins it with the answer the version logged (app/monitoring/report.py)."""
from __future__ import annotations

import sqlalchemy as sa

from app.database import insert_once, prediction_feedback


class AnswerLabelledOtherwise(Exception):
    """This answer already has feedback with another label."""


def logged_answer(sink, model: str, request_id: str, item: int) -> dict | None:
    """The newest logged answer of ``model`` to item ``item`` of request ``request_id``: {version, label}."""
    found = sink.answers(model, None, [(request_id, item)]).get((request_id, item))
    return None if found is None else {"version": found[0], "label": found[1]}


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


def labelled_answers(engine: sa.Engine, sink, model: str, version: str, limit: int) -> list[tuple[str, str | None]]:
    """(true label, logged label) of the version's answers among the model's newest ``limit`` labelled by request id,
    newest first (the feedback is in the database, the answers in the log's sink)."""
    with engine.connect() as conn:
        labelled = conn.execute(
            sa.select(prediction_feedback.c.request_id, prediction_feedback.c.item, prediction_feedback.c.label)
            .where(prediction_feedback.c.model == model).order_by(prediction_feedback.c.id.desc()).limit(limit)).all()
    answered = sink.answers(model, version, [(request_id, item) for request_id, item, _ in labelled])
    return [(label, answered[(request_id, item)][1]) for request_id, item, label in labelled
            if (request_id, item) in answered]
