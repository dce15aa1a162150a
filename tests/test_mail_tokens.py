"""Account tokens (single use, hashed, expiring, bound to their user and address),
one-click unsubscribe tokens (signed; tampering refused), and the notification
settings document (contract defaults, validation)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from tasktracker.core.errors import Unprocessable
from tasktracker.extensions import db
from tasktracker.mail import settings
from tasktracker.mail.config import MailConfig, env_settings
from tasktracker.mail.models import TokenPurpose, UserToken
from tasktracker.mail.tokens import (
    PASSWORD_RESET_TTL, VERIFICATION_TTL, InvalidToken, consume_token, create_token, hash_token,
)
from tasktracker.mail.unsubscribe import InvalidUnsubscribeToken, make_token, read_token, unsubscribe
from tests.factories import UserFactory

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
RESET = TokenPurpose.PASSWORD_RESET
VERIFY = TokenPurpose.VERIFY_EMAIL


def _reset_token(user, at=T0):
    raw = create_token(user.id, user.email, RESET, at, PASSWORD_RESET_TTL)
    db.session.commit()
    return raw


def _code(excinfo) -> str:
    return excinfo.value.code


def test_reset_token_single_use_and_stored_hashed(app):
    user = UserFactory()
    raw = _reset_token(user)
    stored = db.session.scalars(sa.select(UserToken)).one()
    assert stored.token_hash == hash_token(raw) and raw not in stored.token_hash and len(raw) >= 43
    assert consume_token(raw, RESET, T0 + timedelta(minutes=1)).user_id == user.id
    db.session.commit()
    with pytest.raises(InvalidToken) as excinfo:
        consume_token(raw, RESET, T0 + timedelta(minutes=2))
    assert _code(excinfo) == "invalid_reset_token" and excinfo.value.status == 422


def test_reset_token_expires_after_one_hour(app):
    user = UserFactory()
    raw = _reset_token(user)
    with pytest.raises(InvalidToken) as excinfo:
        consume_token(raw, RESET, T0 + timedelta(hours=1))
    assert _code(excinfo) == "invalid_reset_token"
    assert consume_token(raw, RESET, T0 + timedelta(minutes=59, seconds=59)).user_id == user.id


def test_someone_elses_unknown_or_wrong_purpose_tokens_are_refused(app):
    alice, bob = UserFactory(), UserFactory()
    raw = _reset_token(alice)
    for attempt in (lambda: consume_token(raw, RESET, T0, user_id=bob.id),   # not bob's
                    lambda: consume_token(raw + "x", RESET, T0),             # unknown
                    lambda: consume_token("", RESET, T0),
                    lambda: consume_token(raw, VERIFY, T0)):                 # another purpose
        with pytest.raises(InvalidToken):
            attempt()
    # the failed attempts did not use it up
    assert consume_token(raw, RESET, T0, user_id=alice.id).user_id == alice.id


def test_using_one_reset_token_voids_the_others(app):
    user = UserFactory()
    first, second = _reset_token(user), _reset_token(user, T0 + timedelta(minutes=5))
    consume_token(second, RESET, T0 + timedelta(minutes=6))
    db.session.commit()
    with pytest.raises(InvalidToken):
        consume_token(first, RESET, T0 + timedelta(minutes=7))


def test_concurrent_uses_of_one_token_one_wins(app):
    user = UserFactory()
    raw = _reset_token(user)
    outcomes, barrier = [], threading.Barrier(4)

    def use():
        with app.app_context():
            barrier.wait()
            try:
                consume_token(raw, RESET, T0 + timedelta(minutes=1))
                db.session.commit()
                outcomes.append("ok")
            except InvalidToken:
                db.session.rollback()
                outcomes.append("invalid")

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["invalid"] * 3 + ["ok"]


def test_verification_token_is_bound_to_the_address(app):
    user = UserFactory(email="old@example.com")
    raw = create_token(user.id, user.email, VERIFY, T0, VERIFICATION_TTL)
    db.session.commit()
    user.email = "new@example.com"
    db.session.commit()
    with pytest.raises(InvalidToken) as excinfo:
        consume_token(raw, VERIFY, T0 + timedelta(minutes=1), user_id=user.id)
    assert _code(excinfo) == "invalid_verification_token"
    fresh = create_token(user.id, user.email, VERIFY, T0, VERIFICATION_TTL)
    assert consume_token(fresh, VERIFY, T0 + timedelta(minutes=1), user_id=user.id).email == "new@example.com"


# --------------------------------------------------------------------------- unsubscribe


def test_unsubscribe_token_round_trip_and_tampering(app):
    user = UserFactory()
    key = app.config["SECRET_KEY"]
    token = make_token(key, user.id, ["task_assigned", "deadline_reminder"])
    assert read_token(key, token) == (user.id, ["deadline_reminder", "task_assigned"])
    payload, _, signature = token.rpartition(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    forged_payload = make_token("another-key-entirely-0123456789abcdef", user.id + 1, ["*"]).rpartition(".")[0]
    for bad in (payload + "." + flipped,                 # signature changed
                forged_payload + "." + signature,        # payload swapped (another user, all types)
                make_token("another-key-entirely-0123456789abcdef", user.id, ["*"]),  # other key
                token[:-3], "", "not-a-token"):
        with pytest.raises(InvalidUnsubscribeToken) as excinfo:
            unsubscribe(key, bad)
        assert excinfo.value.code == "invalid_unsubscribe_token" and excinfo.value.status == 422
    assert settings.get_settings(user.id)["email"]["task_assigned"] is True  # nothing changed
    user_id, doc = unsubscribe(key, token)
    db.session.commit()
    assert user_id == user.id and doc["email"]["task_assigned"] is False and doc["email"]["deadline_reminder"] is False
    assert doc["email"]["task_overdue"] is True
    assert unsubscribe(key, token)[1] == doc  # idempotent (RFC 8058 receivers may POST twice)
    _, everything = unsubscribe(key, make_token(key, user.id, ["*"]))
    assert not any(everything["email"].values()) and everything["digest"] == "off"


# --------------------------------------------------------------------------- settings


def test_settings_defaults_and_patch(app):
    user = UserFactory()
    doc = settings.get_settings(user.id)
    on = {t for t, v in doc["email"].items() if v}
    assert on == {"deadline_reminder", "task_overdue", "task_assigned", "team_invitation", "mentioned",
                  "webhook_disabled"}
    assert doc["digest"] == "off" and doc["digest_hour"] == 8
    assert set(doc["email"]) >= {"comment_added", "task_updated", "invitation_accepted"}
    doc = settings.update_settings(user.id, {"email": {"comment_added": True}, "digest": "daily", "digest_hour": 0})
    db.session.commit()
    assert doc["email"]["comment_added"] is True and doc["digest"] == "daily" and doc["digest_hour"] == 0
    assert settings.get_settings(user.id) == doc


@pytest.mark.parametrize("body, field", [
    ({"digest_hour": 24}, "digest_hour"), ({"digest_hour": -1}, "digest_hour"),
    ({"digest_hour": True}, "digest_hour"), ({"digest_hour": "8"}, "digest_hour"),
    ({"digest": "weekly"}, "digest"), ({"email": {"nope": True}}, "email"),
    ({"email": {"task_assigned": "yes"}}, "email"), ({"email": []}, "email"), ({"extra": 1}, "extra"),
])
def test_settings_validation(app, body, field):
    user = UserFactory()
    with pytest.raises(Unprocessable) as excinfo:
        settings.update_settings(user.id, body)
    assert field in excinfo.value.details


def test_config_reads_every_mail_setting_from_the_environment():
    values = env_settings({"MAIL_SERVER": "smtp.example.com", "MAIL_PORT": "2525", "MAIL_USE_TLS": "true",
                           "MAIL_USERNAME": "u", "MAIL_PASSWORD": "p", "PUBLIC_BASE_URL": "https://x.test/",
                           "MAIL_DEFAULT_SENDER": "TT <tt@x.test>"})
    config = MailConfig.from_mapping({**values, "SECRET_KEY": "k"})
    assert (config.server, config.port, config.use_tls, config.use_ssl) == ("smtp.example.com", 2525, True, False)
    assert config.public_base_url == "https://x.test" and config.sender_address == "tt@x.test"
    assert config.message_id_domain == "x.test"
    assert MailConfig.from_mapping({"MAIL_USE_SSL": True}).port == 465
    assert MailConfig.from_mapping({}).server == "" and MailConfig.from_mapping({}).port == 25
    with pytest.raises(ValueError):
        MailConfig.from_mapping({"MAIL_USE_TLS": True, "MAIL_USE_SSL": True})
