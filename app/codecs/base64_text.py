"""Strict base64 text (the standard alphabet and padding, nothing else) as bytes, with a clear 400."""
from __future__ import annotations

import base64
import binascii

from app.errors import BadRequest


def decode_base64(value, name: str) -> bytes:
    """The bytes of ``value``, base64 text (a JSON string, or the raw bytes of a V2 BYTES element);
    ``name`` says which field it was."""
    if not isinstance(value, (str, bytes)):
        raise BadRequest(f"{name} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{name} is not valid base64") from None
