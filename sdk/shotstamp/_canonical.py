"""RFC 8785 JSON Canonicalization Scheme (JCS) for the JSON subset shotstamp uses.

A leaf of the log is the canonical JSON of a registration record, so two
implementations that disagree by one byte compute different leaf hashes.  Only
objects, arrays, strings, integers, booleans and null are accepted: floats are
refused (`TypeError`) rather than risk serialising one differently from the
ECMAScript number formatting JCS requires.
"""

from __future__ import annotations

import re
from typing import Any

__all__: list[str] = []

# JCS numbers are IEEE 754 doubles.  2**53 itself is representable, but so is
# the result of parsing "2**53 + 1", so only the ECMAScript "safe" range
# round-trips without ambiguity (also I-JSON, RFC 7493 section 2.2).
MAX_SAFE_INTEGER = 2**53 - 1

# JSON.stringify escapes exactly these: the two-character forms for
# \b \t \n \f \r \" \\, \u00xx (lowercase hex) for the other C0 controls.
_ESCAPED = re.compile(r'[\x00-\x1f"\\]')
_SHORT_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _string(value: str) -> str:
    return '"' + _ESCAPED.sub(_escape, value) + '"'


def _utf16_key(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare like the sequences of UTF-16 code units
    # JCS sorts by (RFC 8785 section 3.2.3); code point order differs once
    # keys mix astral characters with U+E000..U+FFFF.
    return key.encode("utf-16-be", "surrogatepass")


def _serialise(value: Any, out: list[str]) -> None:
    # bool before int: True is an int in Python.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is outside the JSON safe range ±(2**53 - 1)")
        out.append(str(int(value)))
    elif isinstance(value, float):
        raise TypeError(f"floats are not canonicalised, got {value!r}")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _serialise(item, out)
        out.append("]")
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"object keys must be str, got {type(key).__name__}")
        out.append("{")
        for position, key in enumerate(sorted(value, key=_utf16_key)):
            if position:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _serialise(value[key], out)
        out.append("}")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> bytes:
    """Serialise `value` as RFC 8785 canonical JSON, UTF-8 encoded.

    **Parameters:**

    * **value** - a `dict` (with `str` keys), `list`, `tuple`, `str`, `int`,
      `bool` or `None`, nested freely.

    Raises `TypeError` for floats, non-`str` keys and other types, and
    `ValueError` for integers outside ±(2**53 - 1) and for strings holding lone
    surrogates (which are not Unicode text and cannot be UTF-8 encoded).

    Usage:

    >>> canonical_json({"b": [1, None], "a": True})
    b'{"a":true,"b":[1,null]}'
    """
    out: list[str] = []
    _serialise(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        surrogate = ord(exc.object[exc.start])
        raise ValueError(f"string contains a lone surrogate U+{surrogate:04X}") from exc
