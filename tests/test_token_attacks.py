"""Bearer token attacks: each answers 401 in the contract's error shape with ``WWW-Authenticate``.

api-contract.md, "Conventions": missing, malformed, expired, tampered or
revoked token -> 401. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import timedelta

import jwt as pyjwt
import pytest
import time_machine
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token

from tasktracker.auth.models import User
from tasktracker.extensions import db
from tests.helpers import case

PROTECTED = [("get", "/api/auth/profile"), ("patch", "/api/auth/profile"), ("post", "/api/auth/logout"),
             ("get", "/api/users"), ("get", "/api/users/1"), ("patch", "/api/users/1")]


def assert_unauthorized(response, code: str | None = None) -> dict:
    """401, the contract's error shape, a ``WWW-Authenticate: Bearer`` challenge."""
    assert response.status_code == 401, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code, error
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), dict(response.headers)
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "jwt." not in text.lower()
    return error


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj: dict) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def unb64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def claims_of(token: str) -> dict:
    return unb64url_json(token.split(".")[1])


def call(client, token: str | None, method: str = "get", path: str = "/api/auth/profile", scheme="Bearer"):
    headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
    return getattr(client, method)(path, headers=headers, json={} if method != "get" else None)


@pytest.fixture
def victim(auth):
    """A logged-in member whose token an attacker tries to abuse; the admin is the prize."""
    admin = auth.user("root", admin=True)
    session = auth.user("mallory")
    session.admin = admin
    return session


# --------------------------------------------------------------------------- forged tokens


def test_valid_token_works(client, victim):
    """Baseline for the attacks below: the untouched token is accepted."""
    assert call(client, victim.access_token).status_code == 200


def test_tampered_payload_keeps_signature(client, victim):
    header, payload, signature = victim.access_token.split(".")
    claims = unb64url_json(payload)
    claims["sub"] = str(victim.admin.id)  # become the admin
    forged = ".".join([header, b64url_json(claims), signature])
    assert_unauthorized(call(client, forged), "invalid_token")
    assert_unauthorized(call(client, forged, "get", "/api/users"), "invalid_token")


def test_tampered_expiry_keeps_signature(client, victim):
    header, payload, signature = victim.access_token.split(".")
    claims = unb64url_json(payload)
    claims["exp"] += 10 * 365 * 86400
    assert_unauthorized(call(client, ".".join([header, b64url_json(claims), signature])), "invalid_token")


def test_token_signed_with_another_key(client, victim):
    claims = claims_of(victim.access_token)
    claims["sub"] = str(victim.admin.id)
    forged = pyjwt.encode(claims, "another-secret-key-that-is-32-bytes-long!", algorithm="HS256")
    assert_unauthorized(call(client, forged), "invalid_token")


def test_alg_none_token(client, victim):
    claims = claims_of(victim.access_token)
    claims["sub"] = str(victim.admin.id)
    for alg in ("none", "None", "NONE", ""):
        for trailing in (".", ""):
            forged = b64url_json({"alg": alg, "typ": "JWT"}) + "." + b64url_json(claims) + trailing
            with case(f"alg={alg!r} trailing={trailing!r}"):
                assert_unauthorized(call(client, forged), "invalid_token")
                assert_unauthorized(call(client, forged, "get", "/api/users"), "invalid_token")
    # The refresh endpoint refuses an unsigned refresh token too.
    refresh_claims = claims_of(victim.refresh_token)
    forged = b64url_json({"alg": "none", "typ": "JWT"}) + "." + b64url_json(refresh_claims) + "."
    assert_unauthorized(call(client, forged, "post", "/api/auth/refresh"), "invalid_token")


def test_alg_none_keeping_original_signature(client, victim):
    _, payload, signature = victim.access_token.split(".")
    forged = ".".join([b64url_json({"alg": "none", "typ": "JWT"}), payload, signature])
    assert_unauthorized(call(client, forged), "invalid_token")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_other_algorithm_with_the_right_key_is_refused(client, app, victim):
    """Only HS256 is accepted, even for a correctly keyed HS512 token (algorithm pinning)."""
    forged = pyjwt.encode(claims_of(victim.access_token), app.config["JWT_SECRET_KEY"], algorithm="HS512")
    assert_unauthorized(call(client, forged), "invalid_token")


def test_well_signed_token_with_unknown_session_is_refused(client, victim):
    """A token minted with the real key but no login session behind it (e.g. a leaked key) is refused."""
    token = create_access_token(identity=str(victim.admin.id), additional_claims={"sid": uuid.uuid4().hex})
    assert_unauthorized(call(client, token), "token_revoked")
    token = create_access_token(identity=str(victim.admin.id))  # no sid claim at all
    assert_unauthorized(call(client, token), "token_revoked")


def test_session_of_another_user_does_not_transfer(client, victim):
    """A token naming the admin as ``sub`` with mallory's live ``sid`` is not the admin's session."""
    sid = decode_token(victim.access_token)["sid"]
    token = create_access_token(identity=str(victim.admin.id), additional_claims={"sid": sid})
    r = call(client, token, "get", "/api/users")
    assert_unauthorized(r, "token_revoked")


# --------------------------------------------------------------------------- expired and revoked


