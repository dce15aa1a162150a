"""REST resources of comments: ``/api/tasks/<id>/comments`` and ``/api/comments/<id>``."""

from __future__ import annotations

from flask import Blueprint
from flask_jwt_extended import current_user
from flask_restful import Resource

from tasktracker.auth.access import auth_required
from tasktracker.comments import services
from tasktracker.comments.schemas import CommentBodySchema, comment_schema, comments_schema
from tasktracker.core.api import Api, load_body, no_content, page_response

bp = Blueprint("comments", __name__, url_prefix="/api")
api = Api(bp)
# schema instances, built once (loading or dumping does not change a schema)
comment_body_schema = CommentBodySchema()


class TaskCommentList(Resource):
    method_decorators = [auth_required]

    def get(self, task_id: int):
        """Comments of a task, oldest first, paginated (anyone who sees the task).
        ---
        operationId: comments_list
        query: PageArgsSchema
        responses:
          200: {description: A page of comments, schema: CommentPageSchema}
        """
        return page_response(comments_schema.dump, services.comments_query, current_user, task_id)

    def post(self, task_id: int):
        """Comment on a task (owner, assignee, members of the task's team, site admins).
        ---
        operationId: comments_create
        body: CommentBodySchema
        errors: [403]
        responses:
          201: {description: The new comment, schema: CommentSchema, headers: [Location]}
        """
        data = load_body(comment_body_schema)
        comment = services.create_comment(current_user, task_id, data["body"])
        return comment_schema.dump(comment), 201, {"Location": api.url_for(CommentDetail, comment_id=comment.id)}


class CommentDetail(Resource):
    method_decorators = [auth_required]

    def patch(self, comment_id: int):
        """Edit a comment (its author only; others who see the task get 403).
        ---
        operationId: comments_update
        body: CommentBodySchema
        errors: [403]
        responses:
          200: {description: The comment, schema: CommentSchema}
        """
        data = load_body(comment_body_schema)
        return comment_schema.dump(services.update_comment(current_user, comment_id, data["body"])), 200

    def delete(self, comment_id: int):
        """Delete a comment (its author, the task owner or a site admin; others who see it get 403).
        ---
        operationId: comments_delete
        errors: [403]
        responses:
          204: {description: Deleted}
        """
        services.delete_comment(current_user, comment_id)
        return no_content()


api.add_resource(TaskCommentList, "/tasks/<int:task_id>/comments")
api.add_resource(CommentDetail, "/comments/<int:comment_id>")
