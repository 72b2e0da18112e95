"""Normalisation of key values (the table in docs/verification.md) and validation of
declared key formats: malformed keys are refused, naming the field, never looked up."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from products.errors import InvalidRequest
from products.manifest import parse_manifest
from products.verification import KeyFormat, parse_verification_product
from sandbox.verification.normalize import fold_width, normalize_text, parse_subject
from sandbox.verification.request import parse_item

USCC = "91440101MA5CJQ4N59"
PRC_ID = "11010519491231002X"


@pytest.mark.parametrize(
    ("raw", "fmt", "expected"),
    [
        # full-width digits and letters, as typed with a Chinese IME
        ("９１４４０１０１ＭＡ５ＣＪＱ４Ｎ５９", KeyFormat.USCC, USCC),
        # trailing lower-case check character
        ("11010519491231002x", KeyFormat.PRC_ID, PRC_ID),
        ("１１０１０５１９４９１２３１００２ｘ", KeyFormat.PRC_ID, PRC_ID),
        ("91440101ma5cjq4n59", KeyFormat.USCC, USCC),
        # surrounding spaces: ASCII, ideographic (U+3000), no-break, zero-width, BOM, tabs
        ("  " + USCC + "\u3000", KeyFormat.USCC, USCC),
        ("\ufeff\u200b" + PRC_ID + "\u00a0\t\n", KeyFormat.PRC_ID, PRC_ID),
        # enterprise names: ASCII parentheses become the registered full-width ones
        ("广州华信科技(集团)有限公司", KeyFormat.ENTERPRISE_NAME, "广州华信科技（集团）有限公司"),
        ("华信科技（广州）有限公司", KeyFormat.ENTERPRISE_NAME, "华信科技（广州）有限公司"),
        ("　广州ＡＢＣ科技有限公司 ", KeyFormat.ENTERPRISE_NAME, "广州ABC科技有限公司"),
        # person names: middle-dot look-alikes become U+00B7
        ("艾力・买买提", KeyFormat.PERSON_NAME, "艾力·买买提"),
        ("艾力.买买提", KeyFormat.PERSON_NAME, "艾力·买买提"),
        ("艾力．买买提", KeyFormat.PERSON_NAME, "艾力·买买提"),
        ("艾力•买买提", KeyFormat.PERSON_NAME, "艾力·买买提"),
        (" 陈 伟 ", KeyFormat.PERSON_NAME, "陈 伟"),  # internal spaces are kept
        # no format: only width folding and trimming
        ("ＡＢＣ－１２３", None, "ABC-123"),
        ("abc", None, "abc"),
    ],
)
def test_normalisation_table(raw: str, fmt: KeyFormat | None, expected: str) -> None:
    assert normalize_text(raw, fmt) == expected


def test_cjk_is_kept_as_sent() -> None:
    # Compatibility ideographs, CJK punctuation and the full-width yen sign are not
    # full-width ASCII: NFKC would change some of them; the normaliser does not.
    for text in ["\uf900", "\ufa11", "、。「」", "￥", "㈱", "①", "ｶ", "广州"]:
        assert fold_width(text) == text


@given(st.characters())
def test_width_folding_is_nfkc_on_full_width_ascii_and_identity_elsewhere(ch: str) -> None:
    folded = fold_width(ch)
    if 0xFF01 <= ord(ch) <= 0xFF5E or ch == "\u3000":
        assert folded == unicodedata.normalize("NFKC", ch)
        assert folded.isascii()
    else:
        assert folded == ch


@given(st.text())
def test_normalisation_is_idempotent(text: str) -> None:
    for fmt in (None, *KeyFormat):
        once = normalize_text(text, fmt)
        assert normalize_text(once, fmt) == once


MANIFEST: dict[str, Any] = {
    "id": "registry",
    "title": "Registry",
    "privacy_unit": "uscc",
    "max_rows_per_unit": 1,
    "unique": [["code", "since"]],
    "columns": [
        {"name": "uscc", "type": "string", "classification": "identifier"},
        {"name": "rep_id", "type": "string", "classification": "identifier"},
        {"name": "rep_name", "type": "string", "classification": "identifier"},
        {"name": "code", "type": "integer", "classification": "identifier"},
        {"name": "since", "type": "date", "classification": "attribute"},
    ],
}
PRODUCT = parse_manifest(MANIFEST)
VP = parse_verification_product(
    {
        "id": "four",
        "product": "registry",
        "key": ["uscc", "rep_id", "rep_name"],
        "key_formats": {"uscc": "uscc", "rep_id": "prc_id", "rep_name": "person_name"},
        "checks": [{"name": "known", "column": "uscc", "op": "exists"}],
        "natural_person": True,
    },
    PRODUCT,
)
TYPED = parse_verification_product(
    {
        "id": "typed",
        "product": "registry",
        "key": ["code", "since"],
        "checks": [{"name": "known", "column": "code", "op": "exists"}],
    },
    PRODUCT,
)


def test_subject_is_normalised_and_ordered_by_the_key() -> None:
    key = parse_subject(
        VP,
        PRODUCT,
        {"rep_name": "艾力.买买提", "rep_id": "11010519491231002x", "uscc": f" {USCC} "},
    )
    assert key == (USCC, PRC_ID, "艾力·买买提")
    assert parse_subject(TYPED, PRODUCT, {"code": 7, "since": "２０２０-０１-０２"}) == (
        7,
        "2020-01-02",
    )


BAD_SUBJECTS: list[tuple[Any, str]] = [
    ({"uscc": "91440101MA5CJQ4N58", "rep_id": PRC_ID, "rep_name": "a"}, "uscc"),
    ({"uscc": "9144010IMA5CJQ4N59", "rep_id": PRC_ID, "rep_name": "a"}, "uscc"),
    ({"uscc": USCC[:-1], "rep_id": PRC_ID, "rep_name": "a"}, "uscc"),
    ({"uscc": USCC, "rep_id": "110105194912310021", "rep_name": "a"}, "rep_id"),
    ({"uscc": USCC, "rep_id": "11010519491331002X", "rep_name": "a"}, "rep_id"),
    ({"uscc": USCC, "rep_id": "110105491231002", "rep_name": "a"}, "rep_id"),  # 15 digits
    ({"uscc": USCC, "rep_id": PRC_ID, "rep_name": "\u3000 "}, "rep_name"),  # empty
    ({"uscc": USCC, "rep_id": PRC_ID, "rep_name": "a\x00b"}, "rep_name"),
    ({"uscc": USCC, "rep_id": PRC_ID, "rep_name": "陈\ud800"}, "rep_name"),  # lone surrogate
    ({"uscc": USCC, "rep_id": PRC_ID, "rep_name": "a" * 257}, "rep_name"),
    ({"uscc": USCC, "rep_id": PRC_ID, "rep_name": 7}, "rep_name"),
    ({"uscc": USCC, "rep_id": PRC_ID}, "rep_name"),  # the full key is required
    ({"uscc": USCC, "rep_id": PRC_ID, "rep_name": "a", "extra": 1}, "extra"),
    ({"uscc": None, "rep_id": PRC_ID, "rep_name": "a"}, "uscc"),
    ({"uscc": [USCC], "rep_id": PRC_ID, "rep_name": "a"}, "uscc"),
]


@pytest.mark.parametrize(("subject", "field"), BAD_SUBJECTS)
def test_malformed_keys_are_refused_naming_the_field(subject: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_subject(VP, PRODUCT, subject)
    problems = err.value.details["fields"]["subject"]
    assert list(problems) == [field]
    value = subject.get(field)
    if isinstance(value, str) and value.strip():
        assert value not in str(err.value.as_dict())  # the value is never echoed


@pytest.mark.parametrize(
    ("subject", "field"),
    [
        ({"code": "7", "since": "2020-01-02"}, "code"),
        ({"code": True, "since": "2020-01-02"}, "code"),
        ({"code": 2**64, "since": "2020-01-02"}, "code"),
        ({"code": 7, "since": "2020-02-30"}, "since"),
        ({"code": 7, "since": "2020/01/02"}, "since"),
    ],
)
def test_typed_keys_are_refused_naming_the_field(subject: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_subject(TYPED, PRODUCT, subject)
    assert list(err.value.details["fields"]["subject"]) == [field]


def test_subject_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest):
        parse_subject(VP, PRODUCT, [USCC])


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from([USCC, PRC_ID, "１１０１０５１９４９１２３１００２ｘ", "艾力.买买提"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["uscc", "rep_id", "rep_name", "x"]), children, max_size=4
        )
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(["subject", "params", "consent_ref", "extra"]), json_values, max_size=4
    )
    | json_values
)
@settings(max_examples=400, deadline=None)
def test_any_call_body_parses_or_is_refused_cleanly(body: Any) -> None:
    try:
        item = parse_item(VP, PRODUCT, body)
    except InvalidRequest as exc:
        assert exc.details["fields"]
    else:
        assert len(item.key) == len(VP.key) and item.consent_ref
