"""The ``flask`` CLI groups: ``users``, ``reminders`` and ``seed`` (api-contract.md, "Operations").

* ``flask users create-admin --username U --email E`` - the password is prompted
  twice (hidden), or read from stdin (``--password-stdin``) or ``TT_ADMIN_PASSWORD``.
  There is no default password.
* ``flask users list [--role R]`` - a table of users.
* ``flask users set-role USERNAME admin|member`` - never demotes the last active admin.
* ``flask users deactivate USERNAME`` - also revokes all of the user's sessions; never
  the last active admin.
* ``flask users activate USERNAME``
* ``flask reminders dispatch`` - one pass of the background scans now.
* ``flask seed --users N --tasks M`` - demo data with a progress bar.

Every command exits 0 on success and 1 (``click.ClickException``) with a message
on stderr on failure (duplicate user, unknown user, invalid input, the last active
site admin demoted or deactivated).
"""

from __future__ import annotations

import os
import random
import secrets
import sys
from datetime import timedelta

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import AppGroup
from marshmallow import ValidationError

from tasktracker.auth.models import User
from tasktracker.auth.schemas import RegisterSchema
from tasktracker.auth.services import admin_update_user, create_user, hash_password, users_query
from tasktracker.comments.models import Comment
from tasktracker.core.errors import Conflict
from tasktracker.core.types import utcnow
from tasktracker.events.services import record_event
from tasktracker.extensions import db
from tasktracker.jobs.scans import run_all_scans
from tasktracker.tasks.models import Reminder, Task
from tasktracker.teams.models import Team, TeamMember

users_cli = AppGroup("users", help="Manage user accounts.")
reminders_cli = AppGroup("reminders", help="Deadline reminders and background scans.")


def register_commands(app: Flask) -> None:
    """Attach the CLI groups to ``app``."""
    app.cli.add_command(users_cli)
    app.cli.add_command(reminders_cli)
    app.cli.add_command(seed_command)


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def _validation_message(err: ValidationError) -> str:
    messages = err.messages if isinstance(err.messages, dict) else {"_": err.messages}
    return "; ".join(f"{field}: {' '.join(map(str, msgs if isinstance(msgs, list) else [msgs]))}"
                     for field, msgs in messages.items())


def _get_user_by_username(username: str):
    user = db.session.scalar(sa.select(User).where(sa.func.lower(User.username) == username.lower()))
    if user is None:
        raise _fail(f"No user named {username!r}.")
    return user


