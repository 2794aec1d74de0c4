"""RFC 8785 canonical JSON: fixed cases (against the `rfc8785` package: tests/integration/sdk/)."""

from __future__ import annotations

from typing import Any

import pytest

from shotstamp._canonical import MAX_SAFE_INTEGER, canonical_json


def test_rfc8785_section_3_2_3_sorting_example() -> None:
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    order = [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",
        "Hebrew Letter Dalet With Dagesh",
    ]
    out = canonical_json(value).decode("utf-8")
    positions = [out.index(name) for name in order]
    assert positions == sorted(positions)


def test_astral_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # U+1F600 is U+D83D U+DE00 in UTF-16, which sorts before U+E000.
    assert canonical_json({"\ue000": 2, "\U0001f600": 1}) == (
        '{"\U0001f600":1,"\ue000":2}'.encode()
    )


def test_non_ascii_is_written_as_utf8_not_escaped() -> None:
    assert canonical_json(["é", "日本", "\u2028", "\x7f"]) == (
        '["é","日本","\u2028","\x7f"]'.encode()
    )


def test_control_characters_are_escaped_like_json_stringify() -> None:
    assert canonical_json('\x00\x08\t\n\x0b\x0c\r\x1f"\\/') == (
        b'"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\\"\\\\/"'
    )


def test_no_whitespace_and_nested_empty_containers() -> None:
    assert canonical_json({"b": [], "a": {}, "c": [None, True, False, -5]}) == (
        b'{"a":{},"b":[],"c":[null,true,false,-5]}'
    )


def test_leaf_record_shape() -> None:
    leaf = {
        "seller": "s_1",
        "sha256": "ab" * 32,
        "received_at": "2025-11-26T09:00:00.000001Z",
        "id": "01JAB",
        "perceptual": {"phash": "ff00", "dhash": "00ff"},
    }
    assert canonical_json(leaf) == (
        b'{"id":"01JAB","perceptual":{"dhash":"00ff","phash":"ff00"},'
        b'"received_at":"2025-11-26T09:00:00.000001Z","seller":"s_1","sha256":"'
        + b"ab" * 32
        + b'"}'
    )


@pytest.mark.parametrize("value", [1.0, 0.5, float("nan"), {"a": [1, 2.5]}])
def test_floats_are_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="floats are not canonicalised"):
        canonical_json(value)


@pytest.mark.parametrize("value", [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0])
def test_safe_integers_are_written_exactly(value: int) -> None:
    assert canonical_json(value) == str(value).encode()


@pytest.mark.parametrize("value", [2**53, -(2**53), 2**64, {"n": [2**60]}])
def test_integers_beyond_the_safe_range_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="outside the JSON safe range"):
        canonical_json(value)


@pytest.mark.parametrize("value", [{1: "a"}, {b"k": 1}, {None: 1}, {"a": {(1,): 2}}])
def test_non_string_keys_are_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="object keys must be str"):
        canonical_json(value)


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object()])
def test_other_types_are_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="is not a JSON value"):
        canonical_json(value)


@pytest.mark.parametrize("value", ["\ud800", {"\udfff": 1}])
def test_lone_surrogates_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"lone surrogate U\+D[8F]"):
        canonical_json(value)


def test_booleans_are_not_integers() -> None:
    assert canonical_json([True, False, 1, 0]) == b"[true,false,1,0]"
