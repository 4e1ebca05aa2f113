"""Reading request fields: form or JSON body, with clear 4xx errors."""
from __future__ import annotations

from urllib.parse import unquote_to_bytes

from flask import request

from app.errors import BadRequest, UnsupportedMediaType

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def request_fields() -> dict:
    """The request's fields, from a JSON object or a form; anything else is a 415."""
    mimetype = request.mimetype
    if mimetype == "application/json" or mimetype.endswith("+json"):
        body = request.get_json(silent=True)
        if body is None:
            raise BadRequest("request body is not valid JSON (or not UTF-8)")
        if not isinstance(body, dict):
            raise BadRequest("JSON body must be an object")
        return body
    if mimetype == "application/x-www-form-urlencoded" and not _urlencoded_body_is_utf8():
        raise BadRequest("request body is not valid UTF-8")
    if mimetype in FORM_TYPES:
        return request.form.to_dict()
    raise UnsupportedMediaType(
        f"unsupported content type {mimetype or '(none)'!r}; send a form or application/json"
    )


def string_field(fields: dict, name: str) -> str:
    """A required string field (its content is the model's to validate)."""
    if name not in fields:
        raise BadRequest(f"missing field {name!r}")
    value = fields[name]
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} must be a string")
    return value



def _urlencoded_body_is_utf8() -> bool:
    """Whether the percent-decoded form body is UTF-8 (Werkzeug would silently replace bad bytes).

    The body is cached, so the form parser reads the same bytes afterwards.
    """
    raw = request.get_data(cache=True, parse_form_data=False)
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
