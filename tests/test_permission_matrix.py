"""Permission matrix: every endpoint x every kind of caller -> expected status.

One row per (method, path, setup, body); one column per actor. Each row starts
from a fresh world (on both databases), and so does each actor after a
request that succeeded in changing something (DELETE, accept...), so actors
never see each other's changes (a refused request must change nothing). To cover a new endpoint, add one
``row(...)`` line; placeholders in the path and in string values of the body
are the keys of ``World.ids`` (``team``, ``task``, ``comment``, ``attachment``,
``invitation``, ``team_label``, ``owner_label``, ``item``, ``webhook``, ``delivery``, ``owner_pat``, ``missing``, ``<actor>_id``,
``<actor>_email``) and ``setup``
names a function in ``SETUPS`` applied to the world before the request.

The world (built in ``build_world``):

- ``owner`` owns team T and the team task; ``admin`` and ``member`` are T's
  admin and member; ``assignee`` is the team task's assignee but not in T;
  ``former`` was a member of T (and assignee of a T task) and was removed;
  ``outsider`` has nothing to do with T but has a pending invitation to T;
  ``site_admin`` is a site admin outside T; ``anonymous`` sends no token.
- a comment and an attachment on the task, both by ``member``; a checklist item on
  the task; a label of T and a personal label of ``owner``.
"""

from __future__ import annotations

import io
import itertools
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import current_app
from flask_jwt_extended import create_access_token

from tasktracker.attachments.models import Attachment
from tasktracker.auth.models import AuthSession, User
from tasktracker.comments.models import Comment
from tasktracker.core import storage
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tasks.models import ChecklistItem, Label, Task
from tasktracker.teams.models import Invitation, Team, TeamMember
from tasktracker.tokens.models import PersonalAccessToken
from tasktracker.webhooks.models import Webhook, WebhookDelivery
from tests.factories import password_hash, insert_rows

ACTORS = ("owner", "admin", "member", "assignee", "former", "outsider", "anonymous", "site_admin")
FILE = "<multipart upload of a small file>"  # body marker: send a multipart/form-data `file`


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    setup: str
    body: object
    expected: dict = field(hash=False)

    @property
    def id(self) -> str:
        return f"{self.method} {self.path} [{self.setup}]" + (" +body" if self.body not in (None, FILE) else "")


def row(method: str, path: str, setup: str, body, *statuses: int) -> Row:
    assert len(statuses) == len(ACTORS), f"{method} {path}: one status per actor {ACTORS}"
    return Row(method, path, setup, body, dict(zip(ACTORS, statuses)))


NEW_TEAM = {"name": "New team"}
RENAME = {"name": "Renamed"}
TO_ADMIN, TO_MEMBER = {"role": "admin"}, {"role": "member"}
INVITE, INVITE_ADMIN = {"email": "new@example.com"}, {"email": "new@example.com", "role": "admin"}
INVITE_MEMBER, INVITE_OUTSIDER = {"email": "{member_email}"}, {"email": "{outsider_email}"}
COMMENT, EDIT = {"body": "hi"}, {"body": "edited"}
NEW_TASK, RETITLE = {"title": "New task"}, {"title": "Renamed task"}
START, UNASSIGN = {"status": "in_progress"}, {"assignee_id": None}
NEW_LABEL, RELABEL = {"name": "New label"}, {"name": "Renamed label"}
NEW_ITEM, TICK = {"text": "New item"}, {"done": True}
NEW_HOOK, HOOK_OFF = {"url": "https://93.184.216.34/hook"}, {"active": False}  # a public IP literal: no DNS
NEW_PAT = {"name": "matrix", "scopes": ["read"]}
DIGEST_DAILY, RESET_OUTSIDER = {"digest": "daily"}, {"email": "{outsider_email}"}
BAD_RESET, BAD_TOKEN = {"token": "not-a-real-token", "password": "long-enough-1"}, {"token": "not-a-real-token"}

