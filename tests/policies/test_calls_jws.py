"""The server's pyjwt decoder (``policies.calls._JWS``) parses segments exactly as
pyjwt does: same bytes out, same refusals; only the alphabet check runs in C."""

from __future__ import annotations

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import calls

pyjwt_segment = getattr(jwt.PyJWS, "_decode_base64url_segment", None)
needs_pyjwt_check = pytest.mark.skipif(
    pyjwt_segment is None, reason="this pyjwt has no per-segment base64url check to match"
)

# Mostly alphabet characters, with the padding and junk that pyjwt refuses.
segments = st.lists(
    st.sampled_from(list(b"AZaz09-_=+/!. \n\x00\xff") + list(b"QUJDRA")), max_size=24
).map(bytes)


def outcome(decode: object, segment: bytes) -> tuple[str, bytes | str]:
    try:
        return "ok", decode(segment, "payload")  # type: ignore[operator]
    except jwt.DecodeError as exc:
        return "refused", str(exc)


@needs_pyjwt_check
@given(segments)
def test_segment_decoding_matches_pyjwt(segment: bytes) -> None:
    assert outcome(calls._JWS._decode_base64url_segment, segment) == outcome(pyjwt_segment, segment)


@needs_pyjwt_check
@pytest.mark.parametrize(
    "segment",
    [b"", b"QQ", b"QQ==", b"QQ=", b"QUI=", b"QUJD", b"Q", b"QQ===", b"Q!Q", b"Q+Q/", b"QQ=Q"],
)
def test_segment_examples_match_pyjwt(segment: bytes) -> None:
    assert outcome(calls._JWS._decode_base64url_segment, segment) == outcome(pyjwt_segment, segment)


def test_the_server_decoder_uses_the_override() -> None:
    # If a pyjwt release moves its JWS object, this fails instead of silently
    # decoding with the slow check (or not at all).
    assert type(calls._JWT._jws) is calls._JWS
    token = jwt.encode({"a": 1}, "k" * 32, algorithm="HS256")
    header_b64 = token.split(".")[0]
    assert calls._JWT.decode_complete(token, options={"verify_signature": False})[
        "header"
    ] == jwt.get_unverified_header(token)
    with pytest.raises(jwt.DecodeError):
        calls._JWT.decode_complete(
            header_b64 + ".e30!." + token.split(".")[2], options={"verify_signature": False}
        )
