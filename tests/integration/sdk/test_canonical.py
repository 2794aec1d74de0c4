"""RFC 8785 canonical JSON against the `rfc8785` package, hundreds of generated values per test
(the fixed cases: tests/unit/sdk/test_canonical.py)."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from shotstamp.canonical import MAX_SAFE_INTEGER, canonical_json

# Text without lone surrogates: JCS input must be Unicode text (I-JSON).
_text = st.text(st.characters(codec="utf-8"), max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    | _text
)
_json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_matches_rfc8785_package(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


# Characters either side of the UTF-16 surrogate block, where code point
# order and UTF-16 code unit order disagree.
_key_chars = st.sampled_from(
    ["a", "\x7f", "\u00e9", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0001f600"]
)
_keys = st.text(_key_chars | st.characters(codec="utf-8"), max_size=4)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, st.integers(0, 9)))
def test_key_order_matches_rfc8785_package(value: dict[str, int]) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)