ROWS = [
    # method   path                                         setup       body            owner admin member assignee former outsider anon site_admin
    # ---- teams
    row("GET",    "/api/teams",                              "base",     None,           200, 200, 200, 200, 200, 200, 401, 200),
    row("POST",   "/api/teams",                              "base",     NEW_TEAM,       201, 201, 201, 201, 201, 201, 401, 201),
    row("GET",    "/api/teams/{team}",                       "base",     None,           200, 200, 200, 404, 404, 404, 401, 200),
    row("PATCH",  "/api/teams/{team}",                       "base",     RENAME,         200, 200, 403, 404, 404, 404, 401, 200),
    row("DELETE", "/api/teams/{team}",                       "base",     None,           204, 403, 403, 404, 404, 404, 401, 204),
    row("GET",    "/api/teams/{missing}",                    "base",     None,           404, 404, 404, 404, 404, 404, 401, 404),
    # ---- members
    row("GET",    "/api/teams/{team}/members",               "base",     None,           200, 200, 200, 404, 404, 404, 401, 200),
    row("PATCH",  "/api/teams/{team}/members/{member_id}",   "base",     TO_ADMIN,       200, 403, 403, 404, 404, 404, 401, 200),
    row("PATCH",  "/api/teams/{team}/members/{admin_id}",    "base",     TO_MEMBER,      200, 200, 403, 404, 404, 404, 401, 200),
    row("PATCH",  "/api/teams/{team}/members/{owner_id}",    "base",     TO_MEMBER,      409, 409, 403, 404, 404, 404, 401, 409),
    row("PATCH",  "/api/teams/{team}/members/{former_id}",   "base",     TO_MEMBER,      404, 404, 403, 404, 404, 404, 401, 404),
    row("DELETE", "/api/teams/{team}/members/{member_id}",   "base",     None,           204, 204, 204, 404, 404, 404, 401, 204),
    row("DELETE", "/api/teams/{team}/members/{admin_id}",    "base",     None,           204, 204, 403, 404, 404, 404, 401, 204),
    row("DELETE", "/api/teams/{team}/members/{owner_id}",    "base",     None,           409, 409, 403, 404, 404, 404, 401, 409),
    row("DELETE", "/api/teams/{team}/members/{former_id}",   "base",     None,           404, 404, 404, 404, 404, 404, 401, 404),
    # ---- invitations
    row("GET",    "/api/teams/{team}/invitations",           "base",     None,           200, 200, 403, 404, 404, 404, 401, 200),
    row("POST",   "/api/teams/{team}/invitations",           "base",     INVITE,         201, 201, 403, 404, 404, 404, 401, 201),
    row("POST",   "/api/teams/{team}/invitations",           "base",     INVITE_ADMIN,   201, 403, 403, 404, 404, 404, 401, 201),
    row("POST",   "/api/teams/{team}/invitations",           "base",     INVITE_MEMBER,  409, 409, 403, 404, 404, 404, 401, 409),
    row("POST",   "/api/teams/{team}/invitations",           "base",     INVITE_OUTSIDER, 409, 409, 403, 404, 404, 404, 401, 409),
    row("DELETE", "/api/teams/{team}/invitations/{invitation}", "base",  None,           204, 204, 403, 404, 404, 404, 401, 204),
    row("DELETE", "/api/teams/{team}/invitations/{invitation}", "expired", None,         204, 204, 403, 404, 404, 404, 401, 204),
    row("DELETE", "/api/teams/{team}/invitations/{missing}", "base",     None,           404, 404, 403, 404, 404, 404, 401, 404),
    row("GET",    "/api/invitations",                        "base",     None,           200, 200, 200, 200, 200, 200, 401, 200),
    row("POST",   "/api/invitations/{invitation}/accept",    "base",     None,           404, 404, 404, 404, 404, 200, 401, 404),
    row("POST",   "/api/invitations/{invitation}/decline",   "base",     None,           404, 404, 404, 404, 404, 200, 401, 404),
    row("POST",   "/api/invitations/{invitation}/accept",    "expired",  None,           404, 404, 404, 404, 404, 409, 401, 404),
    row("POST",   "/api/invitations/{invitation}/decline",   "expired",  None,           404, 404, 404, 404, 404, 409, 401, 404),
    # ---- comments
    # tasks (api-contract "Tasks": see = owner, assignee, team members, admins; edit = owner,
    # assignee, team owner/admins; delete/restore/assign = owner, team owner/admins)
    row("GET",    "/api/tasks",                              "base",     None,           200, 200, 200, 200, 200, 200, 401, 200),
    row("POST",   "/api/tasks",                              "base",     NEW_TASK,       201, 201, 201, 201, 201, 201, 401, 201),
    row("GET",    "/api/tasks/{task}",                       "base",     None,           200, 200, 200, 200, 404, 404, 401, 200),
    row("PATCH",  "/api/tasks/{task}",                       "base",     RETITLE,        200, 200, 403, 200, 404, 404, 401, 200),
    row("PATCH",  "/api/tasks/{task}/status",                "base",     START,          200, 200, 403, 200, 404, 404, 401, 200),
    row("PATCH",  "/api/tasks/{task}/assign",                "base",     UNASSIGN,       200, 200, 403, 403, 404, 404, 401, 200),
    row("DELETE", "/api/tasks/{task}",                       "base",     None,           204, 204, 403, 403, 404, 404, 401, 204),
    row("GET",    "/api/tasks/{task}/activity",              "base",     None,           200, 200, 200, 200, 404, 404, 401, 200),
    row("GET",    "/api/tasks/{task}",                       "personal", None,           200, 404, 404, 200, 404, 404, 401, 200),
    row("PATCH",  "/api/tasks/{task}",                       "personal", RETITLE,        200, 404, 404, 200, 404, 404, 401, 200),
    row("DELETE", "/api/tasks/{task}",                       "personal", None,           204, 404, 404, 403, 404, 404, 401, 204),
    row("GET",    "/api/tasks/{task}",                       "trashed",  None,           404, 404, 404, 404, 404, 404, 401, 404),
    row("PATCH",  "/api/tasks/{task}/restore",               "trashed",  None,           200, 200, 404, 404, 404, 404, 401, 200),
    row("DELETE", "/api/tasks/{task}?permanent=true",        "trashed",  None,           204, 204, 404, 404, 404, 404, 401, 204),
    # notifications and presence
    row("GET",    "/api/notifications",                      "base",     None,           200, 200, 200, 200, 200, 200, 401, 200),
    row("GET",    "/api/teams/{team}/presence",              "base",     None,           200, 200, 200, 404, 404, 404, 401, 200),

    row("GET",    "/api/tasks/{task}/comments",              "base",     None,           200, 200, 200, 200, 404, 404, 401, 200),
    row("POST",   "/api/tasks/{task}/comments",              "base",     COMMENT,        201, 201, 201, 201, 404, 404, 401, 201),
    row("PATCH",  "/api/comments/{comment}",                 "base",     EDIT,           403, 403, 200, 403, 404, 404, 401, 403),
    row("DELETE", "/api/comments/{comment}",                 "base",     None,           204, 403, 204, 403, 404, 404, 401, 204),
    row("GET",    "/api/tasks/{task}/comments",              "personal", None,           200, 404, 404, 200, 404, 404, 401, 200),
    row("POST",   "/api/tasks/{task}/comments",              "personal", COMMENT,        201, 404, 404, 201, 404, 404, 401, 201),
    row("PATCH",  "/api/comments/{comment}",                 "personal", EDIT,           403, 404, 404, 403, 404, 404, 401, 403),
    row("DELETE", "/api/comments/{comment}",                 "personal", None,           204, 404, 404, 403, 404, 404, 401, 204),
    row("GET",    "/api/tasks/{task}/comments",              "trashed",  None,           404, 404, 404, 404, 404, 404, 401, 404),
    row("POST",   "/api/tasks/{task}/comments",              "trashed",  COMMENT,        404, 404, 404, 404, 404, 404, 401, 404),
    row("PATCH",  "/api/comments/{comment}",                 "trashed",  EDIT,           404, 404, 404, 404, 404, 404, 401, 404),
    row("DELETE", "/api/comments/{comment}",                 "trashed",  None,           404, 404, 404, 404, 404, 404, 401, 404),
    # ---- attachments
    row("GET",    "/api/tasks/{task}/attachments",           "base",     None,           200, 200, 200, 200, 404, 404, 401, 200),
    row("POST",   "/api/tasks/{task}/attachments",           "base",     FILE,           201, 201, 201, 201, 404, 404, 401, 201),
    row("GET",    "/api/attachments/{attachment}",           "base",     None,           200, 200, 200, 200, 404, 404, 401, 200),
    row("DELETE", "/api/attachments/{attachment}",           "base",     None,           204, 403, 204, 403, 404, 404, 401, 204),
    row("GET",    "/api/tasks/{task}/attachments",           "personal", None,           200, 404, 404, 200, 404, 404, 401, 200),
    row("GET",    "/api/attachments/{attachment}",           "personal", None,           200, 404, 404, 200, 404, 404, 401, 200),
    row("DELETE", "/api/attachments/{attachment}",           "personal", None,           204, 404, 404, 403, 404, 404, 401, 204),
    row("GET",    "/api/tasks/{task}/attachments",           "trashed",  None,           404, 404, 404, 404, 404, 404, 401, 404),
    row("POST",   "/api/tasks/{task}/attachments",           "trashed",  FILE,           404, 404, 404, 404, 404, 404, 401, 404),
    row("GET",    "/api/attachments/{attachment}",           "trashed",  None,           404, 404, 404, 404, 404, 404, 401, 404),
    row("DELETE", "/api/attachments/{attachment}",           "trashed",  None,           404, 404, 404, 404, 404, 404, 401, 404),
    # ---- labels (v1.1: personal labels are their user's; team labels: members list and
    # create, owner/admins change)
    row("GET",    "/api/labels",                             "base",     None,           200, 200, 200, 200, 200, 200, 401, 200),
    row("POST",   "/api/labels",                             "base",     NEW_LABEL,      201, 201, 201, 201, 201, 201, 401, 201),
    row("GET",    "/api/teams/{team}/labels",                "base",     None,           200, 200, 200, 404, 404, 404, 401, 200),
    row("POST",   "/api/teams/{team}/labels",                "base",     NEW_LABEL,      201, 201, 201, 404, 404, 404, 401, 201),
    row("PATCH",  "/api/labels/{team_label}",                "base",     RELABEL,        200, 200, 403, 404, 404, 404, 401, 200),
    row("DELETE", "/api/labels/{team_label}",                "base",     None,           204, 204, 403, 404, 404, 404, 401, 204),
    row("PATCH",  "/api/labels/{owner_label}",               "base",     RELABEL,        200, 404, 404, 404, 404, 404, 401, 404),
    row("DELETE", "/api/labels/{owner_label}",               "base",     None,           204, 404, 404, 404, 404, 404, 401, 404),
    # ---- checklists (task editors) and watchers (anyone who sees the task)
    row("POST",   "/api/tasks/{task}/checklist",             "base",     NEW_ITEM,       201, 201, 403, 201, 404, 404, 401, 201),
    row("PATCH",  "/api/checklist-items/{item}",             "base",     TICK,           200, 200, 403, 200, 404, 404, 401, 200),
    row("DELETE", "/api/checklist-items/{item}",             "base",     None,           204, 204, 403, 204, 404, 404, 401, 204),
    row("POST",   "/api/tasks/{task}/checklist",             "personal", NEW_ITEM,       201, 404, 404, 201, 404, 404, 401, 201),
    row("PATCH",  "/api/checklist-items/{item}",             "trashed",  TICK,           404, 404, 404, 404, 404, 404, 401, 404),
    row("PUT",    "/api/tasks/{task}/watchers/me",           "base",     None,           204, 204, 204, 204, 404, 404, 401, 204),
    row("DELETE", "/api/tasks/{task}/watchers/me",           "base",     None,           204, 204, 204, 204, 404, 404, 401, 204),
    row("GET",    "/api/tasks/{task}/watchers",              "base",     None,           200, 200, 200, 200, 404, 404, 401, 200),
    row("PUT",    "/api/tasks/{task}/watchers/me",           "personal", None,           204, 404, 404, 204, 404, 404, 401, 204),
    # ---- webhooks (v1.1: the team's owner and admins, and site admins; everyone else 404)
    row("GET",    "/api/teams/{team}/webhooks",              "base",     None,           200, 200, 404, 404, 404, 404, 401, 200),
    row("POST",   "/api/teams/{team}/webhooks",              "base",     NEW_HOOK,       201, 201, 404, 404, 404, 404, 401, 201),
    row("GET",    "/api/teams/{missing}/webhooks",           "base",     None,           404, 404, 404, 404, 404, 404, 401, 404),
    row("GET",    "/api/webhooks/{webhook}",                 "base",     None,           200, 200, 404, 404, 404, 404, 401, 200),
    row("PATCH",  "/api/webhooks/{webhook}",                 "base",     HOOK_OFF,       200, 200, 404, 404, 404, 404, 401, 200),
    row("DELETE", "/api/webhooks/{webhook}",                 "base",     None,           204, 204, 404, 404, 404, 404, 401, 204),
    row("POST",   "/api/webhooks/{webhook}/rotate-secret",   "base",     None,           200, 200, 404, 404, 404, 404, 401, 200),
    row("POST",   "/api/webhooks/{webhook}/ping",            "base",     None,           202, 202, 404, 404, 404, 404, 401, 202),
    row("GET",    "/api/webhooks/{webhook}/deliveries",      "base",     None,           200, 200, 404, 404, 404, 404, 401, 200),
    row("POST",   "/api/webhook-deliveries/{delivery}/redeliver", "base", None,          202, 202, 404, 404, 404, 404, 401, 202),
    row("GET",    "/api/webhooks/{missing}",                 "base",     None,           404, 404, 404, 404, 404, 404, 401, 404),
    # ---- personal access tokens, calendar feed, CSV export (v1.1: the caller's own)
    row("GET",    "/api/auth/tokens",                        "base",     None,           200, 200, 200, 200, 200, 200, 401, 200),
    row("POST",   "/api/auth/tokens",                        "base",     NEW_PAT,        201, 201, 201, 201, 201, 201, 401, 201),
    row("DELETE", "/api/auth/tokens/{owner_pat}",            "base",     None,           204, 404, 404, 404, 404, 404, 401, 404),
    row("POST",   "/api/auth/calendar-feed",                 "base",     None,           201, 201, 201, 201, 201, 201, 401, 201),
    row("DELETE", "/api/auth/calendar-feed",                 "base",     None,           204, 204, 204, 204, 204, 204, 401, 204),
    row("GET",    "/api/tasks/export.csv",                   "base",     None,           200, 200, 200, 200, 200, 200, 401, 200),
    # ---- email (v1.1): own settings only; reset, verification links and unsubscribe need no login
    row("GET",    "/api/auth/profile/notification-settings", "base",     None,           200, 200, 200, 200, 200, 200, 401, 200),
    row("PATCH",  "/api/auth/profile/notification-settings", "base",     DIGEST_DAILY,   200, 200, 200, 200, 200, 200, 401, 200),
    row("POST",   "/api/auth/password-reset",                "base",     RESET_OUTSIDER, 202, 202, 202, 202, 202, 202, 202, 202),
    row("POST",   "/api/auth/password-reset/confirm",        "base",     BAD_RESET,      422, 422, 422, 422, 422, 422, 422, 422),
    row("POST",   "/api/auth/verify-email/request",          "base",     None,           202, 202, 202, 202, 202, 202, 401, 202),
    row("POST",   "/api/auth/verify-email",                  "base",     BAD_TOKEN,      422, 422, 422, 422, 422, 422, 422, 422),
    row("POST",   "/api/email/unsubscribe?token=forged.sig", "base",     None,           422, 422, 422, 422, 422, 422, 422, 422),
]


