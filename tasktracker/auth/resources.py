"""REST resources of accounts: ``/api/auth/*`` and ``/api/users``."""

from __future__ import annotations

from flask import Blueprint, request
from flask_jwt_extended import current_user, get_jwt, jwt_required
from flask_restful import Resource

from tasktracker.auth import services
from tasktracker.auth.access import admin_required, auth_required, login_rate_limits
from tasktracker.auth.schemas import (
    AccessTokenSchema, AdminUserUpdateSchema, LoginSchema, ProfileUpdateSchema, RegisterSchema,
    TokenPairSchema, UserListArgsSchema, public_user_schema, user_schema, users_schema,
)
from tasktracker.core.api import Api, load_args, load_body, no_content
from tasktracker.core.pagination import paginate
from tasktracker.tokens import services as pat_services
from tasktracker.tokens.schemas import new_token_schema, token_create_schema, tokens_schema

bp = Blueprint("auth", __name__, url_prefix="/api")
api = Api(bp)
# schema instances, built once (loading or dumping does not change a schema)
access_token_schema = AccessTokenSchema()
admin_user_update_schema = AdminUserUpdateSchema()
login_schema = LoginSchema()
profile_update_schema = ProfileUpdateSchema()
register_schema = RegisterSchema()
token_pair_schema = TokenPairSchema()
user_list_args_schema = UserListArgsSchema()


#: The guard of ``POST /api/auth/refresh``: a refresh token, not an access token.
refresh_required = jwt_required(refresh=True)


def _login_account_key() -> str:
    """Rate-limit key for the account named in a login body (email or username).

    One account is one bucket however it is named (see
    :func:`services.login_account_key`). A body that is not a JSON object
    shares the ``?`` bucket; the view then answers 400/415/422.
    """
    try:
        body = request.get_json(silent=True) if request.is_json else None
    except RecursionError:
        body = None
    if not isinstance(body, dict):
        return "login-account:?"
    return services.login_account_key(body.get("email"), body.get("username"))


class Register(Resource):
    def post(self):
        """Register an account.
        ---
        operationId: auth_register
        body: RegisterSchema
        errors: [409]
        responses:
          201: {description: The new user, schema: UserSchema}
        """
        data = load_body(register_schema)
        user = services.create_user(**data)
        return user_schema.dump(user), 201


class Login(Resource):
    decorators = login_rate_limits("login", _login_account_key)

    def post(self):
        """Log in with email (or username) and password.
        ---
        operationId: auth_login
        body: LoginSchema
        errors: [401]
        responses:
          200: {description: Tokens and the user, schema: TokenPairSchema}
        """
        data = load_body(login_schema)
        result = services.login(data.get("email"), data.get("username"), data["password"])
        return token_pair_schema.dump(result), 200


class Refresh(Resource):
    method_decorators = [refresh_required]

    def post(self):
        """A new access token from a refresh token.
        ---
        operationId: auth_refresh
        description: Send the refresh token as the bearer token.
        responses:
          200: {description: A new access token, schema: AccessTokenSchema}
        """
        return access_token_schema.dump(services.refresh(current_user, get_jwt()["sid"])), 200


class Logout(Resource):
    method_decorators = [auth_required]

    def post(self):
        """Revoke the access token and its refresh token.
        ---
        operationId: auth_logout
        responses:
          204: {description: Logged out}
        """
        services.logout(current_user, get_jwt()["sid"])
        return no_content()


class Profile(Resource):
    method_decorators = [auth_required]

    def get(self):
        """The caller's user.
        ---
        operationId: auth_profile_get
        responses:
          200: {description: The caller, schema: UserSchema}
        """
        return user_schema.dump(current_user), 200

    def patch(self):
        """Update the caller's profile; a password change revokes the caller's other tokens.
        ---
        operationId: auth_profile_update
        description: A new `password` needs the right `current_password` (else 422).
        body: ProfileUpdateSchema
        errors: [409]
        responses:
          200: {description: The updated user, schema: UserSchema}
        """
        data = load_body(profile_update_schema)
        user = services.update_profile(current_user, data, get_jwt()["sid"])
        return user_schema.dump(user), 200


class UserList(Resource):
    method_decorators = [admin_required]

    def get(self):
        """Users, paginated (admin).
        ---
        operationId: users_list
        tags: [users]
        query: UserListArgsSchema
        responses:
          200: {description: A page of users, schema: UserPageSchema}
        """
        args = load_args(user_list_args_schema)
        query = services.users_query(args.get("q"), args.get("role"), args.get("active"))
        return paginate(query, args["page"], args["per_page"], users_schema.dump), 200


class UserDetail(Resource):
    method_decorators = {"get": [auth_required], "patch": [admin_required]}

    def get(self, user_id: int):
        """A user: full for admins and self, public (no email) for teammates.
        ---
        operationId: users_get
        tags: [users]
        responses:
          200:
            description: The user
            content:
              application/json:
                schema:
                  oneOf: [{$ref: "#/components/schemas/User"}, {$ref: "#/components/schemas/PublicUser"}]
        """
        user, full = services.view_user(current_user, user_id)
        return (user_schema if full else public_user_schema).dump(user), 200

    def patch(self, user_id: int):
        """Change a user's role or active flag (admin); deactivation revokes their tokens.
        ---
        operationId: users_update
        tags: [users]
        description: >-
          The last active site admin can be neither demoted nor deactivated (409
          `last_admin`, nothing changes), also when admins demote or deactivate each
          other at the same moment: one of them is refused.
        body: AdminUserUpdateSchema
        errors: [409]
        responses:
          200: {description: The user, schema: UserSchema}
        """
        data = load_body(admin_user_update_schema)
        user = services.admin_update_user(services.get_user(user_id), **data, actor_id=current_user.id)
        return user_schema.dump(user), 200


api.add_resource(Register, "/auth/register")
api.add_resource(Login, "/auth/login")
api.add_resource(Refresh, "/auth/refresh")
api.add_resource(Logout, "/auth/logout")
api.add_resource(Profile, "/auth/profile")
api.add_resource(UserList, "/users")
api.add_resource(UserDetail, "/users/<int:user_id>")


# --------------------------------------------------------------------------- personal access tokens
# (api-contract.md v1.1; the rules are tokens/services.py; here because the bearer guard,
# auth/access.py, authenticates them: tokens/ imports no auth logic)

class TokenList(Resource):
    method_decorators = [auth_required]

    def get(self):
        """The caller's personal access tokens (not deleted; expired ones included), newest first.
        ---
        operationId: auth_tokens_list
        tags: [auth]
        responses:
          200: {description: "The tokens, without their secret", schema: {type: array, items: TokenSchema}}
        """
        return tokens_schema.dump(pat_services.list_tokens(current_user.id)), 200

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
          201: {description: "The token, with its secret this once", schema: NewTokenSchema}
        """
        data = load_body(token_create_schema)
        row, raw = pat_services.create_token(current_user.id, data["name"], data["scopes"], data["expires_at"])
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
        pat_services.delete_token(current_user.id, token_id)
        return no_content()


api.add_resource(TokenList, "/auth/tokens")
api.add_resource(TokenDetail, "/auth/tokens/<int:token_id>")
