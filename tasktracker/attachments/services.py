"""Attachment rules (api-contract.md, "Comments and attachments").

- list / download: anyone who sees the task (otherwise 404, also for a trashed task);
- upload: owner, assignee, members of the task's team (``can_contribute``; 403);
- delete: the uploader, the task owner, or a site admin (moderation); others 403.

Size: at most ``MAX_UPLOAD_BYTES`` (config, default 10 MiB) bytes of file
content; an empty file (0 bytes) is accepted. The bytes live in ``UPLOAD_DIR``
under a random name (:mod:`tasktracker.core.storage`); the client's
file name is display metadata only. Every change records
``attachment.added/deleted`` in its transaction.
"""

from __future__ import annotations

import mimetypes
import os
import re
import unicodedata
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import sqlalchemy as sa
from flask import current_app
from werkzeug.utils import secure_filename

from tasktracker.attachments.models import Attachment
from tasktracker.attachments.schemas import attachment_schema
from tasktracker.auth.models import User
from tasktracker.core import storage
from tasktracker.core.errors import AttachmentNotFound, Forbidden, NotFound
from tasktracker.events.services import record_event
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tasktracker.tasks.permissions import can_contribute, get_visible_task, get_visible_task_item

#: Room for the multipart framing (boundaries, part headers) on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
FILENAME_MAX = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def max_upload_bytes() -> int:
    """The current ``MAX_UPLOAD_BYTES`` (bytes of file content)."""
    return int(current_app.config["MAX_UPLOAD_BYTES"])


def max_request_bytes() -> int:
    """The largest multipart body an upload may have: the file plus framing."""
    return max_upload_bytes() + MULTIPART_OVERHEAD


def check_declared_length(content_length: int | None) -> None:
    """413 before reading anything when the declared body length is already too big
    (a chunked body without ``Content-Length`` is checked while it is streamed)."""
    if content_length is not None and content_length > max_request_bytes():
        raise storage.UploadTooLarge(f"The upload exceeds the limit of {max_upload_bytes()} bytes.",
                                     details={"max_bytes": max_upload_bytes()})


def clean_filename(filename: str | None) -> str:
    """The client's file name as kept for display: NFC, no control characters,
    at most 255 characters (extension kept), ``"file"`` if nothing is left.
    Path parts are kept as text (they are never used as a path)."""
    name = (filename or "").encode("utf-8", "replace").decode("utf-8")
    name = _CONTROL.sub("", unicodedata.normalize("NFC", name)).strip()
    if not name:
        return "file"
    if len(name) > FILENAME_MAX:
        stem, ext = os.path.splitext(name)
        ext = ext[:16]
        name = stem[: FILENAME_MAX - len(ext)] + ext
    return name


def resolve_content_type(declared: str | None, filename: str) -> str:
    """The part's declared media type (lower-cased, without parameters) if well
    formed, else a guess from the file name, else ``application/octet-stream``."""
    declared = (declared or "").split(";", 1)[0].strip().lower()
    if _MIME.match(declared):
        return declared
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed if guessed and _MIME.match(guessed.lower()) else DEFAULT_CONTENT_TYPE


def content_disposition(filename: str) -> str:
    """``Content-Disposition: attachment`` for a download, safe for any stored name.

    The last path segment of the name is used. ``filename=`` is an ASCII
    fallback made by werkzeug's ``secure_filename`` (``attachment`` plus the
    extension if nothing is left); ``filename*=`` carries the full UTF-8 name
    (RFC 5987 / RFC 6266).
    """
    name = re.split(r"[/\\]", filename)[-1].strip() or "attachment"
    stem, ext = os.path.splitext(name)
    fallback = secure_filename(name)
    if not secure_filename(stem):
        safe_ext = secure_filename(ext.lstrip("."))
        fallback = f"attachment.{safe_ext}" if safe_ext else "attachment"
    quoted = quote(name, safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"


def attachments_query(user: User, task_id: int) -> sa.Select:
    """Attachments of a visible task, oldest first (404 if the task is not visible)."""
    task = get_visible_task(user, task_id, collections=False)
    return (sa.select(Attachment).where(Attachment.task_id == task.id)
            .order_by(Attachment.created_at, Attachment.id))


def upload_target(user: User, task_id: int) -> Task:
    """The task an upload goes to: 404 if not visible, 403 if the caller may not
    contribute. Call before reading the body."""
    task = get_visible_task(user, task_id, collections=False)
    if not can_contribute(user, task):
        raise Forbidden("You may not add attachments to this task.")
    return task


def add_attachment(user: User, task: Task, stream: BinaryIO, filename: str | None,
                   content_type: str | None) -> Attachment:
    """Store the uploaded bytes and record the attachment.

    Streams to disk in chunks (413 :class:`storage.UploadTooLarge` past
    ``MAX_UPLOAD_BYTES``, the partial file removed). Records
    ``attachment.added {attachment}``; if the database step fails, the stored
    file is removed again.
    """
    stored_name, size, sha256 = storage.save_stream(stream, max_upload_bytes())
    try:
        name = clean_filename(filename)
        attachment = Attachment(task_id=task.id, uploaded_by_id=user.id, uploaded_by=user, filename=name,
                                stored_name=stored_name, content_type=resolve_content_type(content_type, name),
                                size=size, sha256=sha256)
        db.session.add(attachment)
        db.session.flush()
        record_event("attachment.added", actor_id=user.id, task_id=task.id, team_id=task.team_id,
                     payload={"attachment": attachment_schema.dump(attachment)})
        db.session.commit()
    except BaseException:
        db.session.rollback()
        storage.delete_files([stored_name])
        raise
    return attachment


def _visible_attachment(user: User, attachment_id: int) -> tuple[Attachment, Task]:
    """The attachment and its task if the caller sees the task (not trashed), else 404."""
    return get_visible_task_item(user, Attachment, attachment_id, AttachmentNotFound)


def download(user: User, attachment_id: int) -> tuple[Attachment, Path]:
    """The attachment and the path of its bytes (404 if not visible or the file is gone)."""
    attachment, _ = _visible_attachment(user, attachment_id)
    path = storage.path_of(attachment.stored_name)
    if not path.is_file():
        current_app.logger.error("attachment %s: stored file %s is missing", attachment.id,
                                 attachment.stored_name)
        raise NotFound("The attachment's content is missing.", code="attachment_content_missing")
    return attachment, path


def delete_attachment(user: User, attachment_id: int) -> None:
    """Delete an attachment (uploader, task owner, site admin; others who see it: 403).

    Records ``attachment.deleted {attachment_id, filename}``; the stored file
    is removed after the commit.
    """
    attachment, task = _visible_attachment(user, attachment_id)
    if not (user.id in (attachment.uploaded_by_id, task.owner_id) or user.is_admin):
        raise Forbidden("Only the uploader or the task owner may delete an attachment.")
    stored_name = attachment.stored_name
    record_event("attachment.deleted", actor_id=user.id, task_id=task.id, team_id=task.team_id,
                 payload={"attachment_id": attachment.id, "filename": attachment.filename})
    db.session.delete(attachment)
    db.session.commit()
    storage.delete_files([stored_name])
