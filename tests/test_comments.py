"""Comments: /api/tasks/<id>/comments and /api/comments/<id>."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from tasktracker.auth.models import User
from tasktracker.comments.models import Comment
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tests.factories import TaskFactory
from tests.helpers import events_of, make_world


def post_comment(client, session, task_id: int, body: str = "Hello"):
    return client.post(f"/api/tasks/{task_id}/comments", json={"body": body}, headers=session.headers)


def trash(task: Task) -> None:
    db.session.get(Task, task.id).deleted_at = utcnow()
    db.session.commit()


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def error_code(response) -> str:
    return response.json["error"]["code"]


# --------------------------------------------------------------------------- create

def test_create_comment_and_event(client, auth):
    w = make_world(client, auth)
    response = post_comment(client, w.member, w.task.id, "  First!\nline two  ")
    assert response.status_code == 201
    body = response.json
    assert set(body) == {"id", "task_id", "author", "body", "mentions", "created_at", "updated_at"}
    assert body["task_id"] == w.task.id
    assert body["author"] == {"id": w.member.id, "username": "member", "full_name": ""}
    assert body["body"] == "  First!\nline two  "  # kept as sent
    assert body["created_at"].endswith("Z")
    assert response.headers["Location"] == f"/api/comments/{body['id']}"
    [event] = events_of("comment.created")
    assert event.task_id == w.task.id and event.team_id == w.task.team_id and event.actor_id == w.member.id
    assert event.payload["comment"] == body
    assert event.payload["task"]["id"] == w.task.id and event.payload["task"]["title"] == w.task.title


def test_who_may_comment(client, auth):
    w = make_world(client, auth)
    for session in (w.owner, w.assignee, w.member, w.root):
        assert post_comment(client, session, w.task.id).status_code == 201
    hidden = post_comment(client, w.outsider, w.task.id)
    assert hidden.status_code == 404 and error_code(hidden) == "task_not_found"
    assert client.post(f"/api/tasks/{w.task.id}/comments", json={"body": "x"}).status_code == 401
    assert post_comment(client, w.owner, 999999).status_code == 404
    assert post_comment(client, w.owner, 99999999999).status_code == 404
    # an assignee outside the team contributes to a personal task
    personal = TaskFactory(owner=db.session.get(User, w.owner.id), assignee=db.session.get(User, w.outsider.id))
    assert post_comment(client, w.outsider, personal.id).status_code == 201
    assert post_comment(client, w.member, personal.id).status_code == 404
    assert len(events_of("comment.created")) == 5


def test_comment_validation(client, auth):
    w = make_world(client, auth)
    url = f"/api/tasks/{w.task.id}/comments"
    for body in ({}, {"body": ""}, {"body": "  \n\t "}, {"body": "x" * 10001}, {"body": 3}, {"body": None},
                 {"body": "ok", "author_id": 1}):
        response = client.post(url, json=body, headers=w.owner.headers)
        assert response.status_code == 422, body
        assert response.json["error"]["details"], body
    assert "body" in client.post(url, json={}, headers=w.owner.headers).json["error"]["details"]
    assert client.post(url, json={"body": "x" * 10000}, headers=w.owner.headers).status_code == 201
    assert client.post(url, data="body=x", headers=w.owner.headers).status_code == 415
    assert client.post(url, data="{", content_type="application/json", headers=w.owner.headers).status_code == 400
    assert client.post(url, json=["x"], headers=w.owner.headers).status_code == 400
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Comment)) == 1


# --------------------------------------------------------------------------- list

def test_list_comments_oldest_first_paginated(client, auth):
    w = make_world(client, auth)
    ids = [post_comment(client, s, w.task.id, f"c{i}").json["id"]
           for i, s in enumerate((w.owner, w.member, w.assignee, w.owner, w.member))]
    url = f"/api/tasks/{w.task.id}/comments"
    page1 = client.get(url + "?per_page=2", headers=w.assignee.headers)
    assert page1.status_code == 200
    assert page1.json["total"] == 5 and page1.json["pages"] == 3
    assert [c["id"] for c in page1.json["items"]] == ids[:2]
    page3 = client.get(url + "?per_page=2&page=3", headers=w.member.headers).json
    assert [c["body"] for c in page3["items"]] == ["c4"]
    assert client.get(url + "?page=9", headers=w.member.headers).json["items"] == []
    assert client.get(url, headers=w.root.headers).json["total"] == 5
    assert client.get(url, headers=w.outsider.headers).status_code == 404
    assert client.get(url).status_code == 401
    assert client.get(url + "?per_page=0", headers=w.owner.headers).status_code == 422
    # other tasks' comments are not mixed in
    other = TaskFactory(owner=db.session.get(User, w.owner.id))
    post_comment(client, w.owner, other.id)
    assert client.get(url, headers=w.owner.headers).json["total"] == 5


# --------------------------------------------------------------------------- edit

def test_only_author_edits(client, auth):
    w = make_world(client, auth)
    comment = post_comment(client, w.member, w.task.id, "draft").json
    url = f"/api/comments/{comment['id']}"
    for session in (w.owner, w.assignee, w.root):
        response = client.patch(url, json={"body": "hijack"}, headers=session.headers)
        assert response.status_code == 403 and error_code(response) == "not_author"
    hidden = client.patch(url, json={"body": "hijack"}, headers=w.outsider.headers)
    assert hidden.status_code == 404 and error_code(hidden) == "comment_not_found"
    assert client.patch(url, json={"body": "x"}).status_code == 401

    response = client.patch(url, json={"body": "final"}, headers=w.member.headers)
    assert response.status_code == 200
    assert response.json["body"] == "final" and response.json["id"] == comment["id"]
    assert parse_time(response.json["updated_at"]) >= parse_time(comment["updated_at"])
    [event] = events_of("comment.updated")
    assert event.task_id == w.task.id and event.actor_id == w.member.id
    assert event.payload == {"comment": response.json, "changes": {"body": ["draft", "final"]},
                             "new_mention_ids": []}
    # unchanged body: 200, no event
    assert client.patch(url, json={"body": "final"}, headers=w.member.headers).status_code == 200
    assert len(events_of("comment.updated")) == 1


def test_edit_validation_and_missing(client, auth):
    w = make_world(client, auth)
    comment_id = post_comment(client, w.member, w.task.id).json["id"]
    url = f"/api/comments/{comment_id}"
    assert client.patch(url, json={"body": ""}, headers=w.member.headers).status_code == 422
    assert client.patch(url, json={}, headers=w.member.headers).status_code == 422
    assert client.patch(url, json={"body": "x" * 10001}, headers=w.member.headers).status_code == 422
    assert client.patch(url, data="x", headers=w.member.headers).status_code == 415
    assert client.patch("/api/comments/999999", json={"body": "x"}, headers=w.member.headers).status_code == 404
    assert client.patch("/api/comments/99999999999", json={"body": "x"},
                        headers=w.member.headers).status_code == 404
    assert db.session.get(Comment, comment_id).body == "Hello"


# --------------------------------------------------------------------------- delete

def test_delete_by_author_task_owner_or_site_admin(client, auth):
    w = make_world(client, auth)
    by_member = [post_comment(client, w.member, w.task.id).json["id"] for _ in range(3)]
    for session in (w.assignee,):
        response = client.delete(f"/api/comments/{by_member[0]}", headers=session.headers)
        assert response.status_code == 403
    other_member_comment = post_comment(client, w.assignee, w.task.id).json["id"]
    assert client.delete(f"/api/comments/{other_member_comment}", headers=w.member.headers).status_code == 403
    assert client.delete(f"/api/comments/{by_member[0]}", headers=w.outsider.headers).status_code == 404
    assert client.delete(f"/api/comments/{by_member[0]}").status_code == 401

    assert client.delete(f"/api/comments/{by_member[0]}", headers=w.member.headers).status_code == 204
    assert client.delete(f"/api/comments/{by_member[1]}", headers=w.owner.headers).status_code == 204
    assert client.delete(f"/api/comments/{by_member[2]}", headers=w.root.headers).status_code == 204
    assert client.delete(f"/api/comments/{by_member[0]}", headers=w.member.headers).status_code == 404
    remaining = client.get(f"/api/tasks/{w.task.id}/comments", headers=w.owner.headers).json
    assert [c["id"] for c in remaining["items"]] == [other_member_comment]
    deleted = events_of("comment.deleted")
    assert [e.payload for e in deleted] == [{"comment_id": i} for i in by_member]
    assert [e.actor_id for e in deleted] == [w.member.id, w.owner.id, w.root.id]
    assert all(e.task_id == w.task.id and e.team_id == w.task.team_id for e in deleted)


def test_comments_of_trashed_task_are_gone(client, auth):
    w = make_world(client, auth)
    comment_id = post_comment(client, w.member, w.task.id).json["id"]
    trash(w.task)
    for session in (w.owner, w.member, w.root):
        assert client.get(f"/api/tasks/{w.task.id}/comments", headers=session.headers).status_code == 404
        assert post_comment(client, session, w.task.id).status_code == 404
        assert client.patch(f"/api/comments/{comment_id}", json={"body": "x"},
                            headers=session.headers).status_code == 404
        assert client.delete(f"/api/comments/{comment_id}", headers=session.headers).status_code == 404
    assert db.session.get(Comment, comment_id) is not None


def test_comment_author_gone_shows_null_author(client, auth):
    w = make_world(client, auth)
    stranger = TaskFactory(owner=db.session.get(User, w.owner.id))
    comment_id = post_comment(client, w.owner, stranger.id).json["id"]
    assert client.get(f"/api/tasks/{stranger.id}/comments", headers=w.owner.headers).json["items"][0]["author"]
    comment = db.session.get(Comment, comment_id)
    comment.author_id = None
    db.session.commit()
    items = client.get(f"/api/tasks/{stranger.id}/comments", headers=w.owner.headers).json["items"]
    assert items[0]["author"] is None and items[0]["id"] == comment_id
