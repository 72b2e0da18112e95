"""Check characters of Chinese public-data identifiers (pure functions).

- GB 32100-2015, unified social credit code (统一社会信用代码, USCC): 18 characters over
  the 31-character alphabet ``0-9 A-Z`` without I, O, Z, S, V. Position 1 is the
  registration authority (``9`` market regulation, ``5`` civil affairs, ``1`` public
  institutions...), 2 the entity type (``1`` enterprise, ``2`` sole trader...), 3-8 the
  GB/T 2260 administrative division of the registering office, 9-17 the organisation
  code (主体标识码, GB 11714) and 18 the check character: with ``v(c)`` the index of
  ``c`` in the alphabet and weights ``w_i = 3^i mod 31`` (i = 0..16, i.e. 1, 3, 9, 27,
  19, 26, 16, ...), the check value is ``(31 - sum(v(c_i) * w_i) mod 31) mod 31``.
- GB 11714-1997, organisation code (组织机构代码): 8 body characters (digits and upper-case
  letters, A=10 ... Z=35) and a check character: ``11 - sum(v_i * w_i) mod 11`` with
  weights 3, 7, 9, 10, 5, 8, 4, 2; 10 is written ``X`` and 11 is written ``0``.
- GB 11643-1999, citizen identity number (公民身份号码): 6-digit division of first
  registration, 8-digit birth date, 3-digit sequence (odd: male, even: female) and an
  ISO 7064 MOD 11-2 check character: weights ``2^(17-i) mod 11`` (7, 9, 10, 5, 8, 4, 2,
  1, 6, 3, ...) and check value ``(12 - sum mod 11) mod 11``, 10 written ``X``.

The USCC and identity-number check characters are python-stdnum's (``stdnum.cn.uscc``,
``stdnum.cn.ric``); the organisation-code check, which stdnum does not export, is
computed here. Every function takes the code already normalised
(``sandbox.verification.normalize``) and never echoes the value in its messages: a
message names the rule broken only.
"""

from __future__ import annotations

import datetime as dt

from stdnum.cn import ric, uscc

from products.check_characters import USCC_ALPHABET

ORG_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)

_USCC_VALUE = {c: i for i, c in enumerate(USCC_ALPHABET)}
_DIGITS = frozenset("0123456789")
# GB/T 2260 province-level codes, plus 81/82/83 used by residence permits of Hong Kong,
# Macao and Taiwan residents (GB 11643 numbering).
PRC_PROVINCES = frozenset(
    {
        *("11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35"),
        *("36", "37", "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54"),
        *("61", "62", "63", "64", "65", "71", "81", "82", "83"),
    }
)


def uscc_check_char(first17: str) -> str:
    """Return the GB 32100 check character for the first 17 characters of a USCC.

    Raises ``ValueError`` if ``first17`` is not 17 characters of the USCC alphabet.
    """
    if len(first17) != 17:
        raise ValueError("a USCC body has 17 characters")
    if any(c not in _USCC_VALUE for c in first17):
        raise ValueError("character outside the USCC alphabet")
    return str(uscc.calc_check_digit(first17))


def _org_value(c: str) -> int:
    if c in _DIGITS:
        return ord(c) - ord("0")
    if "A" <= c <= "Z":
        return ord(c) - ord("A") + 10
    raise ValueError("organisation codes use digits and upper-case letters only")


def org_code_check_char(first8: str) -> str:
    """Return the GB 11714 check character for the 8-character organisation code body.

    Raises ``ValueError`` for a body of the wrong length or with other characters.
    """
    if len(first8) != 8:
        raise ValueError("an organisation code body has 8 characters")
    total = sum(_org_value(c) * w for c, w in zip(first8, ORG_CODE_WEIGHTS, strict=True))
    value = 11 - total % 11
    return "X" if value == 10 else "0" if value == 11 else str(value)


def prc_id_check_char(first17: str) -> str:
    """Return the GB 11643 (ISO 7064 MOD 11-2) check character for 17 digits.

    Raises ``ValueError`` unless ``first17`` is exactly 17 ASCII digits.
    """
    if len(first17) != 17 or not set(first17) <= _DIGITS:
        raise ValueError("an identity number body has 17 digits")
    # stdnum takes the whole number and ignores its last character.
    return str(ric.calc_check_digit(first17 + "0"))


def uscc_problem(code: str) -> str | None:
    """Return why ``code`` is not a well-formed GB 32100 USCC, or None if it is.

    Checks length, alphabet, the 6-digit division code and the check character. The
    embedded organisation code's own GB 11714 check is not enforced: GB 32100 defines
    validity by the 18th character, and codes converted from older registrations are
    not guaranteed to carry a GB 11714 body.
    """
    if len(code) != 18:
        return "must be 18 characters (GB 32100-2015)"
    if any(c not in _USCC_VALUE for c in code):
        return "must use digits and upper-case letters except I, O, S, V, Z (GB 32100-2015)"
    if not set(code[2:8]) <= _DIGITS:
        return "characters 3-8 must be a 6-digit administrative division code"
    if uscc_check_char(code[:17]) != code[17]:
        return "check character does not match (GB 32100-2015)"
    return None


def prc_id_problem(code: str) -> str | None:
    """Return why ``code`` is not a well-formed 18-digit GB 11643 identity number, or None.

    Checks length, digits, the province part of the division code, that characters 7-14
    form a real date (year 1800 or later), and the check character. First-generation
    15-digit numbers (withdrawn in 2013) are refused.
    """
    if len(code) != 18:
        return "must be 18 characters (GB 11643-1999)"
    if not set(code[:17]) <= _DIGITS or not (code[17] in _DIGITS or code[17] == "X"):
        return "must be 17 digits followed by a digit or X"
    if code[:2] not in PRC_PROVINCES:
        return "characters 1-2 are not a province code"
    try:
        born = dt.date(int(code[6:10]), int(code[10:12]), int(code[12:14]))
    except ValueError:
        return "characters 7-14 are not a valid birth date"
    if born.year < 1800:  # the standard's own example (440524188001010014) is from 1880
        return "characters 7-14 are not a plausible birth date"
    if prc_id_check_char(code[:17]) != code[17]:
        return "check character does not match (GB 11643-1999)"
    return None


def make_uscc(authority: str, entity_type: str, division: str, org_body: str) -> str:
    """Return a full USCC from its parts, computing both check characters.

    ``org_body`` is the 8-character organisation code body; its GB 11714 check
    character and the GB 32100 check character are appended. Raises ``ValueError``
    for parts that cannot form a valid code.
    """
    if len(division) != 6 or not set(division) <= _DIGITS:
        raise ValueError("the division code has 6 digits")
    body17 = authority + entity_type + division + org_body + org_code_check_char(org_body)
    return body17 + uscc_check_char(body17)


def make_prc_id(division: str, born: dt.date, sequence: int) -> str:
    """Return an 18-character identity number for a division, birth date and sequence.

    ``sequence`` is 0-999 (its parity is the sex digit). Raises ``ValueError``.
    """
    if not 0 <= sequence <= 999:
        raise ValueError("the sequence code has 3 digits")
    body = f"{division}{born:%Y%m%d}{sequence:03d}"
    return body + prc_id_check_char(body)
