"""File storage of attachments: one file per attachment in ``UPLOAD_DIR``.

Stored names are random (``secrets.token_hex(16)``, 32 hex characters) and
never derived from the client's file name, so no client input reaches a path.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from pathlib import Path
from typing import BinaryIO, Iterable

from flask import current_app

from tasktracker.core.errors import ApiError

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
_STORED_NAME = re.compile(r"^[0-9a-f]{32}$")


class UploadTooLarge(ApiError):
    """413: the upload is larger than ``MAX_UPLOAD_BYTES``."""

    status, code, message = 413, "payload_too_large", "The upload is too large."


def upload_dir() -> Path:
    """``UPLOAD_DIR`` of the current app, created if missing."""
    path = Path(current_app.config["UPLOAD_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def path_of(stored_name: str) -> Path:
    """The absolute path of a stored file. Raises ``ValueError`` for a name that
    :func:`save_stream` cannot have produced (defence in depth)."""
    if not _STORED_NAME.match(stored_name or ""):
        raise ValueError("not a stored attachment name")
    return upload_dir() / stored_name


def save_stream(stream: BinaryIO, limit: int) -> tuple[str, int, str]:
    """Copy ``stream`` to a new random file in chunks, counting bytes.

    Returns ``(stored_name, size_in_bytes, sha256_hex)``. As soon as more than
    ``limit`` bytes have been read, the partial file is deleted and
    :class:`UploadTooLarge` (413) is raised; so is any other error (the file is
    removed, the error propagates).
    """
    stored_name = secrets.token_hex(16)
    path = upload_dir() / stored_name
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "xb") as out:
            while True:
                chunk = stream.read(CHUNK_SIZE)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(f"The upload exceeds the limit of {limit} bytes.",
                                         details={"max_bytes": limit})
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return stored_name, size, digest.hexdigest()


def delete_files(stored_names: Iterable[str]) -> None:
    """Remove stored files; a missing file is not an error, other failures are logged."""
    for name in stored_names:
        try:
            path_of(name).unlink(missing_ok=True)
        except (OSError, ValueError):
            log.warning("could not delete stored attachment %r", name, exc_info=True)
