"""Check characters of USCC (GB 32100), organisation codes (GB 11714) and identity
numbers (GB 11643): real-format known-good codes, then algebraic properties."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.verification.codes import (
    PRC_PROVINCES,
    USCC_ALPHABET,
    make_prc_id,
    make_uscc,
    org_code_check_char,
    prc_id_check_char,
    prc_id_problem,
    uscc_check_char,
    uscc_problem,
)

# Published credit codes of real registrations (as printed on business licences and
# used as examples by open-source validators); both check characters hold.
KNOWN_USCC = [
    "91350200776049653A",
    "91350500798359476R",
    "91350503MA31DKY80A",
    "91350200MA31E12PXF",
    "91440101MA5CJQ4N59",
    "913502000728319549",
    "123502001549897397",  # a public institution (1 = 机构编制, 2 = 事业单位)
    "91350503MA31DNG762",
    "913502115628130384",
    "9135021359498494XQ",
    "91350203MA32AXT97E",
    "91350213678251743X",
    "91350200MA2YJ1XR9G",
]
# The examples printed in GB 11643-1999 itself.
KNOWN_PRC_ID = ["11010519491231002X", "440524188001010014"]


def test_alphabet_follows_gb_32100() -> None:
    assert len(USCC_ALPHABET) == 31
    assert not set("IOSVZ") & set(USCC_ALPHABET)


@pytest.mark.parametrize("code", KNOWN_USCC)
def test_known_credit_codes_validate(code: str) -> None:
    assert uscc_problem(code) is None
    assert uscc_check_char(code[:17]) == code[17]
    assert org_code_check_char(code[8:16]) == code[16]


@pytest.mark.parametrize("code", KNOWN_PRC_ID)
def test_known_identity_numbers_validate(code: str) -> None:
    assert prc_id_problem(code) is None
    assert prc_id_check_char(code[:17]) == code[17]


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        ("91350200776049653", "18 characters"),
        ("91350200776049653AA", "18 characters"),
        ("91350200776O49653A", "except I, O"),
        ("9135020077604965 3", "except I, O"),
        ("91X50200776049653A", "division code"),
        ("91350200776049653B", "check character"),
    ],
)
def test_malformed_credit_codes_say_which_rule(code: str, rule: str) -> None:
    problem = uscc_problem(code)
    assert problem is not None and rule in problem
    assert code not in problem


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        ("11010519491231002", "18 characters"),
        ("110105194912310021X", "18 characters"),
        ("1101051949123100X2", "17 digits"),
        ("11010519491231002x", "17 digits"),  # normalisation upper-cases x first
        ("99010519491231002X", "province"),
        ("110105194902300021", "birth date"),
        ("110105170001010021", "plausible"),
        ("110105194912310021", "check character"),
    ],
)
def test_malformed_identity_numbers_say_which_rule(code: str, rule: str) -> None:
    problem = prc_id_problem(code)
    assert problem is not None and rule in problem


def test_org_code_check_char_covers_x_and_zero() -> None:
    # 11 - (sum mod 11) is 10 -> X and 11 -> 0 (GB 11714).
    seen = {org_code_check_char(f"{n:08d}") for n in range(0, 200_000, 7)}
    assert {"X", "0"} <= seen
    with pytest.raises(ValueError):
        org_code_check_char("1234567")
    with pytest.raises(ValueError):
        org_code_check_char("1234567a")


uscc_alphabet = st.sampled_from(USCC_ALPHABET)
uscc_parts = st.tuples(
    uscc_alphabet,
    uscc_alphabet,
    st.text("0123456789", min_size=6, max_size=6),
    st.text(USCC_ALPHABET, min_size=8, max_size=8),
)


@given(uscc_parts)
def test_every_generated_credit_code_validates(parts: tuple[str, str, str, str]) -> None:
    code = make_uscc(*parts)
    assert uscc_problem(code) is None
    assert org_code_check_char(code[8:16]) == code[16]


@given(uscc_parts, st.integers(0, 17), uscc_alphabet)
def test_any_single_character_change_of_a_credit_code_is_detected(
    parts: tuple[str, str, str, str], pos: int, char: str
) -> None:
    code = make_uscc(*parts)
    if code[pos] == char:
        return
    changed = code[:pos] + char + code[pos + 1 :]
    # The weights 3^i mod 31 are units mod the prime 31 and two alphabet values differ
    # by less than 31, so every substitution changes the weighted sum mod 31.
    assert uscc_problem(changed) is not None


@given(
    st.text("0123456789", min_size=8, max_size=8), st.integers(0, 8), st.sampled_from("0123456789X")
)
def test_any_single_digit_change_of_a_numeric_org_code_is_detected(
    body: str, pos: int, char: str
) -> None:
    code = body + org_code_check_char(body)
    if code[pos] == char or (pos < 8 and char == "X"):
        return
    changed = code[:pos] + char + code[pos + 1 :]
    assert org_code_check_char(changed[:8]) != changed[8]


people = st.tuples(
    st.sampled_from(sorted(PRC_PROVINCES)),
    st.text("0123456789", min_size=4, max_size=4),
    st.dates(dt.date(1900, 1, 1), dt.date(2025, 12, 31)),
    st.integers(0, 999),
)


@given(people)
def test_every_generated_identity_number_validates(
    person: tuple[str, str, dt.date, int],
) -> None:
    province, county, born, seq = person
    assert prc_id_problem(make_prc_id(province + county, born, seq)) is None


@given(people, st.integers(0, 17), st.sampled_from("0123456789X"))
def test_any_single_character_change_of_an_identity_number_is_detected(
    person: tuple[str, str, dt.date, int], pos: int, char: str
) -> None:
    province, county, born, seq = person
    code = make_prc_id(province + county, born, seq)
    if code[pos] == char:
        return
    changed = code[:pos] + char + code[pos + 1 :]
    # MOD 11-2: the weights 2^k mod 11 are units mod 11 and digits differ by < 11.
    assert prc_id_problem(changed) is not None