# --------------------------------------------------------------------------- the world

@dataclass
class World:
    ids: dict
    headers: dict  # actor -> Authorization header (a login session each, opened with the world)


_worlds = itertools.count(1)


def build_world() -> World:
    """A fresh world with its own users (unique names), so several can live in one database.

    Built from rows, as they are once the world's story has happened: ``former``'s
    removal from T (``teams.services.remove_member``) left no membership and their T
    task unassigned. Nothing here records an event, so the setup fans nothing out
    and writes no webhook deliveries; each request's own events do. One INSERT per
    table, two for the labels (team and personal rows name different columns); no
    unit of work: the world is built 260 times per database."""
    n = next(_worlds)
    names = [name for name in ACTORS if name != "anonymous"]
    user_ids = insert_rows(User, [{"username": f"{name}{n}", "email": f"{name}{n}@example.com",
                                    "password_hash": password_hash(),
                                    "role": "admin" if name == "site_admin" else "member"} for name in names])
    ids = {"missing": 987654}
    for name, user_id in zip(names, user_ids):
        ids[f"{name}_id"], ids[f"{name}_email"] = user_id, f"{name}{n}@example.com"
    [ids["team"]] = insert_rows(Team, [{"name": "Matrix", "owner_id": ids["owner_id"]}])
    insert_rows(TeamMember, [{"team_id": ids["team"], "user_id": ids[f"{name}_id"], "role": role}
                              for name, role in (("owner", "owner"), ("admin", "admin"), ("member", "member"))])
    ids["task"], _former_task = insert_rows(Task, [
        {"title": "Matrix task", "owner_id": ids["owner_id"], "assignee_id": ids["assignee_id"],
         "team_id": ids["team"]},
        {"title": "Former's task", "owner_id": ids["owner_id"], "assignee_id": None, "team_id": ids["team"]}])
    [ids["comment"]] = insert_rows(Comment, [{"task_id": ids["task"], "author_id": ids["member_id"],
                                               "body": "by member"}])
    stored_name, size, sha256 = storage.save_stream(io.BytesIO(b"matrix file"), 1024)
    [ids["attachment"]] = insert_rows(Attachment, [{
        "task_id": ids["task"], "uploaded_by_id": ids["member_id"], "filename": "m.txt", "stored_name": stored_name,
        "content_type": "text/plain", "size": size, "sha256": sha256}])
    [ids["invitation"]] = insert_rows(Invitation, [{
        "team_id": ids["team"], "email": ids["outsider_email"], "role": "member", "status": "pending",
        "invited_by_id": ids["owner_id"], "expires_at": utcnow() + timedelta(days=7)}])
    ids["team_label"], ids["owner_label"] = insert_rows(Label, [{"name": "matrix", "team_id": ids["team"]},
                                                                 {"name": "mine", "user_id": ids["owner_id"]}])
    [ids["item"]] = insert_rows(ChecklistItem, [{"task_id": ids["task"], "text": "check", "position": 0}])
    [ids["webhook"]] = insert_rows(Webhook, [{"team_id": ids["team"], "url": "https://93.184.216.34/hook",
                                               "events": ["*"], "secret": "s" * 43, "created_by_id": ids["owner_id"]}])
    [ids["owner_pat"]] = insert_rows(PersonalAccessToken, [{
        "user_id": ids["owner_id"], "name": "mine", "scopes": ["read"], "token_hash": f"{n:064x}",
        "token_prefix": "tt_pat_abcd", "expires_at": utcnow() + timedelta(days=1)}])
    [ids["delivery"]] = insert_rows(WebhookDelivery, [{"webhook_id": ids["webhook"], "event": "ping", "body": b"{}",
                                                        "status": "failed"}])
    # a login session each, as issue_tokens opens them (only the access token is used)
    sessions = {name: uuid.uuid4().hex for name in names}
    expires = utcnow() + current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]
    insert_rows(AuthSession, [{"id": sid, "user_id": ids[f"{name}_id"], "expires_at": expires}
                               for name, sid in sessions.items()])
    headers = {name: {"Authorization": "Bearer " + create_access_token(
        identity=str(ids[f"{name}_id"]), additional_claims={"sid": sid})} for name, sid in sessions.items()}
    headers["anonymous"] = {}
    db.session.commit()
    return World(ids, headers)


