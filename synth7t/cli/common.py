"""Helpers that several commands share: ``KEY=VALUE`` overrides and file lists."""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence


def json_or_text(text: str) -> Any:
    """A JSON value when ``text`` parses as one (``4``, ``[50, 50]``, ``true``, ``null``), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_key_values(items: Optional[Sequence[str]], option: str = "--set",
                     parse: Callable[[str], Any] = json_or_text) -> dict:
    """``["lr_g=1e-4", "crop=[96, 96]"]`` -> ``{"lr_g": 0.0001, "crop": [96, 96]}``.

    Args:
        items: ``KEY=VALUE`` strings, as the command line gave them.
        option: the option's name, for the error message.
        parse: turns each value's text into a value (default: JSON, else the text).

    Raises:
        ValueError: an item without ``=`` or with an empty key.
    """
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse(value.strip())
    return out
