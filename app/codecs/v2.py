"""Open Inference Protocol (KServe V2) wire format, including Triton's binary tensor data extension.

Pure functions over bytes and numpy arrays; no Flask and no models in here.
Binary extension: the request body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors in input
order, each ``parameters.binary_data_size`` bytes long. BYTES elements are a
4-byte little-endian length followed by the bytes.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from math import prod

import numpy as np

from app.codecs.numbers import NUMPY_TYPES, ValueOutOfType, finite_or_none, fit_to_dtype
from app.codecs.strict_json import strict_loads

HEADER_LENGTH = "Inference-Header-Content-Length"



class ProtocolError(ValueError):
    """The request does not follow the protocol; the message is safe to show the client."""


class TooManyElements(ProtocolError):
    """A tensor claims more elements than a request may hold (413, as the model's own batch limit)."""


@dataclass
class Tensor:
    """One named tensor: numeric data as an ndarray of ``shape``, BYTES as a flat list of bytes."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray | list[bytes]
    parameters: dict = field(default_factory=dict)


@dataclass
class InferenceRequest:
    """A decoded infer request."""

    id: str | None
    inputs: list[Tensor]
    requested_outputs: list[str] | None  # None: every output
    binary_outputs: set[str]  # outputs to send as binary data
    binary_default: bool  # request-level "binary_data_output"
    parameters: dict


def _flatten(data) -> list:
    """Row-major flattening of nested JSON lists."""
    if isinstance(data, list):
        flat = []
        for item in data:
            flat.extend(_flatten(item) if isinstance(item, list) else [item])
        return flat
    return [data]


# No tensor may claim more elements than this, whatever its data (numpy cannot index past it, and a
# claim checked before decoding costs nothing, where counting 2.5 M elements costs seconds).
MAX_ELEMENTS = 2 ** 31 - 1


def _check_shape(shape, name: str, max_elements: int) -> list[int]:
    """A list of non-negative ints whose product is at most ``max_elements``."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ProtocolError(f"input {name!r}: shape must be a list of non-negative integers")
    if any(d > MAX_ELEMENTS for d in shape) or prod(shape) > max_elements:
        raise TooManyElements(f"input {name!r}: shape {shape} claims more elements than the limit of {max_elements} "
                              "per request")
    return shape


def _parameters(value, where: str) -> dict:
    """A 'parameters' object (absent means empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: 'parameters' must be an object")
    return value


def _bytes_from_binary(raw: bytes, name: str) -> list[bytes]:
    """Split length-prefixed BYTES elements."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ProtocolError(f"input {name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError(f"input {name!r}: BYTES element longer than the data")
        items.append(raw[offset:offset + length])
        offset += length
    return items


def _bytes_from_json(values: list, name: str) -> list[bytes]:
    """BYTES given as JSON strings (UTF-8)."""
    if not all(isinstance(v, str) for v in values):
        raise ProtocolError(f"input {name!r}: BYTES data must be strings in JSON")
    try:
        return [v.encode("utf-8") for v in values]
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800" is valid JSON but no text
        raise ProtocolError(f"input {name!r}: BYTES data holds a lone surrogate (not valid Unicode text)") from None


def _decode_input(spec: dict, binary: memoryview, offset: int, max_elements: int) -> tuple[Tensor, int]:
    """One input from its JSON description (and the binary section); returns the new offset."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ProtocolError("every input needs a string 'name'")
    name = spec["name"]
    datatype = spec.get("datatype")
    if datatype != "BYTES" and datatype not in NUMPY_TYPES:
        raise ProtocolError(f"input {name!r}: unknown datatype {datatype!r}")
    shape = _check_shape(spec.get("shape"), name, MAX_ELEMENTS if datatype != "BYTES" else max_elements)
    parameters = _parameters(spec.get("parameters"), f"input {name!r}")
    size = parameters.get("binary_data_size")
    count = prod(shape)
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise ProtocolError(f"input {name!r}: binary_data_size {size!r} does not fit the binary data")
        raw = bytes(binary[offset:offset + size])
        offset += size
        if datatype == "BYTES":
            data = _bytes_from_binary(raw, name)
        else:
            dtype = np.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")
            if size != count * dtype.itemsize:
                raise ProtocolError(f"input {name!r}: {size} bytes do not hold shape {shape} of {datatype}")
            data = np.frombuffer(raw, dtype=dtype).reshape(shape) if raw else np.zeros(shape, dtype=dtype)
            if datatype == "BOOL" and data.size and not np.isin(data.view(np.uint8), (0, 1)).all():
                raise ProtocolError(f"input {name!r}: BOOL bytes must be 0 or 1")
    else:
        if "data" not in spec:
            raise ProtocolError(f"input {name!r}: no 'data' and no binary_data_size")
        values = _flatten(spec["data"])
        if datatype == "BYTES":
            data = _bytes_from_json(values, name)
        else:
            if datatype == "BOOL" and not all(isinstance(v, bool) for v in values):
                raise ProtocolError(f"input {name!r}: BOOL data must be true or false")
            try:
                data = fit_to_dtype(values, NUMPY_TYPES[datatype])
            except ValueOutOfType as exc:
                raise ProtocolError(f"input {name!r}: data is out of its range for {datatype}: {exc}") from exc
            except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: 2**70 as INT64
                raise ProtocolError(f"input {name!r}: data is not {datatype} (or out of its range)") from exc
            if data.size != count:
                raise ProtocolError(f"input {name!r}: {data.size} values do not fill shape {shape}")
            data = data.reshape(shape)
    if datatype == "BYTES" and len(data) != count:
        raise ProtocolError(f"input {name!r}: {len(data)} elements do not fill shape {shape}")
    return Tensor(name, datatype, shape, data, parameters), offset


def decode_request(body: bytes, header_length: str | None, max_elements: int = MAX_ELEMENTS) -> InferenceRequest:
    """Parse a JSON (or JSON + binary) infer request body; a BYTES input may hold at most
    ``max_elements`` items (texts, images), checked against its shape before its data is split."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError as exc:
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer") from exc
        if not 0 < split <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {split} does not fit a body of {len(body)} bytes")
        header, binary = body[:split], memoryview(body)[split:]
    else:
        header, binary = body, memoryview(b"")
    try:
        doc = strict_loads(header)
    except ValueError as exc:  # UnicodeDecodeError, NaN, nesting too deep included
        raise ProtocolError(f"inference request header is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise ProtocolError("inference request needs a non-empty 'inputs' list")
    inputs, offset = [], 0
    for spec in doc["inputs"]:
        tensor, offset = _decode_input(spec, binary, offset, max_elements)
        inputs.append(tensor)
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    parameters = _parameters(doc.get("parameters"), "request")
    outputs = doc.get("outputs")
    requested, binary_outputs = None, set()
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise ProtocolError("'outputs' must be a list of objects with a string 'name'")
        requested = [o["name"] for o in outputs]
        binary_outputs = {o["name"] for o in outputs
                          if _parameters(o.get("parameters"), f"output {o['name']!r}").get("binary_data")}
    request_id = doc.get("id")
    return InferenceRequest(
        id=str(request_id) if request_id is not None else None,
        inputs=inputs,
        requested_outputs=requested,
        binary_outputs=binary_outputs,
        binary_default=bool(parameters.get("binary_data_output", False)),
        parameters=parameters,
    )


def _binary_payload(tensor: Tensor) -> bytes:
    """Raw little-endian bytes of one output."""
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(item)) + item for item in tensor.data)
    dtype = np.dtype(NUMPY_TYPES[tensor.datatype]).newbyteorder("<")
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()


def _json_data(tensor: Tensor) -> list:
    """Flat JSON list of one output."""
    if tensor.datatype == "BYTES":
        return [item.decode("utf-8") for item in tensor.data]
    return finite_or_none(np.asarray(tensor.data).reshape(-1))  # JSON has no NaN: null, as on REST


def encode_response(model_name: str, model_version: str, request: InferenceRequest,
                    outputs: list[Tensor]) -> tuple[bytes, dict[str, str]]:
    """Response body and headers; outputs asked for as binary are appended after the JSON."""
    described, payloads = [], []
    for tensor in outputs:
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if tensor.parameters:
            entry["parameters"] = dict(tensor.parameters)
        if tensor.name in request.binary_outputs or (request.binary_default and request.requested_outputs is None):
            payload = _binary_payload(tensor)
            entry.setdefault("parameters", {})["binary_data_size"] = len(payload)
            payloads.append(payload)
        else:
            entry["data"] = _json_data(tensor)
        described.append(entry)
    doc = {"model_name": model_name, "model_version": model_version, "outputs": described}
    if request.id is not None:
        doc["id"] = request.id
    header = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    if not payloads:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(payloads), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }
