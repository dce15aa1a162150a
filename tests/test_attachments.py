"""Attachments: upload, list, download, delete; size limits and file-name safety."""

from __future__ import annotations

import hashlib
import io
import os
import re
from urllib.parse import unquote

import pytest
import sqlalchemy as sa

from tasktracker.attachments.models import Attachment
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tests.helpers import World, events_of, make_world, raised, run_together

LIMIT = 1024


@pytest.fixture
def w(client, auth) -> World:
    return make_world(client, auth)


@pytest.fixture
def small_limit(app, monkeypatch):
    """MAX_UPLOAD_BYTES = 1024 for this test (monkeypatch restores it)."""
    monkeypatch.setitem(app.config, "MAX_UPLOAD_BYTES", LIMIT)
    return LIMIT


def stored_files(app) -> set[str]:
    directory = app.config["UPLOAD_DIR"]
    return set(os.listdir(directory)) if os.path.isdir(directory) else set()


def upload(client, session, task_id, content: bytes = b"hello", filename: str = "hello.txt", **kwargs):
    return client.post(f"/api/tasks/{task_id}/attachments",
                       data={"file": (io.BytesIO(content), filename)}, headers=session.headers, **kwargs)


def multipart(part_headers: str, content: bytes, boundary: str = "tTbOuNdArY") -> tuple[bytes, str]:
    """A raw multipart body with one part (UTF-8 headers), and its Content-Type."""
    body = (f"--{boundary}\r\n{part_headers}\r\n\r\n".encode() + content
            + f"\r\n--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


def upload_raw(client, session, task_id, part_headers: str, content: bytes = b"abc", **kwargs):
    body, content_type = multipart(part_headers, content)
    return client.post(f"/api/tasks/{task_id}/attachments", data=body, content_type=content_type,
                       headers=session.headers, **kwargs)


def count_attachments() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Attachment))


def error_code(response) -> str:
    return response.json["error"]["code"]


# --------------------------------------------------------------------------- upload

def test_upload_stores_random_name_and_records(client, app, w):
    content = b"The quick brown fox\n" * 10
    before = stored_files(app)
    response = upload(client, w.member, w.task.id, content, "notes.txt")
    assert response.status_code == 201
    body = response.json
    assert set(body) == {"id", "task_id", "filename", "content_type", "size", "sha256", "uploaded_by",
                         "created_at"}
    assert body["task_id"] == w.task.id and body["filename"] == "notes.txt"
    assert body["content_type"] == "text/plain"
    assert body["size"] == len(content)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["uploaded_by"] == {"id": w.member.id, "username": "member", "full_name": ""}
    assert body["created_at"].endswith("Z")
    assert response.headers["Location"] == f"/api/attachments/{body['id']}"

    [new_file] = stored_files(app) - before
    assert re.fullmatch(r"[0-9a-f]{32}", new_file) and "notes" not in new_file
    assert db.session.get(Attachment, body["id"]).stored_name == new_file
    with open(os.path.join(app.config["UPLOAD_DIR"], new_file), "rb") as fh:
        assert fh.read() == content
    [event] = events_of("attachment.added")
    assert event.task_id == w.task.id and event.team_id == w.task.team_id and event.actor_id == w.member.id
    assert event.payload == {"attachment": body}


def test_who_may_upload(client, w):
    for session in (w.owner, w.assignee, w.member, w.root):
        assert upload(client, session, w.task.id).status_code == 201
    hidden = upload(client, w.outsider, w.task.id)
    assert hidden.status_code == 404 and error_code(hidden) == "task_not_found"
    assert client.post(f"/api/tasks/{w.task.id}/attachments",
                       data={"file": (io.BytesIO(b"x"), "x.txt")}).status_code == 401
    assert upload(client, w.owner, 999999).status_code == 404
    assert upload(client, w.owner, 99999999999).status_code == 404
    assert count_attachments() == 4


def test_content_type_from_part_then_name_then_default(client, w):
    cd = 'Content-Disposition: form-data; name="file"; filename="{}"'
    declared = upload_raw(client, w.owner, w.task.id, cd.format("x.bin") + "\r\nContent-Type: Image/PNG; x=1")
    assert declared.json["content_type"] == "image/png"
    guessed = upload_raw(client, w.owner, w.task.id, cd.format("photo.jpg"))
    assert guessed.json["content_type"] == "image/jpeg"
    bogus = upload_raw(client, w.owner, w.task.id, cd.format("report.pdf") + "\r\nContent-Type: not a type")
    assert bogus.json["content_type"] == "application/pdf"
    unknown = upload_raw(client, w.owner, w.task.id, cd.format("data.zzzunknown"))
    assert unknown.json["content_type"] == "application/octet-stream"


