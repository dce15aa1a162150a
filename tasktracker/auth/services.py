"""Account rules: registration, login, tokens, profile, admin user management."""

from __future__ import annotations

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from flask_jwt_extended import create_access_token

from tasktracker.auth.models import User
from tasktracker.auth.tokens import access_expires_in, issue_tokens, revoke_sessions
from tasktracker.core.api import storable_text
from tasktracker.core.db import refused_as
from tasktracker.core.errors import Conflict, Unauthorized, Unprocessable, UserNotFound
from tasktracker.events.services import diff, record_event
from tasktracker.extensions import db
from tasktracker.teams.models import TeamMember

INVALID_CREDENTIALS = "Invalid credentials."


def _hashing() -> tuple[PasswordHasher, str]:
    """The current app's argon2id hasher and a dummy hash made with it, built once from
    ``PASSWORD_HASH_TIME_COST``, ``PASSWORD_HASH_MEMORY_COST`` and
    ``PASSWORD_HASH_PARALLELISM`` (config.py) and kept in ``app.extensions``."""
    hashing = current_app.extensions.get("tt_password_hashing")
    if hashing is None:
        config = current_app.config
        hasher = PasswordHasher(time_cost=config["PASSWORD_HASH_TIME_COST"],
                                memory_cost=config["PASSWORD_HASH_MEMORY_COST"],
                                parallelism=config["PASSWORD_HASH_PARALLELISM"])
        hashing = current_app.extensions["tt_password_hashing"] = (hasher, hasher.hash("not-a-real-password"))
    return hashing


def _hasher() -> PasswordHasher:
    return _hashing()[0]


def _dummy_hash() -> str:
    """A hash made by the current hasher: verifying an unknown user against it takes as
    long as verifying a real user's (same argon2 parameters), so timing tells nothing."""
    return _hashing()[1]


def hash_password(password: str) -> str:
    """argon2id hash of ``password`` (needs an app context: the cost is app config)."""
    return _hasher().hash(password)


def verify_password(user: User | None, password: str) -> bool:
    """Constant-shape check of ``password`` against ``user``'s hash (False for None)."""
    try:
        return _hasher().verify(user.password_hash if user else _dummy_hash(), password) and user is not None
    except (VerificationError, InvalidHashError):
        return False


def _ensure_unique(username: str | None, email: str | None, exclude_id: int | None = None) -> None:
    """Raise :class:`Conflict` (409 ``duplicate_username`` / ``duplicate_email``) if the
    username or email is taken by another user, case-insensitively.

    This answers the sequential case; concurrent twins are refused by the unique
    indexes on ``lower(username)`` / ``lower(email)`` (:func:`_duplicate_after_rollback`).
    """
    for field, value in (("username", username), ("email", email)):
        if value is None:
            continue
        column = getattr(User, field)
        stmt = sa.select(User.id).where(sa.func.lower(column) == value.lower())
        if exclude_id is not None:
            stmt = stmt.where(User.id != exclude_id)
        if db.session.scalar(stmt) is not None:
            raise Conflict(f"That {field} is already taken.", code=f"duplicate_{field}",
                           details={field: [f"That {field} is already taken."]})


def _duplicate_after_rollback(username: str | None, email: str | None, exclude_id: int | None = None) -> Conflict:
    """The 409 for a write the unique indexes refused (already rolled back): a
    concurrent registration or rename took the username or email first, and it is
    committed now, so :func:`_ensure_unique` names the field with the same code as
    the sequential check. ``duplicate_user`` only if neither is found any more."""
    try:
        _ensure_unique(username, email, exclude_id)
    except Conflict as conflict:
        return conflict
    return Conflict("That username or email is already taken.", code="duplicate_user")


def create_user(username: str, email: str, password: str, full_name: str = "",
                role: str = "member") -> User:
    """Create and commit a user. Raises :class:`Conflict` (409 ``duplicate_username`` /
    ``duplicate_email``) on a duplicate, case-insensitively, also against a
    concurrent registration (settled by the unique indexes)."""
    email = email.strip().lower()
    _ensure_unique(username, email)
    user = User(username=username, email=email, password_hash=hash_password(password),
                full_name=full_name, role=role)
    db.session.add(user)
    with refused_as(lambda: _duplicate_after_rollback(username, email)):  # a concurrent registration won
        db.session.commit()
    return user


