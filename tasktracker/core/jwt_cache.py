"""Flask-JWT-Extended's manager with a per-process memo of verified tokens."""

from __future__ import annotations

import time

from flask import current_app
from flask_jwt_extended import JWTManager


class VerifiedTokens:
    """A bounded in-process memo of verified access/refresh tokens: the exact token
    string -> its claims, until the token's ``exp``.

    HS256 verification of the same string with the same key always gives the same
    answer, so the signature and claims are checked once per token and process
    (PyJWT's decode is a third of a cached list request's CPU, bench/cpu_cost.py).
    Revocation is not decided here: the blocklist check runs on every request.
    """

    def __init__(self, max_entries: int = 20_000):
        self.max_entries = max_entries
        self._claims: dict[str, dict] = {}

    def get(self, token: str) -> dict | None:
        """A copy of the claims of ``token`` if it was verified and has not expired."""
        claims = self._claims.get(token)
        if claims is None:
            return None
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or time.time() >= exp:
            self._claims.pop(token, None)
            return None
        return dict(claims)

    def put(self, token: str, claims: dict) -> None:
        if len(self._claims) >= self.max_entries:
            self._claims.clear()
        self._claims[token] = dict(claims)


class CachingJWTManager(JWTManager):
    """Flask-JWT-Extended's manager, verifying each token string once per process
    (:class:`VerifiedTokens`); expired, CSRF-bound and ``allow_expired`` decodes go
    to the library every time, so its errors (expired, invalid) are unchanged."""

    def _decode_jwt_from_config(self, encoded_token: str, csrf_value=None, allow_expired: bool = False) -> dict:
        if csrf_value is not None or allow_expired or not isinstance(encoded_token, str):
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        memo = current_app.extensions.get("tt_verified_tokens")
        if memo is None:
            memo = current_app.extensions["tt_verified_tokens"] = VerifiedTokens()
        claims = memo.get(encoded_token)
        if claims is None:
            claims = super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
            memo.put(encoded_token, claims)
        return claims
