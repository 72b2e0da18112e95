"""The client SDK: signed calls, typed errors, receipt verification.

>>> client = Client("http://127.0.0.1:8000", "ent-acme", Path("acme.key").read_bytes())
>>> answer = client.query("sc_…", "SELECT district, COUNT(*) FROM enterprise_registry "
...                       "GROUP BY district", epsilon=0.5)
>>> client.verify_receipt(answer)["audit_index"]

One ``Client`` may be shared by threads: each thread keeps its own connection.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt

from audit.entry import result_hash
from audit.suites import suite_for_jws_alg
from policies.calls import SM2SM3Algorithm, sign_call
from policies.principals import jwk_thumbprint, public_pem_of
from policies.sessions import CHALLENGE_PATH

LONG_CALL_S = 300  # token lifetime of calls that may run for minutes (DESIGN §6 maximum)


class ApiError(Exception):
    """An error answer of the API, with its DESIGN §5 code."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any], audit_index: int | None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.audit_index = audit_index


class BadRequest(ApiError):
    """400: invalid_request, invalid_sql, unknown_column, column_not_allowed, …"""


class Unauthorized(ApiError):
    """401: unauthenticated, bad_signature, token_expired, replayed."""


class Forbidden(ApiError):
    """403: forbidden, scope_*, operation_not_allowed, budget_exhausted."""


class NotFound(ApiError):
    """404."""


class Conflict(ApiError):
    """409."""


class TooLarge(ApiError):
    """413."""


class Throttled(ApiError):
    """429: rate_limited, quota_exceeded; ``retry_after`` in seconds."""

    @property
    def retry_after(self) -> int | None:
        value = self.details.get("retry_after")
        return int(value) if isinstance(value, int) else None


ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    429: Throttled,
}


class ReceiptError(Exception):
    """A receipt does not verify against the platform's keys or the answer."""


class Response(dict[str, Any]):
    """A JSON answer, with the audit index the platform gave the call."""

    audit_index: int | None = None
    status: int = 200