def find_login_user(email: str | None, username: str | None) -> User | None:
    """The user named by ``email`` (case-insensitive, trimmed) or else ``username`` (case-insensitive)."""
    if email:
        return db.session.scalar(sa.select(User).where(sa.func.lower(User.email) == email.strip().lower()))
    return db.session.scalar(sa.select(User).where(sa.func.lower(User.username) == username.lower()))


def login_account_key(email: object, username: object) -> str:
    """The per-account login rate-limit bucket for a login body's ``email``/``username``.

    An existing account is keyed by its id, so naming it by email, by username
    or in another case all count against one limit; an unknown identifier is
    keyed by its normalised text. Values a login could never match (not a
    string, too long, NUL, an unpaired surrogate such as JSON ``"\\ud800"``
    that no driver or limiter storage can encode) share one bucket and never
    reach the database: this runs before the body is validated (the view then
    answers 422).
    """
    email = email if isinstance(email, str) else None
    username = username if isinstance(username, str) else None
    ident = email or username
    if not ident or not ident.strip() or len(ident) > 254 or not storable_text(ident):
        return "login-account:?"
    user = find_login_user(email, username)
    if user is not None:
        return f"login-account:user:{user.id}"
    return "login-account:" + ident.strip().lower()


def login(email: str | None, username: str | None, password: str) -> dict:
    """Check credentials and open a session.

    Returns ``{access_token, refresh_token, token_type, expires_in, user}``. Raises
    :class:`Unauthorized` with one message for unknown user, wrong password and
    inactive account (the contract forbids telling them apart).
    """
    user = find_login_user(email, username)
    if not verify_password(user, password) or not user.active:
        raise Unauthorized(INVALID_CREDENTIALS, code="invalid_credentials")
    if _hasher().check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    tokens = issue_tokens(user)
    db.session.commit()
    return {**tokens, "user": user}


def refresh(user: User, sid: str) -> dict:
    """A new access token in login session ``sid`` (the refresh token's ``sid`` claim):
    ``{access_token, expires_in}``."""
    return {"access_token": create_access_token(identity=str(user.id), additional_claims={"sid": sid}),
            "expires_in": access_expires_in()}


def logout(user: User, sid: str) -> None:
    """Revoke the session: its access and refresh tokens answer 401 from now on."""
    revoke_sessions(user.id, only=sid)
    db.session.commit()


#: User fields that other data shows (a task's owner/assignee ``{id, username,
#: full_name}``) or that change what the user may see (``role``); a change of
#: any of them writes ``user.updated`` (the task-list cache keys on events).
EVENT_FIELDS = ("username", "full_name", "role", "active")


def _record_user_change(actor_id: int | None, user: User, before: dict) -> None:
    """Add a ``user.updated`` event if an :data:`EVENT_FIELDS` value changed."""
    changes = diff(before, {f: getattr(user, f) for f in EVENT_FIELDS})
    if changes:
        record_event("user.updated", actor_id=actor_id, payload={
            "user": {"id": user.id, "username": user.username, "full_name": user.full_name},
            "changes": changes})


