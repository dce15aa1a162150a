"""REST resources of attachments: ``/api/tasks/<id>/attachments`` and ``/api/attachments/<id>``."""

from __future__ import annotations

from flask import Blueprint, request, send_file
from flask_jwt_extended import current_user
from flask_restful import Resource

from tasktracker.attachments import services
from tasktracker.attachments.schemas import attachment_schema, attachments_schema
from tasktracker.auth.access import auth_required
from tasktracker.core.api import Api, no_content, page_response
from tasktracker.core.errors import ApiError, Unprocessable

bp = Blueprint("attachments", __name__, url_prefix="/api")
api = Api(bp)
# schema instances, built once (loading or dumping does not change a schema)


class TaskAttachmentList(Resource):
    method_decorators = [auth_required]

    def get(self, task_id: int):
        """Attachments of a task, oldest first, paginated (anyone who sees the task).
        ---
        operationId: attachments_list
        query: PageArgsSchema
        responses:
          200: {description: A page of attachments, schema: AttachmentPageSchema}
        """
        return page_response(attachments_schema.dump, services.attachments_query, current_user, task_id)

    def post(self, task_id: int):
        """Upload a file to a task (owner, assignee, members of the task's team, site admins).
        ---
        operationId: attachments_upload
        description: >-
          A `multipart/form-data` body with one file part named `file`. At most
          MAX_UPLOAD_BYTES (default 10 MiB) of content, else 413 (checked against
          Content-Length first, then while streaming). An empty file (0 bytes) is
          accepted. The media type is the part's, else guessed from the file name,
          else application/octet-stream. The file name is kept for display only;
          the stored name is random.
        requestBody:
          required: true
          content:
            multipart/form-data:
              schema: AttachmentUploadSchema
        errors: [400, 403, 413, 415, 422]
        responses:
          201: {description: "The attachment's metadata", schema: AttachmentSchema, headers: [Location]}
        """
        task = services.upload_target(current_user, task_id)
        if request.mimetype != "multipart/form-data":
            raise ApiError("Send the file as multipart/form-data in a part named 'file'.", status=415,
                           code="unsupported_media_type")
        services.check_declared_length(request.content_length)
        # Werkzeug stops reading (413) past this, also for chunked bodies without Content-Length.
        request.max_content_length = services.max_request_bytes()
        upload = request.files.get("file")
        if upload is None:
            raise Unprocessable(details={"file": ["Missing data for required field (a file part named 'file')."]})
        if not upload.filename:
            raise Unprocessable(details={"file": ["No file selected (the part has no file name)."]})
        try:
            attachment = services.add_attachment(current_user, task, upload.stream, upload.filename,
                                                 upload.content_type)
        finally:
            upload.close()
        location = api.url_for(AttachmentDetail, attachment_id=attachment.id)
        return attachment_schema.dump(attachment), 201, {"Location": location}


class AttachmentDetail(Resource):
    method_decorators = [auth_required]

    def get(self, attachment_id: int):
        """Download an attachment's bytes (anyone who sees the task).
        ---
        operationId: attachments_download
        description: >-
          Served with the recorded media type (whatever was uploaded),
          `Content-Disposition: attachment` (an ASCII `filename` plus the UTF-8
          `filename*`), `X-Content-Type-Options: nosniff` and an ETag (the
          SHA-256); Range and conditional requests work.
        responses:
          200:
            description: The file
            headers:
              Content-Disposition: {description: "attachment; filename=...; filename*=UTF-8''...", schema: {type: string}}
              X-Content-Type-Options: {description: nosniff, schema: {type: string}}
              ETag: {description: the SHA-256 of the content, schema: {type: string}}
            content: {application/octet-stream: {schema: {type: string, format: binary}}}
          206: {description: "A byte range (Range header)", content: {application/octet-stream: {schema: {type: string, format: binary}}}}
          304: {description: Not modified (If-None-Match)}
        """
        attachment, path = services.download(current_user, attachment_id)
        response = send_file(path, mimetype=attachment.content_type, conditional=True,
                             etag=attachment.sha256, max_age=0)
        response.headers["Content-Type"] = attachment.content_type
        response.headers["Content-Disposition"] = services.content_disposition(attachment.filename)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response.headers["Cache-Control"] = "private, no-cache"
        return response

    def delete(self, attachment_id: int):
        """Delete an attachment (uploader, task owner, site admin; others who see it get 403).
        ---
        operationId: attachments_delete
        description: The stored file is removed after the deletion is committed.
        errors: [403]
        responses:
          204: {description: Deleted}
        """
        services.delete_attachment(current_user, attachment_id)
        return no_content()


api.add_resource(TaskAttachmentList, "/tasks/<int:task_id>/attachments")
api.add_resource(AttachmentDetail, "/attachments/<int:attachment_id>")
