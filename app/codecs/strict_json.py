"""Strict JSON for every request body (the app's JSON provider parses with it): no NaN or Infinity, and a
clear error for deep nesting.

Python's json module accepts NaN, Infinity and -Infinity by default, which are not
JSON (RFC 8259) and turn into numbers no later check expects (a long poll that
never ends, a result no client can parse). Nesting deeper than the interpreter's
recursion limit raises RecursionError, which is not a ValueError; here both are
ValueErrors, which Flask's request.get_json answers with 400.
"""
from __future__ import annotations

import json


def reject_constant(name: str):
    """json's hook for NaN, Infinity and -Infinity."""
    raise ValueError(f"{name} is not a JSON number")


def strict_loads(text: str | bytes):
    """json.loads without the non-standard constants; any failure is a ValueError."""
    try:
        return json.loads(text, parse_constant=reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