def update_profile(user: User, data: dict, current_sid: str) -> User:
    """Apply a profile change.

    A new password needs the right ``current_password`` (else 422 on that field,
    so a typo does not look like a logged-out session) and revokes all of the
    user's other sessions. Username/email must stay unique, case-insensitively
    (409 ``duplicate_username`` / ``duplicate_email``, also against a concurrent
    rename or registration: the unique indexes refuse the second).
    """
    # Every check runs before anything changes, so a refused request changes nothing.
    user_id = user.id
    if "email" in data:
        data["email"] = data["email"].strip().lower()
    _ensure_unique(data.get("username"), data.get("email"), exclude_id=user_id)
    if "password" in data and not verify_password(user, data["current_password"]):
        raise Unprocessable(details={"current_password": ["Wrong password."]})
    before = {f: getattr(user, f) for f in EVENT_FIELDS}
    if "email" in data and data["email"] != (user.email or "").lower():
        user.email_verified = False  # contract v1.1: changing the email resets it
    for field in ("username", "email", "full_name", "timezone"):
        if field in data:
            setattr(user, field, data[field])
    _record_user_change(user.id, user, before)
    if "password" in data:
        user.password_hash = hash_password(data["password"])
        revoke_sessions(user.id, keep=current_sid)
    # a concurrent update may have taken the username/email
    with refused_as(lambda: _duplicate_after_rollback(data.get("username"), data.get("email"),
                                                      exclude_id=user_id)):
        db.session.commit()
    return user


def get_user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise UserNotFound()
    return user


def users_query(q: str | None = None, role: str | None = None, active: bool | None = None) -> sa.Select:
    """Admin user list, filtered, ordered by id."""
    stmt = sa.select(User).order_by(User.id)
    if q:  # a substring, matched literally ("_" and "%" are not wildcards), case-insensitive
        q = q.lower()
        stmt = stmt.where(sa.or_(*(sa.func.lower(column).contains(q, autoescape=True)
                                   for column in (User.username, User.email, User.full_name))))
    if role:
        stmt = stmt.where(User.role == role)
    if active is not None:
        stmt = stmt.where(User.active == active)
    return stmt


def _active_admins():
    return sa.select(User.id).where(User.role == "admin", User.active.is_(True))


def admin_update_user(user: User, role: str | None = None, active: bool | None = None,
                      actor_id: int | None = None) -> User:
    """Change a user's role or active flag; deactivation revokes all their sessions.
    A real change writes ``user.updated`` (``actor_id``: the admin; None from the CLI).

    The last active site admin can be neither demoted nor deactivated: 409
    ``last_admin``, nothing changed. Settled by the database, also when admins
    demote or deactivate each other concurrently: a change that takes an active
    admin away first locks the rows of the active admins (``SELECT ... FOR
    UPDATE`` on PostgreSQL; a concurrent one waits, then sees this one's result),
    writes, and counts the active admins left in its own transaction (on SQLite,
    under the write lock its write took), rolling back if none is.
    """
    def removes_admin() -> bool:
        return user.role == "admin" and user.active and (
            (role is not None and role != "admin") or active is False)

    check_admins = removes_admin()
    if check_admins:
        db.session.execute(_active_admins().with_for_update()).all()
        db.session.refresh(user)  # as committed by whoever held the locks before us
        check_admins = removes_admin()
    before = {f: getattr(user, f) for f in EVENT_FIELDS}
    if role is not None:
        user.role = role
    if active is not None:
        user.active = active
        if not active:
            revoke_sessions(user.id)
    if check_admins:
        db.session.flush()
        if db.session.scalar(sa.select(sa.func.count()).select_from(_active_admins().subquery())) == 0:
            username = user.username
            db.session.rollback()
            raise Conflict(f"{username} is the last active site admin; make another user admin first.",
                           code="last_admin")
    _record_user_change(actor_id, user, before)
    db.session.commit()
    return user


def shares_team(a: int, b: int) -> bool:
    """True if users ``a`` and ``b`` are members of a common team."""
    tm1, tm2 = sa.orm.aliased(TeamMember), sa.orm.aliased(TeamMember)
    stmt = sa.select(tm1.team_id).join(tm2, tm1.team_id == tm2.team_id).where(
        tm1.user_id == a, tm2.user_id == b).limit(1)
    return db.session.scalar(stmt) is not None


def view_user(viewer: User, user_id: int) -> tuple[User, bool]:
    """The user ``viewer`` may see and whether the full profile (with email) is shown.

    Admin and self see the full profile; teammates the public one; anyone else 404.
    """
    user = db.session.get(User, user_id)
    if user is None:
        raise UserNotFound()
    if viewer.is_admin or viewer.id == user.id:
        return user, True
    if shares_team(viewer.id, user.id):
        return user, False
    raise UserNotFound()