def test_empty_file_is_accepted(client, app, w):
    response = upload(client, w.owner, w.task.id, b"", "empty.txt")
    assert response.status_code == 201
    assert response.json["size"] == 0
    assert response.json["sha256"] == hashlib.sha256(b"").hexdigest()
    download = client.get(f"/api/attachments/{response.json['id']}", headers=w.owner.headers)
    assert download.status_code == 200 and download.data == b""


def test_exactly_the_limit_is_accepted(client, w, small_limit):
    content = os.urandom(small_limit)
    response = upload(client, w.owner, w.task.id, content, "exact.bin")
    assert response.status_code == 201
    assert response.json["size"] == small_limit
    assert response.json["sha256"] == hashlib.sha256(content).hexdigest()


def test_one_byte_over_is_413_and_leaves_no_file(client, app, w, small_limit):
    before = stored_files(app)
    response = upload(client, w.owner, w.task.id, b"x" * (small_limit + 1), "over.bin")
    assert response.status_code == 413 and error_code(response) == "payload_too_large"
    assert stored_files(app) == before
    assert count_attachments() == 0 and events_of("attachment.added") == []


def test_declared_length_over_limit_is_rejected_before_reading(client, app, w, small_limit):
    before = stored_files(app)
    response = upload(client, w.owner, w.task.id, b"x" * (small_limit + 70 * 1024), "big.bin")
    assert response.status_code == 413
    assert stored_files(app) == before and count_attachments() == 0