def _update(model, row_id: int, **values) -> None:
    db.session.execute(sa.update(model).where(model.id == row_id).values(**values))


SETUPS = {
    "base": lambda world: None,
    # the task is in its owner's trash (soft-deleted)
    "trashed": lambda world: _update(Task, world.ids["task"], deleted_at=utcnow()),
    # the task is not in a team (owner + assignee only)
    "personal": lambda world: _update(Task, world.ids["task"], team_id=None),
    # the outsider's invitation has expired
    "expired": lambda world: _update(Invitation, world.ids["invitation"],
                                     expires_at=utcnow() - timedelta(minutes=1)),
}


def prepare(entry: Row) -> World:
    world = build_world()
    SETUPS[entry.setup](world)
    db.session.commit()
    return world


def send(client, method: str, url: str, body, headers: dict, ids: dict):
    if body == FILE:
        return client.open(url, method=method, headers=headers,
                           data={"file": (io.BytesIO(b"uploaded in the matrix"), "new.txt")})
    if body is None:
        return client.open(url, method=method, headers=headers)
    body = {k: v.format(**ids) if isinstance(v, str) else v for k, v in body.items()}
    return client.open(url, method=method, headers=headers, json=body)


def test_rows_are_unique_and_complete():
    keys = [(r.method, r.path, r.setup, repr(r.body)) for r in ROWS]
    assert len(keys) == len(set(keys))
    assert all(r.setup in SETUPS and set(r.expected) == set(ACTORS) for r in ROWS)


