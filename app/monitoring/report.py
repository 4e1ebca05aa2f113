"""How a model version does in production: requests, latency, drift against its reference and live accuracy,
for GET /models/NAME/monitoring, `modelserve monitor report` and the Models page."""
from __future__ import annotations

import datetime as dt
import html
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import sqlalchemy as sa

from app.database import review_feedback
from app.monitoring.feedback import labelled_answers
from app.monitoring.log import PredictionLog, digest, reference_of, summarize
from app.monitoring.profile import BINS, Reference, answers, label_shares, shares, top_words
from app.metrics import DRIFT_SCORE, DRIFTED

# Below this many requests in a window, drift figures come with a warning.
FEW = 200


def percentile(values: list[float], share: float) -> float | None:
    return round(float(np.percentile(values, share)), 3) if values else None


def window_rows(log: PredictionLog, model, last: int | None = None, since: dt.datetime | None = None) -> list[dict]:
    """A version's logged requests in a window: the last ``last``, else those since ``since``, else the last 1000."""
    return log.window(model.name, model.version, last=last or (None if since else 1000), since=since)


def monitoring_report(log: PredictionLog, model, last: int | None = None, since: dt.datetime | None = None,
                      rows: list[dict] | None = None, flush: bool = True) -> dict[str, Any]:
    """The monitoring summary of one served model version over a window of its logged requests (those this
    process has queued are written first, unless ``flush`` is off, so that a report follows the requests just
    answered); ``rows``: the window, where the caller has read it already."""
    if flush:
        log.flush(1.0)
    if rows is None:
        rows = window_rows(log, model, last, since)
    latencies = [row["latency_ms"] for row in rows]
    report: dict[str, Any] = {
        "model": model.name, "version": str(model.version), "requests": len(rows),
        "window": {"last": last or (None if since else 1000), "since": since.isoformat() if since else None,
                   "first": min(r["created_at"] for r in rows).isoformat() if rows else None,
                   "newest": max(r["created_at"] for r in rows).isoformat() if rows else None},
        "latency": {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)},
        "accuracy": live_accuracy(log, model.name, str(model.version)),
    }
    reference = reference_of(model)
    labels, scores = [r["label"] for r in rows], [r["score"] for r in rows]
    if reference is None:
        report["drift"] = None
        report["drift_unavailable"] = "this version has no reference profile (modelserve monitor reference)"
        report["predictions"] = {"live": label_shares(labels)}
    elif not rows:
        report["drift"] = None
        report["drift_unavailable"] = "no logged requests in the window"
        report["predictions"] = {"live": {}, "reference": reference.labels}
    else:
        drift = reference.drift([r["features"] for r in rows], labels, scores)
        if len(rows) < FEW:
            drift["warning"] = (f"only {len(rows)} requests: a PSI over so few is noisy (about {BINS - 1}/n even "
                                f"without drift); judge drift on {FEW} or more")
        report["predictions"] = drift.pop("predictions")
        report["drift"] = drift
        DRIFT_SCORE.labels(model.name, str(model.version)).set(drift["score"])
        DRIFTED.labels(model.name, str(model.version)).set(int(drift["drifted"]))
    return report


