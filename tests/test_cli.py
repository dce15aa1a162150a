"""The ``flask`` CLI (api-contract.md, "Operations"): users, reminders, seed."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa

from tasktracker.auth.models import AuthSession, User
from tasktracker.comments.models import Comment
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.notifications.models import Notification
from tasktracker.tasks.models import Reminder, Task
from tasktracker.teams.models import Team, TeamMember
from tests.factories import TaskFactory, UserFactory

ADMIN_PW = "admin-pass-123"


def _users(**where) -> list[User]:
    db.session.expire_all()
    stmt = sa.select(User).order_by(User.id)
    for key, value in where.items():
        stmt = stmt.where(getattr(User, key) == value)
    return list(db.session.scalars(stmt))


def _create_admin(runner, username="root", email="root@example.com", **kwargs):
    return runner.invoke(args=["users", "create-admin", "--username", username, "--email", email,
                               "--password-stdin"], input=f"{ADMIN_PW}\n", **kwargs)


# ----------------------------------------------------------------- create-admin

def test_create_admin_from_stdin_can_log_in(runner, client):
    result = _create_admin(runner)
    assert result.exit_code == 0, result.output
    assert "Created admin root" in result.output
    [user] = _users()
    assert (user.username, user.email, user.role, user.active) == ("root", "root@example.com", "admin", True)
    assert ADMIN_PW not in user.password_hash
    r = client.post("/api/auth/login", json={"email": "root@example.com", "password": ADMIN_PW})
    assert r.status_code == 200 and r.json["user"]["role"] == "admin"
    # And the admin can use admin-only endpoints.
    r = client.get("/api/users", headers={"Authorization": f"Bearer {r.json['access_token']}"})
    assert r.status_code == 200 and r.json["total"] == 1


def test_create_admin_prompts_twice_hidden(runner, client):
    result = runner.invoke(args=["users", "create-admin", "--username", "boss", "--email", "b@example.com"],
                           input=f"{ADMIN_PW}\n{ADMIN_PW}\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("Password") == 1 and "Repeat for confirmation" in result.output
    assert ADMIN_PW not in result.output  # hidden input is not echoed
    assert _users()[0].role == "admin"
    assert client.post("/api/auth/login", json={"username": "boss", "password": ADMIN_PW}).status_code == 200


def test_create_admin_prompt_mismatch_creates_nobody(runner):
    result = runner.invoke(args=["users", "create-admin", "--username", "boss", "--email", "b@example.com"],
                           input=f"{ADMIN_PW}\nsomething-else\n")
    assert result.exit_code != 0
    assert "do not match" in result.output
    assert _users() == []


def test_create_admin_from_env(runner):
    result = runner.invoke(args=["users", "create-admin", "--username", "envadmin", "--email", "e@example.com"],
                           env={"TT_ADMIN_PASSWORD": ADMIN_PW})
    assert result.exit_code == 0, result.output
    assert "Password" not in result.output  # no prompt
    assert _users(username="envadmin")[0].role == "admin"


def test_create_admin_without_password_fails(runner):
    result = runner.invoke(args=["users", "create-admin", "--username", "root", "--email", "r@example.com",
                                 "--password-stdin"], input="")
    assert result.exit_code == 1
    assert "password is required" in result.output
    assert _users() == []


def test_create_admin_short_password_and_bad_email_fail(runner):
    result = runner.invoke(args=["users", "create-admin", "--username", "root", "--email", "r@example.com",
                                 "--password-stdin"], input="short\n")
    assert result.exit_code == 1 and "password" in result.output
    result = runner.invoke(args=["users", "create-admin", "--username", "root", "--email", "not-an-email",
                                 "--password-stdin"], input=f"{ADMIN_PW}\n")
    assert result.exit_code == 1 and "email" in result.output
    assert _users() == []


def test_create_admin_duplicate_fails(runner):
    assert _create_admin(runner).exit_code == 0
    result = _create_admin(runner, email="other@example.com")
    assert result.exit_code == 1
    assert "username is already taken" in result.output
    result = _create_admin(runner, username="other", email="ROOT@example.com")
    assert result.exit_code == 1
    assert "email is already taken" in result.output
    assert [u.username for u in _users()] == ["root"]


# ------------------------------------------------------------------------- list

def test_list_users_table_and_role_filter(runner):
    UserFactory(username="alice", role="admin")
    UserFactory(username="bob", active=False)
    result = runner.invoke(args=["users", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "USERNAME", "EMAIL", "ROLE", "ACTIVE", "CREATED"]
    alice = next(line for line in lines if "alice" in line).split()
    bob = next(line for line in lines if "bob" in line).split()
    assert alice[1:5] == ["alice", "alice@example.com", "admin", "yes"]
    assert bob[1:5] == ["bob", "bob@example.com", "member", "no"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", alice[5])
    assert lines[-1] == "2 user(s)"

    result = runner.invoke(args=["users", "list", "--role", "admin"])
    assert result.exit_code == 0
    assert "alice" in result.output and "bob" not in result.output
    assert result.output.splitlines()[-1] == "1 user(s)"


# --------------------------------------------------------------------- set-role

def test_set_role(runner, client, auth):
    UserFactory(username="root", role="admin")  # carol is never the last admin
    s = auth.user("carol")
    assert client.get("/api/users", headers=s.headers).status_code == 403
    result = runner.invoke(args=["users", "set-role", "carol", "admin"])
    assert result.exit_code == 0, result.output
    assert _users(username="carol")[0].role == "admin"
    assert client.get("/api/users", headers=s.headers).status_code == 200
    result = runner.invoke(args=["users", "set-role", "CAROL", "member"])  # case-insensitive name
    assert result.exit_code == 0
    assert _users(username="carol")[0].role == "member"


def test_set_role_unknown_user_and_bad_role(runner):
    UserFactory(username="dave")
    result = runner.invoke(args=["users", "set-role", "nobody", "admin"])
    assert result.exit_code == 1 and "No user named 'nobody'" in result.output
    result = runner.invoke(args=["users", "set-role", "dave", "superuser"])
    assert result.exit_code == 2 and "superuser" in result.output
    assert _users(username="dave")[0].role == "member"


def test_last_active_admin_is_neither_demoted_nor_deactivated(runner):
    UserFactory(username="root", role="admin")
    UserFactory(username="dormant", role="admin", active=False)
    for args in (["users", "set-role", "root", "member"], ["users", "deactivate", "ROOT"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 1, result.output
        assert "root is the last active site admin" in result.output, result.output
        assert "Traceback" not in result.output
    [root] = _users(username="root")
    assert (root.role, root.active) == ("admin", True)
    # with another active admin it works
    UserFactory(username="second", role="admin")
    assert runner.invoke(args=["users", "set-role", "root", "member"]).exit_code == 0
    result = runner.invoke(args=["users", "deactivate", "second"])
    assert result.exit_code == 1 and "last active site admin" in result.output
    assert runner.invoke(args=["users", "set-role", "dormant", "member"]).exit_code == 0


# ------------------------------------------------------------------- deactivate

def test_deactivate_revokes_sessions(runner, client, auth):
    s = auth.user("erin")
    assert client.get("/api/auth/profile", headers=s.headers).status_code == 200
    result = runner.invoke(args=["users", "deactivate", "erin"])
    assert result.exit_code == 0, result.output
    [user] = _users(username="erin")
    assert user.active is False
    assert all(sess.revoked_at is not None
               for sess in db.session.scalars(sa.select(AuthSession).where(AuthSession.user_id == user.id)))
    assert client.get("/api/auth/profile", headers=s.headers).status_code == 401
    r = client.post("/api/auth/refresh", headers={"Authorization": f"Bearer {s.refresh_token}"})
    assert r.status_code == 401
    r = client.post("/api/auth/login", json={"username": "erin", "password": "correct-horse-9"})
    assert r.status_code == 401

    result = runner.invoke(args=["users", "activate", "erin"])
    assert result.exit_code == 0
    assert _users(username="erin")[0].active is True
    r = client.post("/api/auth/login", json={"username": "erin", "password": "correct-horse-9"})
    assert r.status_code == 200
    assert client.get("/api/auth/profile", headers=s.headers).status_code == 401  # old token stays dead


def test_deactivate_unknown_user(runner):
    UserFactory(username="frank")
    result = runner.invoke(args=["users", "deactivate", "ghost"])
    assert result.exit_code == 1 and "No user named 'ghost'" in result.output
    assert _users(username="frank")[0].active is True


# -------------------------------------------------------------------- reminders

def test_reminders_dispatch_sends_due_reminder_once(runner):
    owner = UserFactory(username="owner")
    assignee = UserFactory(username="assignee")
    task = TaskFactory(owner=owner, assignee=assignee, due_at=utcnow() + timedelta(hours=2))
    db.session.add(Reminder(task_id=task.id, remind_at=utcnow() - timedelta(minutes=1)))
    future = Reminder(task_id=task.id, remind_at=utcnow() + timedelta(hours=1))
    db.session.add(future)
    db.session.commit()

    result = runner.invoke(args=["reminders", "dispatch"])
    assert result.exit_code == 0, result.output
    assert re.search(r"\d", result.output), result.output  # the counts are printed
    db.session.expire_all()
    sent = db.session.scalars(sa.select(Reminder).where(Reminder.sent_at.is_not(None))).all()
    assert len(sent) == 1 and sent[0].id != future.id
    reminded = sorted(n.user_id for n in db.session.scalars(
        sa.select(Notification).where(Notification.type == "deadline_reminder")))
    assert reminded == sorted([owner.id, assignee.id])

    # A second pass sends nothing new.
    assert runner.invoke(args=["reminders", "dispatch"]).exit_code == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Notification).where(
        Notification.type == "deadline_reminder")) == 2


# ------------------------------------------------------------------------- seed

def _count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_seed_creates_consistent_demo_data(runner, client):
    result = runner.invoke(args=["seed", "--users", "6", "--tasks", "120", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert _count(User) == 6 and _count(Team) == 1 and _count(Task) == 120
    assert _count(TeamMember) >= 2 and _count(Comment) > 0 and _count(Reminder) > 0
    assert "Created 120 tasks" in result.output

    tasks = db.session.scalars(sa.select(Task)).all()
    assert {t.status for t in tasks} == {"todo", "in_progress", "done"}
    assert len({t.priority for t in tasks}) == 4
    assert any(t.due_at is None for t in tasks) and any(t.due_at and t.due_at < utcnow() for t in tasks)
    assert any(t.assignee_id for t in tasks) and any(t.team_id for t in tasks)
    assert all((t.completed_at is not None) == (t.status == "done") for t in tasks)
    members = {(m.team_id, m.user_id) for m in db.session.scalars(sa.select(TeamMember))}
    for t in tasks:
        if t.team_id is not None:
            assert (t.team_id, t.owner_id) in members
            assert t.assignee_id is None or (t.team_id, t.assignee_id) in members
    owners = db.session.scalars(sa.select(TeamMember).where(TeamMember.role == "owner")).all()
    assert len(owners) == 1 and owners[0].user_id == db.session.scalars(sa.select(Team)).one().owner_id

    # The generated password is printed once and works for every demo user.
    password = re.search(r"password: (\S+)", result.output).group(1)
    r = client.post("/api/auth/login", json={"username": "demo3", "password": password})
    assert r.status_code == 200 and r.json["user"]["role"] == "member"

    # Seeding again adds new users instead of colliding with the first ones.
    result = runner.invoke(args=["seed", "--users", "2", "--tasks", "0"])
    assert result.exit_code == 0, result.output
    assert {u.username for u in _users()} >= {"demo1", "demo6", "demo7", "demo8"}
    assert _count(User) == 8


def test_seed_rejects_bad_counts(runner):
    result = runner.invoke(args=["seed", "--users", "0", "--tasks", "5"])
    assert result.exit_code == 2 and "--users" in result.output
    result = runner.invoke(args=["seed", "--users", "2", "--tasks", "-1"])
    assert result.exit_code == 2
    assert _count(User) == 0 and _count(Task) == 0