def test_expired_access_token(client, victim):
    sid = decode_token(victim.access_token)["sid"]
    expired = create_access_token(identity=str(victim.id), additional_claims={"sid": sid},
                                  expires_delta=timedelta(seconds=-1))
    # Same identity and live session, only the expiry differs.
    live = create_access_token(identity=str(victim.id), additional_claims={"sid": sid})
    assert call(client, live).status_code == 200
    assert_unauthorized(call(client, expired), "token_expired")


def test_a_token_verified_once_still_expires(client, victim):
    """The per-process memo of verified tokens (core/jwt_cache.py) never outlives ``exp``."""
    sid = decode_token(victim.access_token)["sid"]
    short = create_access_token(identity=str(victim.id), additional_claims={"sid": sid},
                                expires_delta=timedelta(seconds=2))
    assert call(client, short).status_code == 200
    assert call(client, short).status_code == 200  # from the memo
    assert short in client.application.extensions["tt_verified_tokens"]._claims
    with time_machine.travel(decode_token(short)["exp"] + 0.05, tick=False):  # the clock the memo and PyJWT read
        assert_unauthorized(call(client, short), "token_expired")


def test_a_tampered_copy_of_a_verified_token_is_refused(client, victim):
    assert call(client, victim.access_token).status_code == 200  # verified, in the memo
    header, payload, signature = victim.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = str(int(claims["sub"]) + 1)
    forged = ".".join([header, base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode(),
                       signature])
    assert_unauthorized(call(client, forged), "invalid_token")


def test_expired_refresh_token(client, victim):
    sid = decode_token(victim.access_token)["sid"]
    expired = create_refresh_token(identity=str(victim.id), additional_claims={"sid": sid},
                                   expires_delta=timedelta(seconds=-1))
    assert_unauthorized(call(client, expired, "post", "/api/auth/refresh"), "token_expired")


def test_revoked_after_logout(client, victim):
    assert client.post("/api/auth/logout", headers=victim.headers).status_code == 204
    for method, path in PROTECTED:
        assert_unauthorized(call(client, victim.access_token, method, path), "token_revoked")
    assert_unauthorized(call(client, victim.refresh_token, "post", "/api/auth/refresh"), "token_revoked")


def test_refresh_token_used_as_access_token(client, victim):
    for method, path in PROTECTED:
        assert_unauthorized(call(client, victim.refresh_token, method, path), "invalid_token")


def test_access_token_used_as_refresh_token(client, victim):
    assert_unauthorized(call(client, victim.access_token, "post", "/api/auth/refresh"), "invalid_token")


def test_deactivated_user_without_revocation(client, victim):
    """Even if a deactivation skipped the session revocation, the user check refuses the token."""
    db.session.get(User, victim.id).active = False
    db.session.commit()
    assert_unauthorized(call(client, victim.access_token), "user_inactive")
    assert_unauthorized(call(client, victim.refresh_token, "post", "/api/auth/refresh"), "user_inactive")


def test_deleted_user(client, victim):
    db.session.delete(db.session.get(User, victim.id))
    db.session.commit()
    assert_unauthorized(call(client, victim.access_token))
    assert_unauthorized(call(client, victim.refresh_token, "post", "/api/auth/refresh"))


# --------------------------------------------------------------------------- malformed headers


MALFORMED_HEADERS = [
    "Bearer abc",
    "Bearer a.b.c",
    "Bearer ...",
    "Bearer eyJhbGciOiJIUzI1NiJ9.e30.",
    "Bearer " + b64url_json({"alg": "HS256"}) + ".bm90IGpzb24." + "A" * 43,  # payload is not JSON
    "Bearer " + "A" * 5000,
    "Bearer \u00e9t\u00e9",
    "Bearer",
    "Bearer ",
    "Basic xyz",
    "Basic dXNlcjpwYXNz",
    "Token abc",
    "abc",
    "",
]


@pytest.mark.parametrize("method, path", [("get", "/api/auth/profile"), ("post", "/api/auth/refresh"),
                                          ("get", "/api/users")])
def test_malformed_authorization_headers(client, victim, method, path):
    for header in MALFORMED_HEADERS:
        with case(header[:40]):
            r = getattr(client, method)(path, headers={"Authorization": header})
            assert_unauthorized(r)


def test_bearer_scheme_is_case_insensitive(client, victim):
    """RFC 7235 §2.1: the auth-scheme is case-insensitive; the token itself is not."""
    for scheme in ("bearer", "BEARER", "bEaReR"):
        with case(scheme):
            assert call(client, victim.access_token, scheme=scheme).status_code == 200
    assert_unauthorized(call(client, victim.access_token.swapcase(), scheme="bearer"))
    assert_unauthorized(call(client, victim.access_token, scheme="Bearer-ish"))


def test_missing_header(client):
    for method, path in PROTECTED + [("post", "/api/auth/refresh")]:
        assert_unauthorized(call(client, None, method, path), "missing_token")


def test_valid_token_under_another_scheme_is_refused(client, victim):
    assert_unauthorized(call(client, victim.access_token, scheme="Basic"))
    assert_unauthorized(call(client, victim.access_token, scheme="Token"))


def test_two_tokens_in_one_header_are_refused(client, victim):
    r = client.get("/api/auth/profile",
                   headers={"Authorization": f"Bearer {victim.access_token} {victim.access_token}"})
    assert_unauthorized(r)


def test_token_in_query_string_is_ignored(client, victim):
    assert_unauthorized(client.get(f"/api/auth/profile?jwt={victim.access_token}"), "missing_token")