@pytest.fixture
def no_webhook_sends(app):
    """Webhook deliveries the rows queue (ping, redeliver) are not sent (no network)."""
    key = "tt_webhook_delivery_consumer"
    saved = app.extensions[key]
    app.extensions[key] = lambda ids: None
    yield
    app.extensions[key] = saved


@pytest.mark.parametrize("entry", ROWS, ids=[r.id for r in ROWS])
def test_permission_matrix(client, entry: Row, no_webhook_sends):
    """One row, every actor. An actor gets a fresh world whenever the previous
    request may have changed it (a successful non-GET); refused requests must
    not change anything. All mismatches of the row are reported together."""
    mismatches = []
    world, dirty = None, True
    for actor in ACTORS:
        if dirty:
            world = prepare(entry)
        headers = world.headers[actor]
        response = send(client, entry.method, entry.path.format(**world.ids), entry.body, headers, world.ids)
        response.get_data()  # a streamed body (the CSV export) is read to its end here
        dirty = entry.method != "GET" and response.status_code < 400
        expected = entry.expected[actor]
        if response.status_code != expected:
            mismatches.append(f"{actor}: expected {expected}, got {response.status_code} "
                              f"{response.get_data(as_text=True)[:200]}")
        elif expected >= 400 and not (response.is_json
                                      and set(response.json.get("error", {})) == {"code", "message", "details"}):
            mismatches.append(f"{actor}: {expected} without the contract's error shape")
    assert not mismatches, f"{entry.id}:\n" + "\n".join(mismatches)