class Client:
    def __init__(
        self,
        base_url: str,
        principal_id: str,
        private_key_pem: bytes,
        kid: str | None = None,
        *,
        audience: str = "public-data-sandbox",
        timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port], not {base_url!r}")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.principal_id = principal_id
        self._key = private_key_pem
        self.kid = kid or jwk_thumbprint(public_pem_of(private_key_pem))
        self.audience = audience
        self.timeout = timeout
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []
        self._open_lock = threading.Lock()
        self._jwks: dict[str, Any] | None = None

    def close(self) -> None:
        """Close every connection this client opened (in any thread)."""
        with self._open_lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
            with self._open_lock:
                self._open.append(conn)
        return conn

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        content_type: str | None = None,
        params: Mapping[str, Any] | None = None,
        signed: bool = True,
        lifetime_s: int = 60,
    ) -> Response:
        """Send one (signed) request. Returns the JSON answer; raises ``ApiError``."""
        target = self._prefix + path
        if params:
            target += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        headers = {"Accept": "application/json"}
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode()
            content_type = "application/json"
        data = body or b""
        if content_type:
            headers["Content-Type"] = content_type
        if signed:
            token = sign_call(
                self._key,
                issuer=self.principal_id,
                kid=self.kid,
                audience=self.audience,
                method=method,
                path_and_query=target,
                body=data,
                lifetime_s=lifetime_s,
            )
            headers["Authorization"] = f"Bearer {token}"
        status, reply, audit_index = self._send(method, target, data, headers)
        try:
            parsed = json.loads(reply) if reply else {}
        except json.JSONDecodeError:
            parsed = {
                "error": {"code": "internal", "message": reply[:200].decode(errors="replace")}
            }
        if status >= 400:
            err = parsed.get("error", {}) if isinstance(parsed, dict) else {}
            cls = ERRORS_BY_STATUS.get(status, ApiError)
            raise cls(
                status,
                str(err.get("code", "unknown")),
                str(err.get("message", "")),
                dict(err.get("details") or {}),
                audit_index,
            )
        out = Response(parsed if isinstance(parsed, dict) else {"value": parsed})
        out.audit_index = audit_index
        out.status = status
        return out

    def _send(
        self, method: str, target: str, data: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, int | None]:
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, target, body=data, headers=headers)
                resp = conn.getresponse()
                reply = resp.read()
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                continue
            index = resp.getheader("X-Audit-Index")
            return resp.status, reply, int(index) if index is not None else None
        raise AssertionError("unreachable")  # pragma: no cover

    # The web console (DESIGN §12): sign-in without the key leaving this machine.
    def console_token(self, challenge: str, lifetime_s: int = 300) -> str:
        """Sign a console sign-in ``challenge``: a DESIGN §6 signed call over
        ``POST /console/sign-in`` whose body is the challenge."""
        return sign_call(
            self._key,
            issuer=self.principal_id,
            kid=self.kid,
            audience=self.audience,
            method="POST",
            path_and_query=CHALLENGE_PATH,
            body=challenge.encode(),
            lifetime_s=lifetime_s,
        )

    def console_link(self) -> str:
        """Ask the service for a one-time challenge, sign it, and return the single-use
        sign-in link to open in a browser (valid for the challenge's few minutes)."""
        answer = self.request("GET", "/console/challenge", signed=False)
        challenge = str(answer["challenge"])
        token = self.console_token(challenge, min(int(answer.get("expires_in", 300)), 300))
        base = f"{self._scheme}://{self._host}" + (f":{self._port}" if self._port else "")
        query = urlencode({"challenge": challenge, "token": token})
        return f"{base}{self._prefix}/console/sign-in?{query}"

    # Convenience wrappers over DESIGN §5.
    def get(self, path: str, **params: Any) -> Response:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, *, lifetime_s: int = 60) -> Response:
        return self.request(
            "POST", path, json_body=body if body is not None else {}, lifetime_s=lifetime_s
        )

    def query(self, scope: str, sql: str, epsilon: float | str) -> Response:
        return self.post("/v1/queries", {"scope": scope, "sql": sql, "epsilon": epsilon})

    def preview(self, scope: str, sql: str, epsilon: float | str) -> Response:
        return self.post("/v1/queries/preview", {"scope": scope, "sql": sql, "epsilon": epsilon})

    def verify(
        self,
        vp_id: str,
        scope: str,
        subject: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        consent_ref: str | None = None,
        request_id: str | None = None,
    ) -> Response:
        body: dict[str, Any] = {"scope": scope, "subject": dict(subject)}
        if params is not None:
            body["params"] = dict(params)
        if consent_ref is not None:
            body["consent_ref"] = consent_ref
        if request_id is not None:
            body["request_id"] = request_id
        return self.post(f"/v1/verifications/{vp_id}", body)

    def verify_batch(
        self, vp_id: str, scope: str, items: list[dict[str, Any]], request_id: str | None = None
    ) -> Response:
        body: dict[str, Any] = {"scope": scope, "items": items}
        if request_id is not None:
            body["request_id"] = request_id
        return self.post(f"/v1/verifications/{vp_id}/batch", body)

    # Sandbox model development and model products (DESIGN §11).
    def synthetic(
        self,
        product_id: str,
        scope: str,
        epsilon: float | str,
        columns: Sequence[str],
        rows: int,
        *,
        method: str | None = None,
        bins: Mapping[str, Sequence[Any]] | None = None,
        preview: bool = False,
    ) -> Response:
        """DP synthetic rows ``{"columns", "rows", "epsilon_spent", "budget", "release",
        "receipt"}`` (``preview``: cost and accuracy only, nothing spent)."""
        body: dict[str, Any] = {
            "scope": scope,
            "epsilon": epsilon,
            "columns": list(columns),
            "rows": rows,
        }
        if method is not None:
            body["method"] = method
        if bins:
            body["bins"] = {k: list(v) for k, v in bins.items()}
        suffix = "/preview" if preview else ""
        # A fit can take minutes: the call's token lives as long as DESIGN §6 allows,
        # since the platform refuses a call whose token expired before its commit.
        return self.post(
            f"/v1/products/{product_id}/synthetic{suffix}", body, lifetime_s=LONG_CALL_S
        )

    def train(
        self,
        scope: str,
        product_id: str,
        epsilon: float | str,
        spec: Mapping[str, Any],
        *,
        preview: bool = False,
    ) -> Response:
        """A DP-trained model ``{"model", "metrics", "accuracy", "epsilon_spent",
        "budget", "release", "receipt"}`` (``preview``: cost and accuracy only)."""
        body = {"scope": scope, "product": product_id, "epsilon": epsilon, "spec": dict(spec)}
        path = "/v1/models/train/preview" if preview else "/v1/models/train"
        return self.post(path, body, lifetime_s=LONG_CALL_S)

    def score(
        self,
        model_product: str,
        scope: str,
        subject: Mapping[str, Any],
        consent_ref: str | None = None,
        request_id: str | None = None,
    ) -> Response:
        """``{"band", "model_version", "receipt"}``."""
        body: dict[str, Any] = {"scope": scope, "subject": dict(subject)}
        if consent_ref is not None:
            body["consent_ref"] = consent_ref
        if request_id is not None:
            body["request_id"] = request_id
        return self.post(f"/v1/model-products/{model_product}/score", body)

    def score_batch(self, model_product: str, scope: str, items: list[dict[str, Any]]) -> Response:
        """``{"results": [{"band"}...], "model_version", "receipt"}``."""
        return self.post(
            f"/v1/model-products/{model_product}/score/batch", {"scope": scope, "items": items}
        )

    def publish_model(self, definition: Mapping[str, Any]) -> Response:
        """Define a model product (a new definition is a new draft version)."""
        return self.post("/v1/model-products", dict(definition))

    def file_model(self, model_product: str, version: str, note: str | None = None) -> Response:
        """File a draft version (regulator)."""
        body = {"note": note} if note else {}
        return self.post(f"/v1/model-products/{model_product}/versions/{version}/file", body)

    def withdraw_model(self, model_product: str, version: str, note: str | None = None) -> Response:
        body = {"note": note} if note else {}
        return self.post(f"/v1/model-products/{model_product}/versions/{version}/withdraw", body)

    def upload(self, product_id: str, path: Path) -> Response:
        ctype = "application/vnd.apache.parquet" if path.suffix == ".parquet" else "text/csv"
        return self.request(
            "PUT", f"/v1/products/{product_id}/data", body=path.read_bytes(), content_type=ctype
        )

    def jwks(self, *, refresh: bool = False) -> dict[str, Any]:
        """Return the platform's JWKS (cached)."""
        if self._jwks is None or refresh:
            self._jwks = dict(self.request("GET", "/v1/keys", signed=False))
        return self._jwks

    def verify_receipt(self, answer: Mapping[str, Any]) -> dict[str, Any]:
        """Check an answer's receipt: platform signature and ``result_hash``.

        Returns the receipt claims. Raises ``ReceiptError``.
        """
        token = answer.get("receipt")
        if not isinstance(token, str):
            raise ReceiptError("the answer carries no receipt")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise ReceiptError(f"receipt is not a JWS: {exc}") from None
        alg = header.get("alg")
        if header.get("typ") != "pds-receipt+jwt" or alg not in ("EdDSA", "SM2SM3"):
            raise ReceiptError("receipt header must be typ pds-receipt+jwt, alg EdDSA or SM2SM3")
        jwk = next((k for k in self.jwks()["keys"] if k.get("kid") == header.get("kid")), None)
        if jwk is None:
            jwk = next(
                (k for k in self.jwks(refresh=True)["keys"] if k.get("kid") == header.get("kid")),
                None,
            )
        if jwk is None:
            raise ReceiptError(f"no platform key {header.get('kid')!r}")
        if jwk.get("alg", alg) != alg:
            raise ReceiptError(f"platform key {header.get('kid')!r} does not sign {alg}")
        try:
            # SM2SM3 (DESIGN §13) is registered with pyjwt by policies.calls.
            key: Any = (
                SM2SM3Algorithm.from_jwk(jwk) if alg == "SM2SM3" else jwt.PyJWK(jwk, algorithm=alg)
            )
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                options={
                    "require": [
                        "iss",
                        "iat",
                        "audit_index",
                        "leaf_hash",
                        "request_hash",
                        "result_hash",
                    ],
                    "verify_aud": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise ReceiptError(f"receipt does not verify: {exc}") from None
        # The receipt's algorithm names the platform's suite, and so its hash.
        digest = suite_for_jws_alg(alg).digest
        expected = result_hash({k: v for k, v in answer.items() if k != "receipt"}, digest=digest)
        if claims["result_hash"] != expected:
            raise ReceiptError("receipt result_hash does not match this answer")
        return claims
