"""RFC 8785 canonical JSON with integers only (DESIGN §7)."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit import canonical
from audit.errors import NotCanonical

keys = st.text(max_size=8)
scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def test_rfc8785_sorting_example() -> None:
    # RFC 8785 §3.2.3: keys sort by UTF-16 code units; the emoji (a surrogate pair
    # D83D DE00) sorts before U+FB33 although its code point is larger.
    obj = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    order = [k for k in json.loads(canonical.encode(obj))]
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert json.dumps(obj, sort_keys=True) != canonical.dumps(obj)


def test_string_escaping_is_jcs() -> None:
    s = '\u0000\u0008\t\n\u000b\f\r\u001f "\\/\u007f\u00e9\u2028\U0001f600'
    want = '"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f \\"\\\\/\u007f\u00e9\u2028\U0001f600"'
    assert canonical.dumps(s) == want


def test_literals_and_nesting() -> None:
    assert canonical.encode({"b": [True, False, None, -0, 7], "a": {}}) == (
        b'{"a":{},"b":[true,false,null,0,7]}'
    )


@pytest.mark.parametrize("bad", [0.5, 1.0, math.nan, math.inf, 2**53, -(2**53), {1: "x"}, b"x"])
def test_refuses_non_integers_and_non_json(bad: Any) -> None:
    with pytest.raises(NotCanonical):
        canonical.encode({"v": bad} if not isinstance(bad, dict) else bad)


def test_refuses_lone_surrogate() -> None:
    with pytest.raises(NotCanonical):
        canonical.encode("\ud800")


def test_loads_refuses_floats() -> None:
    with pytest.raises(NotCanonical):
        canonical.loads(b'{"epsilon":0.5}')
    with pytest.raises(NotCanonical):
        canonical.loads(b"NaN")
    assert canonical.loads(b'{"epsilon":"0.5"}') == {"epsilon": "0.5"}


@given(values)
def test_round_trip(value: Any) -> None:
    assert json.loads(canonical.encode(value)) == value
    assert canonical.encode(canonical.loads(canonical.encode(value))) == canonical.encode(value)


ascii_keys = st.text(st.characters(max_codepoint=127), max_size=8)
mixed_values = st.recursive(
    scalars | st.integers() | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(ascii_keys | keys, inner, max_size=4)
        | st.tuples(inner, inner)
    ),
    max_leaves=20,
)


@given(mixed_values)
def test_fast_path_writes_what_the_general_encoder_writes(value: Any) -> None:
    # The C encoder is used only where it agrees byte for byte with the walk in Python;
    # elsewhere (floats, unsafe integers, non-ASCII keys) both give the same answer too.
    for floats in (False, True):
        try:
            expected: str | type[NotCanonical] = canonical.dumps_general(value, floats=floats)
        except NotCanonical:
            expected = NotCanonical
        try:
            got: str | type[NotCanonical] = canonical.dumps(value, floats=floats)
        except NotCanonical:
            got = NotCanonical
        assert got == expected


@given(st.dictionaries(keys, scalars, max_size=8), st.randoms())
def test_key_order_does_not_matter(obj: dict[str, Any], rnd: Any) -> None:
    items = list(obj.items())
    rnd.shuffle(items)
    assert canonical.encode(dict(items)) == canonical.encode(obj)


@given(st.dictionaries(keys, scalars, min_size=1, max_size=8))
def test_keys_sorted_by_utf16(obj: dict[str, Any]) -> None:
    got = list(json.loads(canonical.encode(obj)))
    assert got == sorted(obj, key=lambda k: k.encode("utf-16-be", "surrogatepass"))


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x) or abs(x) > 1))
def test_floats_always_refused(x: float) -> None:
    with pytest.raises(NotCanonical):
        canonical.encode({"x": x})


@pytest.mark.parametrize(
    ("bits", "text"),
    [  # RFC 8785 Appendix B
        ("0000000000000000", "0"),
        ("8000000000000000", "0"),
        ("0000000000000001", "5e-324"),
        ("8000000000000001", "-5e-324"),
        ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("4340000000000000", "9007199254740992"),
        ("4430000000000000", "295147905179352830000"),
        ("44b52d02c7e14af5", "9.999999999999997e+22"),
        ("44b52d02c7e14af6", "1e+23"),
        ("444b1ae4d6e2ef50", "1e+21"),
        ("444b1ae4d6e2ef4e", "999999999999999700000"),
        ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ],
)
def test_response_floats_are_written_as_rfc8785_says(bits: str, text: str) -> None:
    (x,) = struct.unpack(">d", bytes.fromhex(bits))
    assert canonical.encode([x], floats=True) == f"[{text}]".encode()


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_response_floats_round_trip(x: float) -> None:
    assert float(json.loads(canonical.encode([x], floats=True))[0]) == x