def wilson(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion."""
    if not total:
        return 0.0, 1.0
    p = correct / total
    centre, half = p + z * z / (2 * total), z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return (centre - half) / (1 + z * z / total), (centre + half) / (1 + z * z / total)


def live_accuracy(log: PredictionLog, model: str, version: str, limit: int = 10_000) -> dict[str, Any] | None:
    """Accuracy on real traffic: the true labels sent for the version's logged answers, by request id
    (POST /models/NAME/feedback) and, for reviews, by text (POST /review/feedback, matched by digest);
    None when no feedback matches a logged answer."""
    matched = [truth == answered for truth, answered in labelled_answers(log.engine, log.sink, model, version, limit)]
    matched += reviews_matched(log, model, version, limit)
    if not matched:
        return None
    low, high = wilson(sum(matched), len(matched))
    return {"accuracy": round(sum(matched) / len(matched), 4), "labelled": len(matched),
            "interval_95": [round(low, 4), round(high, 4)],
            "measured": "true labels sent as feedback (by request id, or a review's text) joined with the answers "
                        "this version logged"}


def reviews_matched(log: PredictionLog, model: str, version: str, limit: int) -> list[bool]:
    """Whether the version's logged answer to each review sent with its true label was right (joined by the
    text's digest)."""
    with log.engine.connect() as conn:
        feedback = conn.execute(
            sa.select(review_feedback.c.review, review_feedback.c.label)
            .where(review_feedback.c.model == model, review_feedback.c.answered_by_version == version)
            .order_by(review_feedback.c.id.desc()).limit(limit)).all()
    if not feedback:
        return []
    truth = {digest(text): label for text, label in feedback}
    answered = log.sink.labels_by_digest(model, version, truth)
    return [truth[text_digest] == label for text_digest, label in answered.items()]


def build_reference(model, items: Iterable, source: str, vocabulary: list[str] | None = None,
                    batch_size: int = 64) -> Reference:
    """The reference profile of a loaded model over held-out items: their features and its answers."""
    features, labels, scores = [], [], []
    chunk: list = []
    provisional = Reference(source, 0, {}, {}, None, vocabulary or [])

    def flush() -> None:
        batch = model.decode({model.inputs[0].name: list(chunk)})
        outputs = model.predict(batch)
        features.extend(summarize(model, batch, provisional) or [{}] * len(chunk))
        answer_labels, answer_scores = answers(outputs, len(chunk))
        labels.extend(answer_labels)
        scores.extend(answer_scores)
        chunk.clear()

    for item in items:
        chunk.append(item)
        if len(chunk) == batch_size:
            flush()
    if chunk:
        flush()
    return Reference.build(source, features, labels, scores, vocabulary)


def reference_from_data(model, data: Path, columns: list[str] | None = None, vocabulary: Path | None = None,
                        limit: int | None = None) -> Reference:
    """The reference profile of a loaded version over held-out DATA (a CSV/Parquet table or a folder of images,
    read as batch scoring reads them); a text model's unknown words are counted against VOCABULARY's texts
    (default: DATA's). ValueError when DATA holds no item the model takes."""
    from itertools import islice

    from app.batch.core import input_kind
    from app.batch.files import BadItem
    from app.batch.local import read_items

    items = [item for _, item in islice(read_items(model, data, columns, None), limit)
             if not isinstance(item, BadItem)]
    if not items:
        raise ValueError(f"{data} holds no item model {model.name!r} takes")
    words = None
    if input_kind(model) == "text":
        texts = items if vocabulary is None else [
            item for _, item in read_items(model, vocabulary, columns, None) if isinstance(item, str)]
        words = text_vocabulary(texts)
    source = f"{data.name}: {len(items)} items" + (f"; vocabulary from {vocabulary.name}" if vocabulary else "")
    return build_reference(model, items, source, words)


def text_vocabulary(texts: Iterable[str]) -> list[str]:
    """The vocabulary unknown words are counted against: the most frequent words of the training texts."""
    return top_words(list(texts))


def table(report: dict) -> list[str]:
    """The report as lines of text."""
    lines = [f"{report['model']} v{report['version']}: {report['requests']} requests "
             f"(window: {report['window']['first']} .. {report['window']['newest']}); latency p50 "
             f"{report['latency']['p50_ms']} ms, p99 {report['latency']['p99_ms']} ms"]
    accuracy = report.get("accuracy")
    lines.append(f"live accuracy: {accuracy['accuracy']:.1%} (95 % interval {accuracy['interval_95'][0]:.1%}"
                 f"-{accuracy['interval_95'][1]:.1%}, {accuracy['labelled']} labelled answers)" if accuracy
                 else "live accuracy: no labelled answers yet")
    drift = report.get("drift")
    if drift is None:
        lines.append(f"drift: not measured ({report.get('drift_unavailable')})")
        return lines
    lines.append(f"drift: {'DRIFTED' if drift['drifted'] else 'none'} (largest PSI {drift['score']}, threshold "
                 f"{drift['threshold']})")
    lines.append(f"{'FEATURE':24s} {'PSI':>8s}  DRIFTED")
    for name, feature in drift["features"].items():
        lines.append(f"{name:24s} {feature['statistic']:8.4f}  {'yes' if feature['drifted'] else 'no'}")
    predictions_ = report["predictions"]
    lines.append(f"{'predicted labels':24s} {predictions_['statistic']:8.4f}  {'yes' if predictions_['drifted'] else 'no'}"
                 f"  live {predictions_['live']} / reference {predictions_['reference']}")
    return lines


def html_report(report: dict, reference: Reference | None, rows: list[dict]) -> str:
    """A page with each feature's reference and live distributions drawn side by side (inline SVG, no script)."""
    parts = [f"<h1>{html.escape(report['model'])} v{html.escape(report['version'])}</h1>",
             "<pre>" + html.escape("\n".join(table(report))) + "</pre>"]
    if reference is not None and rows:
        for name, distribution in reference.features.items():
            live = shares(np.array([r["features"][name] for r in rows if name in r["features"]], dtype=float),
                          distribution.edges)
            statistic = (report.get("drift") or {}).get("features", {}).get(name, {}).get("statistic")
            parts.append(f"<h2>{html.escape(name)} <small>PSI {statistic}</small></h2>"
                         + bars(distribution.shares, live.tolist(), distribution.edges))
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:1rem auto;color:#1b1f24}"
             "svg{background:#fff;border:1px solid #d0d7de} .ref{fill:#0b5cad} .live{fill:#c4421a}")
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(report['model'])} monitoring"
            f"</title><style>{style}</style><body>{''.join(parts)}<p>Blue: reference; red: live. Bins: the "
            "reference's deciles.</p></body></html>\n")


def bars(reference: list[float], live: list[float], edges: list[float], width: int = 600, height: int = 140) -> str:
    """Paired bars per bin, reference then live, with the bins' lower edges under them."""
    count = len(reference)
    step, top = width / max(count, 1), max(max(reference, default=0), max(live, default=0), 1e-9)
    shapes = []
    for i, (r, l) in enumerate(zip(reference, live)):
        x = i * step
        for offset, share, css in ((0.1, r, "ref"), (0.5, l, "live")):
            h = (height - 20) * share / top
            shapes.append(f'<rect class="{css}" x="{x + offset * step:.1f}" y="{height - 20 - h:.1f}" '
                          f'width="{0.38 * step:.1f}" height="{h:.1f}"><title>{share:.1%}</title></rect>')
        label = "" if i == 0 else f"{edges[i - 1]:.3g}"
        shapes.append(f'<text x="{x:.1f}" y="{height - 5}" font-size="10">{label}</text>')
    return f'<svg width="{width}" height="{height}" role="img">{"".join(shapes)}</svg>'