def _read_admin_password(password_stdin: bool) -> str:
    """The admin password from stdin, ``TT_ADMIN_PASSWORD`` or a hidden double prompt."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get("TT_ADMIN_PASSWORD"):
        password = os.environ["TT_ADMIN_PASSWORD"]
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise _fail("A password is required.")
    return password


@users_cli.command("create-admin")
@click.option("--username", required=True, help="3-32 characters: letters, digits, '_', '.', '-'.")
@click.option("--email", required=True)
@click.option("--full-name", default="", help="Display name.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of stdin (for automation).")
def create_admin(username: str, email: str, full_name: str, password_stdin: bool) -> None:
    """Create a site admin. The password is prompted twice unless --password-stdin or
    TT_ADMIN_PASSWORD is given; there is no default password."""
    password = _read_admin_password(password_stdin)
    try:
        data = RegisterSchema().load({"username": username, "email": email, "password": password,
                                      "full_name": full_name})
    except ValidationError as err:
        raise _fail(f"Invalid input: {_validation_message(err)}") from None
    try:
        user = create_user(**data, role="admin")
    except Conflict as err:
        raise _fail(err.message) from None
    click.echo(f"Created admin {user.username} (id {user.id}, {user.email}).")


@users_cli.command("list")
@click.option("--role", type=click.Choice(["admin", "member"]), help="Only users with this role.")
def list_users(role: str | None) -> None:
    """Print the users as a table."""
    users = db.session.scalars(users_query(role=role)).all()
    rows = [("ID", "USERNAME", "EMAIL", "ROLE", "ACTIVE", "CREATED")]
    rows += [(str(u.id), u.username, u.email, u.role, "yes" if u.active else "no",
              u.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")) for u in users]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    click.echo(f"{len(users)} user(s)")


def _admin_update(username: str, **changes):
    """:func:`tasktracker.auth.services.admin_update_user` for the CLI: a refusal
    (409, e.g. the last active site admin) exits 1 with its message."""
    try:
        return admin_update_user(_get_user_by_username(username), **changes)
    except Conflict as err:
        raise _fail(err.message) from None


@users_cli.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice(["admin", "member"]))
def set_role(username: str, role: str) -> None:
    """Make USERNAME an admin or a member. The last active admin stays admin (exit 1)."""
    user = _admin_update(username, role=role)
    click.echo(f"{user.username} is now {user.role}.")


@users_cli.command("deactivate")
@click.argument("username")
def deactivate(username: str) -> None:
    """Deactivate USERNAME: they cannot log in and all their tokens stop working.
    The last active admin cannot be deactivated (exit 1)."""
    user = _admin_update(username, active=False)
    click.echo(f"{user.username} is deactivated; their sessions are revoked.")


@users_cli.command("activate")
@click.argument("username")
def activate(username: str) -> None:
    """Re-activate USERNAME (they log in again; old tokens stay revoked)."""
    user = admin_update_user(_get_user_by_username(username), active=True)
    click.echo(f"{user.username} is active.")


@reminders_cli.command("dispatch")
def dispatch_reminders() -> None:
    """Run one pass of the scans now (due reminders, overdue tasks, outbox, expired
    idempotency keys) and print the counts."""
    counts = run_all_scans(current_app._get_current_object())
    if isinstance(counts, dict):
        for name, value in counts.items():
            click.echo(f"{name}: {value}")
    else:
        click.echo(f"done: {counts}")


# --------------------------------------------------------------------------- seed

_WORDS = ("report", "invoice", "design", "review", "backup", "release", "budget", "survey",
          "meeting", "roadmap", "migration", "onboarding", "audit", "newsletter", "website",
          "database", "deploy", "contract", "slides", "feedback", "hiring", "security", "docs",
          "dashboard", "sprint", "customer", "support", "pricing", "launch", "analytics")
_VERBS = ("Write", "Prepare", "Fix", "Update", "Plan", "Check", "Send", "Review", "Draft",
          "Finish", "Clean up", "Test", "Schedule", "Organise", "Refactor")
_FIRST = ("Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances",
          "Edsger", "Radia", "Tim", "Hedy", "John", "Katherine", "Guido", "Anita", "Donald")
_LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie",
         "Allen", "Dijkstra", "Perlman", "Berners-Lee", "Lamarr", "McCarthy", "Johnson", "Knuth")
_COMMENTS = ("Looks good to me.", "I'll take a look tomorrow.", "Blocked on the review.",
             "Can we move the deadline?", "Done on my side.", "Please add more details.",
             "Started working on this.", "Any update?", "Waiting for feedback.")
_STATUSES = ("todo", "todo", "todo", "in_progress", "in_progress", "done")
_PRIORITIES = ("low", "medium", "medium", "medium", "high", "urgent")
BATCH = 5000


def _insert_returning_ids(model, rows: list[dict]) -> list[int]:
    """Bulk INSERT ``rows`` (executemany with RETURNING, in parameter order) -> new ids."""
    if not rows:
        return []
    table = model.__table__
    stmt = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(db.session.execute(stmt, rows).scalars())


def _insert(model, rows: list[dict]) -> None:
    if rows:
        db.session.execute(sa.insert(model.__table__), rows)


def _next_demo_index() -> int:
    names = db.session.scalars(sa.select(User.username).where(User.username.like("demo%"))).all()
    numbers = [int(n[4:]) for n in names if n[4:].isdigit()]
    return max(numbers, default=0) + 1


@click.command("seed")
@click.option("--users", "n_users", type=click.IntRange(1, 100_000), default=10, show_default=True,
              help="Demo users to create (demoN / demoN@example.com).")
@click.option("--tasks", "n_tasks", type=click.IntRange(0, 10_000_000), default=100, show_default=True,
              help="Tasks to create.")
@click.option("--teams", "n_teams", type=click.IntRange(0, 100_000), default=None,
              help="Teams to create [default: one per 5 users].")
@click.option("--seed", "random_seed", type=int, default=None, help="Random seed (reproducible data).")
def seed_command(n_users: int, n_tasks: int, n_teams: int | None, random_seed: int | None) -> None:
    """Fill the database with demo data: users, teams with members, tasks (varied status,
    priority, due dates, assignees, reminders) and comments.

    All demo users share one generated password, printed once. Rows are bulk-inserted in
    batches, so 100k tasks take seconds, not minutes.
    """
    rng = random.Random(random_seed)
    now = utcnow().replace(microsecond=0)
    password = secrets.token_urlsafe(12)
    password_hash = hash_password(password)
    n_teams = max(1, n_users // 5) if n_teams is None else n_teams

    # Users -------------------------------------------------------------------
    start = _next_demo_index()
    user_rows = []
    for i in range(start, start + n_users):
        created = now - timedelta(days=rng.randint(30, 120), minutes=rng.randint(0, 1440))
        user_rows.append({"username": f"demo{i}", "email": f"demo{i}@example.com",
                          "password_hash": password_hash,
                          "full_name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                          "role": "member", "timezone": "UTC", "active": True,
                          "created_at": created, "updated_at": created})
    user_ids: list[int] = []
    for i in range(0, len(user_rows), BATCH):
        user_ids += _insert_returning_ids(User, user_rows[i:i + BATCH])

    # Teams and memberships ----------------------------------------------------
    team_rows, team_owner = [], []
    for t in range(n_teams):
        owner = rng.choice(user_ids)
        created = now - timedelta(days=rng.randint(20, 30))
        team_rows.append({"name": f"{rng.choice(_WORDS).title()} team {start + t}",
                          "description": "Demo team", "owner_id": owner,
                          "created_at": created, "updated_at": created})
        team_owner.append(owner)
    team_ids: list[int] = []
    for i in range(0, len(team_rows), BATCH):
        team_ids += _insert_returning_ids(Team, team_rows[i:i + BATCH])
    members: dict[int, list[int]] = {}
    member_rows = []
    for team_id, owner in zip(team_ids, team_owner):
        others = rng.sample(user_ids, k=min(len(user_ids), rng.randint(2, 8)))
        team_members = [owner] + [u for u in others if u != owner]
        members[team_id] = team_members
        for idx, uid in enumerate(team_members):
            role = "owner" if idx == 0 else ("admin" if idx == 1 and rng.random() < 0.5 else "member")
            member_rows.append({"team_id": team_id, "user_id": uid, "role": role,
                                "joined_at": now - timedelta(days=rng.randint(1, 19))})
    for i in range(0, len(member_rows), BATCH):
        _insert(TeamMember, member_rows[i:i + BATCH])
    record_event("data.seeded", actor_id=None, payload={"users": len(user_ids), "teams": len(team_ids)})
    db.session.commit()
    click.echo(f"Created {len(user_ids)} users (demo{start}..demo{start + n_users - 1}), "
               f"{len(team_ids)} teams, {len(member_rows)} memberships.")

    # Tasks, reminders, comments ------------------------------------------------
    counts = {"tasks": 0, "reminders": 0, "comments": 0}
    with click.progressbar(length=n_tasks, label="Seeding tasks", file=sys.stderr) as bar:
        done_so_far = 0
        while done_so_far < n_tasks:
            size = min(BATCH, n_tasks - done_so_far)
            task_rows, extras = [], []
            for _ in range(size):
                team_id = rng.choice(team_ids) if team_ids and rng.random() < 0.6 else None
                if team_id is not None:
                    pool = members[team_id]
                    owner = rng.choice(pool)
                    assignee = rng.choice(pool) if rng.random() < 0.8 else None
                else:
                    owner = rng.choice(user_ids)
                    assignee = owner if rng.random() < 0.5 else None
                status = rng.choice(_STATUSES)
                created = now - timedelta(days=rng.randint(0, 60), minutes=rng.randint(0, 1440))
                updated = min(now, created + timedelta(hours=rng.randint(0, 72)))
                roll = rng.random()
                due = None
                if roll < 0.75:
                    due = now + timedelta(days=rng.randint(-20, 45), hours=rng.randint(0, 23))
                    due = due.replace(minute=0, second=0)
                overdue_notified = due if due and due < now and status != "done" else None
                task_rows.append({
                    "title": f"{rng.choice(_VERBS)} {rng.choice(_WORDS)} {rng.choice(_WORDS)}",
                    "description": f"Demo task about the {rng.choice(_WORDS)}.",
                    "status": status, "priority": rng.choice(_PRIORITIES), "due_at": due,
                    "owner_id": owner, "assignee_id": assignee, "team_id": team_id,
                    "created_at": created, "updated_at": updated,
                    "completed_at": updated if status == "done" else None,
                    "deleted_at": None, "overdue_notified_at": overdue_notified, "version": 1,
                })
                extras.append((due, created, [owner] + ([assignee] if assignee else [])
                               + (members[team_id] if team_id else [])))
            task_ids = _insert_returning_ids(Task, task_rows)

            reminder_rows, comment_rows = [], []
            for task_id, (due, created, people) in zip(task_ids, extras):
                if due is not None and rng.random() < 0.4:
                    remind_at = due - timedelta(hours=rng.choice((1, 24, 48)))
                    # Reminders already in the past count as sent: seeding is history,
                    # not a flood of notifications on the next scan.
                    reminder_rows.append({"task_id": task_id, "remind_at": remind_at,
                                          "sent_at": remind_at if remind_at <= now else None,
                                          "created_at": created})
                for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
                    at = min(now, created + timedelta(hours=rng.randint(1, 96)))
                    comment_rows.append({"task_id": task_id, "author_id": rng.choice(people),
                                         "body": rng.choice(_COMMENTS),
                                         "created_at": at, "updated_at": at})
            _insert(Reminder, reminder_rows)
            _insert(Comment, comment_rows)
            # bulk rows write no per-row events; one event moves the data version
            # (the task-list cache keys on the newest event)
            record_event("data.seeded", actor_id=None, payload={"tasks": len(task_ids)})
            db.session.commit()
            counts["tasks"] += len(task_ids)
            counts["reminders"] += len(reminder_rows)
            counts["comments"] += len(comment_rows)
            done_so_far += size
            bar.update(size)

    click.echo(f"Created {counts['tasks']} tasks, {counts['reminders']} reminders, "
               f"{counts['comments']} comments.")
    click.echo(f"Demo users log in with password: {password}  (shown once; not stored anywhere else)")
