"""Numbers into a declared numeric type without silent wraparound (shared by every protocol's decoding).

numpy casts 300.7 to int8 as 44, -1 to uint64 as 18446744073709551615 and the string "false"
to True. Here a value either fits the type exactly (integers in range, floats without a
fractional part for integer types, 0/1 or true/false for BOOL) or the whole column is refused.
"""
from __future__ import annotations

import numpy as np

# The numeric datatypes of the Open Inference Protocol (and of manifests) and their numpy types.
NUMPY_TYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


class ValueOutOfType(ValueError):
    """Values that do not fit the declared type; the message says which type."""


def fit_to_dtype(values, dtype) -> np.ndarray:
    """``values`` (nested lists or an array) as an array of ``dtype``, or ValueOutOfType / ValueError."""
    target = np.dtype(dtype)
    raw = values if isinstance(values, np.ndarray) else np.asarray(values)
    kind = raw.dtype.kind
    if raw.dtype == target:
        return raw
    if target.kind == "b":
        if kind != "b" and not (kind in "iuf" and np.isin(raw, (0, 1)).all()):
            raise ValueOutOfType("BOOL takes true/false (or 0/1)")
    elif kind not in "biuf":  # text: numpy parses it strictly ("300" as int8 and "x" raise)
        return np.asarray(values, dtype=target)
    elif target.kind in "iu" and raw.size:
        if kind == "f" and not (np.isfinite(raw).all() and (raw == np.trunc(raw)).all()):
            raise ValueOutOfType(f"{target.name} takes whole numbers")
        info, low, high = np.iinfo(target), raw.min(), raw.max()
        if int(low) < info.min or int(high) > info.max:
            raise ValueOutOfType(f"values from {low} to {high} do not fit {target.name} ({info.min}..{info.max})")
    elif target.kind == "f" and kind == "f" and np.isfinite(raw).any():
        if np.abs(raw[np.isfinite(raw)]).max() > np.finfo(target).max:
            raise ValueOutOfType(f"values beyond {np.finfo(target).max:g} do not fit {target.name}")
    return raw.astype(target)


def finite_or_none(array: np.ndarray) -> list:
    """An array as nested lists, NaN and infinities as None: JSON has no such numbers, and a document
    holding them is invalid for every client (the same rule on every protocol)."""
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        cleaned = array.astype(object)
        cleaned[~np.isfinite(array)] = None
        return cleaned.tolist()
    return array.tolist()
