"""The plain JSON form {"instances": [...]} (TensorFlow Serving / KServe V1 style) -> named input columns.

One item per row: a text, a list of numbers, or a file as {"b64": "..."}; a model
with several inputs takes objects keyed by input name.
"""
from __future__ import annotations

from app.codecs.base64_text import decode_base64
from app.errors import BadRequest
from app.models.base import Model


def instance_value(value):
    """A JSON value, with {"b64": "..."} decoded to bytes."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return decode_base64(value["b64"], "'b64'")
    return value


def instances_to_inputs(model: Model, instances) -> dict:
    """{input name: column} for the model from a list of instances."""
    if not isinstance(instances, list) or not instances:
        raise BadRequest("'instances' must be a non-empty list")
    names = [spec.name for spec in model.inputs]
    if len(names) == 1:
        return {names[0]: [instance_value(v) for v in instances]}
    columns: dict = {name: [] for name in names}
    for instance in instances:
        if not isinstance(instance, dict) or set(instance) != set(names):
            raise BadRequest(f"model {model.name!r} takes several inputs: each instance must be an object with {names}")
        for name in names:
            columns[name].append(instance_value(instance[name]))
    return columns
