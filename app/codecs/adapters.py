"""V2 tensors <-> the model interface's named columns (no per-model code: the manifest's specs decide)."""
from __future__ import annotations

import numpy as np

from app.codecs.base64_text import decode_base64

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
        inputs[tensor.name] = ([decode_base64(item, f"an element of input {tensor.name!r} (content_type base64)")
                                for item in tensor.data] if base64_text else tensor.data)
    return inputs


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
