"""REST resources of comments: ``/api/tasks/<id>/comments`` and ``/api/comments/<id>``."""

from __future__ import annotations

from flask import Blueprint
from flask_jwt_extended import current_user
from flask_restful import Resource

from tasktracker.auth.access import auth_required
from tasktracker.comments import services
from tasktracker.comments.schemas import CommentBodySchema, comment_schema, comments_schema
from tasktracker.core.api import Api, load_args, load_body, no_content
from tasktracker.core.pagination import PageArgsSchema, paginate

bp = Blueprint("comments", __name__, url_prefix="/api")
api = Api(bp)
# schema instances, built once (loading or dumping does not change a schema)
comment_body_schema = CommentBodySchema()
page_args_schema = PageArgsSchema()


class TaskCommentList(Resource):
    @auth_required
    def get(self, task_id: int):
        """Comments of a task, oldest first, paginated (anyone who sees the task).
        ---
        tags: [comments]
        parameters:
          - {in: path, name: task_id, required: true, schema: {type: integer}}
          - in: query
            schema: PageArgsSchema
        responses:
          200: {description: A page of comments, content: {application/json: {schema: CommentPageSchema}}}
          401: {$ref: "#/components/responses/Unauthorized"}
          404: {$ref: "#/components/responses/NotFound"}
          422: {$ref: "#/components/responses/ValidationError"}
        """
        args = load_args(page_args_schema)
        query = services.comments_query(current_user, task_id)
        return paginate(query, args["page"], args["per_page"], comments_schema.dump), 200

    @auth_required
    def post(self, task_id: int):
        """Comment on a task (owner, assignee, members of the task's team, site admins).
        ---
        tags: [comments]
        parameters:
          - {in: path, name: task_id, required: true, schema: {type: integer}}
        requestBody:
          required: true
          content:
            application/json:
              schema: CommentBodySchema
        responses:
          201:
            description: The new comment
            headers: {Location: {description: URL of the comment, schema: {type: string}}}
            content: {application/json: {schema: CommentSchema}}
          400: {$ref: "#/components/responses/BadRequest"}
          401: {$ref: "#/components/responses/Unauthorized"}
          403: {$ref: "#/components/responses/Forbidden"}
          404: {$ref: "#/components/responses/NotFound"}
          413: {$ref: "#/components/responses/PayloadTooLarge"}
          415: {$ref: "#/components/responses/UnsupportedMediaType"}
          422: {$ref: "#/components/responses/ValidationError"}
        """
        data = load_body(comment_body_schema)
        comment = services.create_comment(current_user, task_id, data["body"])
        return comment_schema.dump(comment), 201, {"Location": f"/api/comments/{comment.id}"}


class CommentDetail(Resource):
    @auth_required
    def patch(self, comment_id: int):
        """Edit a comment (its author only; others who see the task get 403).
        ---
        tags: [comments]
        parameters:
          - {in: path, name: comment_id, required: true, schema: {type: integer}}
        requestBody:
          required: true
          content:
            application/json:
              schema: CommentBodySchema
        responses:
          200: {description: The comment, content: {application/json: {schema: CommentSchema}}}
          400: {$ref: "#/components/responses/BadRequest"}
          401: {$ref: "#/components/responses/Unauthorized"}
          403: {$ref: "#/components/responses/Forbidden"}
          404: {$ref: "#/components/responses/NotFound"}
          413: {$ref: "#/components/responses/PayloadTooLarge"}
          415: {$ref: "#/components/responses/UnsupportedMediaType"}
          422: {$ref: "#/components/responses/ValidationError"}
        """
        data = load_body(comment_body_schema)
        return comment_schema.dump(services.update_comment(current_user, comment_id, data["body"])), 200

    @auth_required
    def delete(self, comment_id: int):
        """Delete a comment (its author, the task owner or a site admin; others who see it get 403).
        ---
        tags: [comments]
        parameters:
          - {in: path, name: comment_id, required: true, schema: {type: integer}}
        responses:
          204: {description: Deleted}
          401: {$ref: "#/components/responses/Unauthorized"}
          403: {$ref: "#/components/responses/Forbidden"}
          404: {$ref: "#/components/responses/NotFound"}
        """
        services.delete_comment(current_user, comment_id)
        return no_content()


api.add_resource(TaskCommentList, "/tasks/<int:task_id>/comments")
api.add_resource(CommentDetail, "/comments/<int:comment_id>")
