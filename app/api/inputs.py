"""Reading request fields: form or JSON body, with clear 4xx errors."""
from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from flask import request

from app.errors import BadRequest, UnsupportedMediaType

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# type/subtype with optional parameters (RFC 9110 tokens; quoted values without controls).
TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
MIME_TYPE = re.compile(rf"{TOKEN}/{TOKEN}(\s*;\s*{TOKEN}=({TOKEN}|\"[^\"\\\x00-\x1f\x7f]*\"))*")
MAX_CONTENT_TYPE = 128
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,64}")
# A percent-escape of a byte above 0x7f: only these (or raw non-ASCII bytes) can make a form body non-UTF-8.
HIGH_ESCAPE = re.compile(rb"%[89a-fA-F][0-9a-fA-F]")


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
        fields = request.form.to_dict()
        if any("\ufffd" in value for value in fields.values()):  # Werkzeug replaced undecodable bytes
            raise BadRequest("a form field is not valid UTF-8")
        return fields
    raise UnsupportedMediaType(
        f"unsupported content type {mimetype or '(none)'!r}; send a form or application/json"
    )


def optional_json_object() -> dict:
    """The body as a JSON object; an empty body is {} (a 400 for anything else)."""
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object")
    return body


def string_field(fields: dict, name: str) -> str:
    """A required string field (its content is the model's to validate)."""
    if name not in fields:
        raise BadRequest(f"missing field {name!r}")
    value = fields[name]
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} must be a string")
    return value


def checked_text(value: str, name: str) -> str:
    """Text that will be stored or encoded: NUL characters (PostgreSQL cannot store them) and lone
    surrogates (JSON's "\\ud800" escapes, which are not Unicode text) are refused."""
    if "\x00" in value:
        raise BadRequest(f"{name} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{name} is not valid Unicode text (a lone surrogate)") from None
    return value


def content_type_field(value, name: str = "content_type") -> str:
    """A declared media type: 'type/subtype' with optional parameters, at most 128 characters."""
    if not isinstance(value, str) or len(value) > MAX_CONTENT_TYPE or not MIME_TYPE.fullmatch(value.strip()):
        raise BadRequest(f"{name} must be a media type such as 'application/json' (at most {MAX_CONTENT_TYPE} "
                         "characters)")
    return value.strip()


def idempotency_key(client: str) -> str | None:
    """The request's Idempotency-Key header (1 to 64 visible ASCII characters) in the client's own
    scope ("<client>:<key>"; two clients may pick the same key), or None."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest("Idempotency-Key must be 1 to 64 visible ASCII characters")
    return f"{client}:{key}"


def _urlencoded_body_is_utf8() -> bool:
    """Whether the percent-decoded form body is UTF-8 (Werkzeug would silently replace bad bytes).

    The body is cached, so the form parser reads the same bytes afterwards.
    """
    raw = request.get_data(cache=True, parse_form_data=False)
    if raw.isascii() and not HIGH_ESCAPE.search(raw):
        return True  # every byte it stands for is ASCII
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