@pytest.mark.parametrize("size", [LIMIT + 1, 5000, 300_000])
def test_chunked_body_without_content_length_is_cut_off(client, app, w, small_limit, size):
    before = stored_files(app)
    body, content_type = multipart('Content-Disposition: form-data; name="file"; filename="c.bin"', b"x" * size)
    response = client.post(f"/api/tasks/{w.task.id}/attachments", input_stream=io.BytesIO(body),
                           content_type=content_type,
                           headers={**w.owner.headers, "Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413 and "error" in response.json
    assert stored_files(app) == before and count_attachments() == 0


def test_chunked_body_within_limit_is_stored(client, w, small_limit):
    body, content_type = multipart('Content-Disposition: form-data; name="file"; filename="c.bin"', b"y" * 1000)
    response = client.post(f"/api/tasks/{w.task.id}/attachments", input_stream=io.BytesIO(body),
                           content_type=content_type,
                           headers={**w.owner.headers, "Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 201 and response.json["size"] == 1000


def test_missing_field_and_wrong_bodies(client, w):
    url = f"/api/tasks/{w.task.id}/attachments"
    missing = client.post(url, data={"other": (io.BytesIO(b"x"), "x.txt")}, headers=w.owner.headers)
    assert missing.status_code == 422 and "file" in missing.json["error"]["details"]
    not_a_file = client.post(url, data={"file": "just text", "other": (io.BytesIO(b"x"), "x.txt")},
                             headers=w.owner.headers)
    assert not_a_file.status_code == 422 and "file" in not_a_file.json["error"]["details"]
    no_name = upload_raw(client, w.owner, w.task.id, 'Content-Disposition: form-data; name="file"; filename=""')
    assert no_name.status_code == 422 and "file" in no_name.json["error"]["details"]
    as_json = client.post(url, json={"file": "aGVsbG8="}, headers=w.owner.headers)
    assert as_json.status_code == 415 and error_code(as_json) == "unsupported_media_type"
    assert client.post(url, data="file=x", content_type="application/x-www-form-urlencoded",
                       headers=w.owner.headers).status_code == 415
    assert client.post(url, data=b"raw", content_type="application/octet-stream",
                       headers=w.owner.headers).status_code == 415
    assert client.post(url, headers=w.owner.headers).status_code == 415
    assert count_attachments() == 0


def test_unicode_and_path_like_names(client, app, w):
    cases = {
        "../../etc/passwd": "passwd",
        "..\\..\\windows\\boot.ini": "boot.ini",
        "/etc/shadow": "shadow",
        "报告 2026.pdf": "2026.pdf",
        "résumé.txt": "resume.txt",
        "日本語": "attachment",
    }
    before = stored_files(app)
    for name, fallback in cases.items():
        response = upload(client, w.owner, w.task.id, b"data", name)
        assert response.status_code == 201, name
        assert response.json["filename"] == name  # display metadata, kept as sent
        stored = db.session.get(Attachment, response.json["id"]).stored_name
        assert re.fullmatch(r"[0-9a-f]{32}", stored)
        download = client.get(f"/api/attachments/{response.json['id']}", headers=w.owner.headers)
        assert download.status_code == 200 and download.data == b"data"
        header = download.headers["Content-Disposition"]
        match = re.fullmatch(r"attachment; filename=\"([A-Za-z0-9_.-]+)\"; filename\*=UTF-8''([!#$&+\-.^_`|~%A-Za-z0-9]+)",
                             header)
        assert match, header
        ascii_name, encoded = match.groups()
        assert "/" not in ascii_name and "\\" not in ascii_name and not ascii_name.startswith(".")
        if fallback:
            assert ascii_name == fallback, (name, header)
        decoded = unquote(encoded)
        assert "/" not in decoded and "\\" not in decoded
        assert decoded == re.split(r"[/\\]", name)[-1]
    # quotes and separators in the name (sent with proper multipart escaping)
    response = upload_raw(client, w.owner, w.task.id,
                          'Content-Disposition: form-data; name="file"; filename="x\\"y;z.txt"')
    assert response.status_code == 201 and response.json["filename"] == 'x"y;z.txt'
    header = client.get(f"/api/attachments/{response.json['id']}", headers=w.owner.headers).headers
    assert header["Content-Disposition"] == "attachment; filename=\"xyz.txt\"; filename*=UTF-8''x%22y%3Bz.txt"
    assert len(stored_files(app) - before) == len(cases) + 1
    # nothing was written outside the upload directory
    assert not os.path.exists(os.path.join(app.config["UPLOAD_DIR"], "..", "passwd"))


def test_control_characters_and_long_names_are_cleaned(client, w):
    response = upload(client, w.owner, w.task.id, b"x", "bad\x00na\x1bme.txt")
    assert response.status_code == 201 and response.json["filename"] == "badname.txt"
    long_name = "n" * 400 + ".txt"
    response = upload(client, w.owner, w.task.id, b"x", long_name)
    assert response.status_code == 201
    assert len(response.json["filename"]) == 255 and response.json["filename"].endswith(".txt")


def test_concurrent_uploads_to_one_task(app, w):
    contents = [f"file {i} ".encode() * (i + 1) for i in range(8)]
    before = stored_files(app)
    url = f"/api/tasks/{w.task.id}/attachments"
    headers = [s.headers for s in (w.owner, w.assignee, w.member)]

    def upload_one(i):
        def call(client):
            response = client.post(url, data={"file": (io.BytesIO(contents[i]), "same-name.txt")},
                                   headers=headers[i % 3])
            return i, response.status_code, response.get_json()
        return call

    results = run_together(app, *[upload_one(i) for i in range(len(contents))])
    errors = raised(results)
    assert not errors
    assert sorted(status for _, status, _ in results) == [201] * len(contents), results
    for i, _, body in results:
        assert body["sha256"] == hashlib.sha256(contents[i]).hexdigest()
    db.session.expire_all()
    rows = db.session.scalars(sa.select(Attachment).where(Attachment.task_id == w.task.id)).all()
    assert len(rows) == len(contents)
    assert len({r.stored_name for r in rows}) == len(contents)
    assert {r.stored_name for r in rows} == stored_files(app) - before
    assert len(events_of("attachment.added")) == len(contents)


# --------------------------------------------------------------------------- list / download

def test_list_attachments(client, w):
    ids = [upload(client, s, w.task.id, b"x", f"f{i}.txt").json["id"]
           for i, s in enumerate((w.owner, w.member, w.assignee))]
    url = f"/api/tasks/{w.task.id}/attachments"
    page = client.get(url + "?per_page=2", headers=w.member.headers)
    assert page.status_code == 200
    assert page.json["total"] == 3 and page.json["pages"] == 2
    assert [a["id"] for a in page.json["items"]] == ids[:2]
    assert client.get(url + "?page=2&per_page=2", headers=w.root.headers).json["items"][0]["id"] == ids[2]
    assert client.get(url, headers=w.outsider.headers).status_code == 404
    assert client.get(url).status_code == 401
    assert client.get(url + "?per_page=500", headers=w.owner.headers).status_code == 422


def test_download(client, w):
    content = bytes(range(256)) * 4
    cd = 'Content-Disposition: form-data; name="file"; filename="page.html"\r\nContent-Type: text/html'
    created = upload_raw(client, w.member, w.task.id, cd, content).json
    url = f"/api/attachments/{created['id']}"
    for session in (w.owner, w.assignee, w.member, w.root):
        response = client.get(url, headers=session.headers)
        assert response.status_code == 200
        assert response.data == content
        assert response.headers["Content-Type"] == "text/html"
        assert response.headers["Content-Disposition"].startswith('attachment; filename="page.html"')
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Length"] == str(len(content))
    hidden = client.get(url, headers=w.outsider.headers)
    assert hidden.status_code == 404 and error_code(hidden) == "attachment_not_found"
    assert client.get(url).status_code == 401
    assert client.get("/api/attachments/999999", headers=w.owner.headers).status_code == 404
    assert client.get("/api/attachments/99999999999", headers=w.owner.headers).status_code == 404
    # conditional and range requests
    etag = client.get(url, headers=w.owner.headers).headers["ETag"]
    assert client.get(url, headers={**w.owner.headers, "If-None-Match": etag}).status_code == 304
    partial = client.get(url, headers={**w.owner.headers, "Range": "bytes=0-9"})
    assert partial.status_code == 206 and partial.data == content[:10]


def test_download_with_missing_file_is_404(client, app, w):
    created = upload(client, w.owner, w.task.id).json
    os.remove(os.path.join(app.config["UPLOAD_DIR"], db.session.get(Attachment, created["id"]).stored_name))
    response = client.get(f"/api/attachments/{created['id']}", headers=w.owner.headers)
    assert response.status_code == 404 and error_code(response) == "attachment_content_missing"


def test_trashed_task_hides_attachments(client, w):
    created = upload(client, w.member, w.task.id).json
    db.session.get(Task, w.task.id).deleted_at = utcnow()
    db.session.commit()
    for session in (w.owner, w.member, w.root):
        assert client.get(f"/api/tasks/{w.task.id}/attachments", headers=session.headers).status_code == 404
        assert upload(client, session, w.task.id).status_code == 404
        assert client.get(f"/api/attachments/{created['id']}", headers=session.headers).status_code == 404
        assert client.delete(f"/api/attachments/{created['id']}", headers=session.headers).status_code == 404


# --------------------------------------------------------------------------- delete

def test_delete_by_uploader_task_owner_or_site_admin(client, app, w):
    ids = [upload(client, w.member, w.task.id, f"{i}".encode(), f"{i}.txt").json["id"] for i in range(3)]
    names = [db.session.get(Attachment, i).stored_name for i in ids]
    by_assignee = upload(client, w.assignee, w.task.id).json["id"]

    forbidden = client.delete(f"/api/attachments/{ids[0]}", headers=w.assignee.headers)
    assert forbidden.status_code == 403 and "error" in forbidden.json
    assert client.delete(f"/api/attachments/{by_assignee}", headers=w.member.headers).status_code == 403
    assert client.delete(f"/api/attachments/{ids[0]}", headers=w.outsider.headers).status_code == 404
    assert client.delete(f"/api/attachments/{ids[0]}").status_code == 401
    assert set(names) <= stored_files(app)

    assert client.delete(f"/api/attachments/{ids[0]}", headers=w.member.headers).status_code == 204
    assert client.delete(f"/api/attachments/{ids[1]}", headers=w.owner.headers).status_code == 204
    assert client.delete(f"/api/attachments/{ids[2]}", headers=w.root.headers).status_code == 204
    assert not set(names) & stored_files(app)
    assert client.get(f"/api/attachments/{ids[0]}", headers=w.member.headers).status_code == 404
    assert client.delete(f"/api/attachments/{ids[0]}", headers=w.member.headers).status_code == 404
    remaining = client.get(f"/api/tasks/{w.task.id}/attachments", headers=w.owner.headers).json["items"]
    assert [a["id"] for a in remaining] == [by_assignee]
    deleted = events_of("attachment.deleted")
    assert [e.payload for e in deleted] == [{"attachment_id": i, "filename": f"{n}.txt"} for n, i in enumerate(ids)]
    assert [e.actor_id for e in deleted] == [w.member.id, w.owner.id, w.root.id]