@pytest.mark.parametrize("url", ["/api/tasks?per_page=100", "/api/tasks/search?q=a&per_page=100",
                                 "/api/tasks?deleted=only&per_page=100"])
def test_caches_never_serve_another_callers_list(app, client, url):
    """The hidden-state caches (hot cache of sessions and data version, list bodies in
    process and in the store) answer each actor with exactly what the uncached path
    answers them: requests interleave actors, repeat, and replay another actor's ETag."""
    world = build_world()
    db.session.commit()
    actors = [a for a in ACTORS if a != "anonymous"]
    headers = {actor: world.headers[actor] for actor in actors}

    def titles(response) -> list:
        assert response.status_code == 200, response.get_data(as_text=True)[:200]
        return sorted(t["title"] for t in response.json["items"])

    app.config["LIST_CACHE_TTL_SECONDS"] = 0
    app.extensions.pop("tasktracker_list_cache", None)
    expected = {actor: titles(client.get(url, headers=headers[actor])) for actor in actors}
    app.config["LIST_CACHE_TTL_SECONDS"] = 60
    app.extensions.pop("tasktracker_list_cache", None)
    try:
        etags = {}
        for round_ in range(3):
            for actor in (actors if round_ % 2 == 0 else reversed(actors)):
                r = client.get(url, headers=headers[actor])
                assert titles(r) == expected[actor], (actor, round_)
                etags[actor] = r.headers.get("ETag")
        for actor, other in itertools.permutations(actors, 2):
            if expected[actor] != expected[other] and etags[other]:
                r = client.get(url, headers={**headers[actor], "If-None-Match": etags[other]})
                assert r.status_code == 200 and titles(r) == expected[actor], (actor, other)
    finally:
        app.config["LIST_CACHE_TTL_SECONDS"] = 0
        app.extensions.pop("tasktracker_list_cache", None)
