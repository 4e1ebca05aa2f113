"""V2 tensors <-> the model interface's named columns (no per-model code: the manifest's specs decide)."""
from __future__ import annotations

import base64
import binascii

import numpy as np

from app.codecs.v2 import ProtocolError, Tensor
from app.models.base import NUMPY_TYPES, Model


def inputs_from_tensors(tensors: list[Tensor]) -> dict:
    """{input name: column} from request tensors: BYTES as a list of bytes, numbers as an array.

    A BYTES input with the parameter ``content_type: "base64"`` (MLServer's convention) carries
    base64 text, such as encoded images in a JSON request; it is decoded here.
    """
    inputs = {}
    for tensor in tensors:
        if tensor.name in inputs:
            raise ProtocolError(f"input {tensor.name!r} is given twice")
        base64_text = tensor.datatype == "BYTES" and tensor.parameters.get("content_type") == "base64"
        inputs[tensor.name] = [from_base64(tensor.name, item) for item in tensor.data] if base64_text else tensor.data
    return inputs


def from_base64(name: str, item) -> bytes:
    """One base64 element of a BYTES input."""
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ProtocolError(f"input {name!r} says content_type base64, but an element is not base64") from None


def output_tensors(model: Model, outputs: dict) -> list[Tensor]:
    """Every declared output the model returned, with the declared datatype."""
    tensors = []
    for spec in model.outputs:
        if spec.name not in outputs:
            continue
        values = outputs[spec.name]
        if spec.datatype == "BYTES":
            data = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]
            tensors.append(Tensor(spec.name, "BYTES", [len(data)], data))
        else:
            array = np.asarray(values, dtype=NUMPY_TYPES[spec.datatype])
            tensors.append(Tensor(spec.name, spec.datatype, list(array.shape), array))
    return tensors
