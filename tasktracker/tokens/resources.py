"""REST resources of personal access tokens: ``/api/auth/tokens`` (api-contract.md
v1.1, "Personal access tokens"). A personal access token may not call the create and
delete endpoints (the bearer check answers 403 ``insufficient_scope``)."""

from __future__ import annotations

from flask import Blueprint
from flask_jwt_extended import current_user
from flask_restful import Resource

from tasktracker.auth.access import auth_required
from tasktracker.core.api import Api, load_body, no_content
from tasktracker.tokens import services
from tasktracker.tokens.schemas import new_token_schema, token_create_schema, tokens_schema

bp = Blueprint("tokens", __name__, url_prefix="/api")
api = Api(bp)


class TokenList(Resource):
    method_decorators = [auth_required]

    def get(self):
        """The caller's personal access tokens (not deleted; expired ones included), newest first.
        ---
        operationId: auth_tokens_list
        tags: [auth]
        responses:
          200: {description: The tokens, without their secret, schema: {type: array, items: TokenSchema}}
        """
        return tokens_schema.dump(services.list_tokens(current_user.id)), 200

    def post(self):
        """Create a personal access token (not with a personal access token).
        ---
        operationId: auth_tokens_create
        tags: [auth]
        description: >-
          `scopes` is ["read"] or ["read", "write"]; `expires_at` (offset required)
          defaults to 90 days from now, at most 1 year (422). The `token` (prefix
          `tt_pat_`) is in this answer only; the server keeps its SHA-256.
        body: TokenCreateSchema
        responses:
          201: {description: The token, with its secret this once, schema: NewTokenSchema}
        """
        data = load_body(token_create_schema)
        row, raw = services.create_token(current_user.id, data["name"], data["scopes"], data["expires_at"])
        body = new_token_schema.dump(row)
        body["token"] = raw
        return body, 201


class TokenDetail(Resource):
    method_decorators = [auth_required]

    def delete(self, token_id: int):
        """Delete one of the caller's tokens: refused (401) at once in every process.
        ---
        operationId: auth_tokens_delete
        tags: [auth]
        responses:
          204: {description: Deleted}
        """
        services.delete_token(current_user.id, token_id)
        return no_content()


api.add_resource(TokenList, "/auth/tokens")
api.add_resource(TokenDetail, "/auth/tokens/<int:token_id>")
