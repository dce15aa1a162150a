"""REST resources of accounts: ``/api/auth/*`` and ``/api/users``."""

from __future__ import annotations

from flask import Blueprint, current_app, request
from flask_jwt_extended import current_user, get_jwt, jwt_required
from flask_restful import Resource

from tasktracker.auth import services
from tasktracker.auth.access import admin_required, auth_required
from tasktracker.auth.schemas import (
    AccessTokenSchema, AdminUserUpdateSchema, LoginSchema, ProfileUpdateSchema, RegisterSchema,
    TokenPairSchema, UserListArgsSchema, public_user_schema, user_schema, users_schema,
)
from tasktracker.core.api import Api, load_args, load_body, no_content
from tasktracker.core.pagination import paginate
from tasktracker.extensions import limiter

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


def _login_limits_off() -> bool:
    """Login limits follow this app's ``RATELIMIT_ENABLED`` (the limiter object is process-wide)."""
    return not current_app.config.get("RATELIMIT_ENABLED", True)


class Register(Resource):
    def post(self):
        """Register an account.
        ---
        tags: [auth]
        security: []
        requestBody:
          required: true
          content:
            application/json:
              schema: RegisterSchema
        responses:
          201: {description: The new user, content: {application/json: {schema: UserSchema}}}
          400: {$ref: "#/components/responses/BadRequest"}
          409: {$ref: "#/components/responses/Conflict"}
          413: {$ref: "#/components/responses/PayloadTooLarge"}
          415: {$ref: "#/components/responses/UnsupportedMediaType"}
          422: {$ref: "#/components/responses/ValidationError"}
          503: {$ref: "#/components/responses/ServiceUnavailable"}
        """
        data = load_body(register_schema)
        user = services.create_user(**data)
        return user_schema.dump(user), 201


class Login(Resource):
    decorators = [
        limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT_ACCOUNT"], key_func=_login_account_key,
                      scope="login-account", exempt_when=_login_limits_off),
        limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT_IP"], scope="login-ip",
                      exempt_when=_login_limits_off),
    ]

    def post(self):
        """Log in with email (or username) and password.
        ---
        tags: [auth]
        security: []
        requestBody:
          required: true
          content:
            application/json:
              schema: LoginSchema
        responses:
          200: {description: Tokens and the user, content: {application/json: {schema: TokenPairSchema}}}
          400: {$ref: "#/components/responses/BadRequest"}
          401: {$ref: "#/components/responses/Unauthorized"}
          413: {$ref: "#/components/responses/PayloadTooLarge"}
          415: {$ref: "#/components/responses/UnsupportedMediaType"}
          422: {$ref: "#/components/responses/ValidationError"}
          429: {$ref: "#/components/responses/RateLimited"}
          503: {$ref: "#/components/responses/ServiceUnavailable"}
        """
        data = load_body(login_schema)
        result = services.login(data.get("email"), data.get("username"), data["password"])
        return token_pair_schema.dump(result), 200


class Refresh(Resource):
    @jwt_required(refresh=True)
    def post(self):
        """A new access token from a refresh token.
        ---
        tags: [auth]
        description: Send the refresh token as the bearer token.
        responses:
          200: {description: A new access token, content: {application/json: {schema: AccessTokenSchema}}}
          401: {$ref: "#/components/responses/Unauthorized"}
          503: {$ref: "#/components/responses/ServiceUnavailable"}
        """
        return access_token_schema.dump(services.refresh(current_user, get_jwt()["sid"])), 200


class Logout(Resource):
    @auth_required
    def post(self):
        """Revoke the access token and its refresh token.
        ---
        tags: [auth]
        responses:
          204: {description: Logged out}
          401: {$ref: "#/components/responses/Unauthorized"}
          503: {$ref: "#/components/responses/ServiceUnavailable"}
        """
        services.logout(current_user, get_jwt()["sid"])
        return no_content()


class Profile(Resource):
    @auth_required
    def get(self):
        """The caller's user.
        ---
        tags: [auth]
        responses:
          200: {description: The caller, content: {application/json: {schema: UserSchema}}}
          401: {$ref: "#/components/responses/Unauthorized"}
          503: {$ref: "#/components/responses/ServiceUnavailable"}
        """
        return user_schema.dump(current_user), 200

    @auth_required
    def patch(self):
        """Update the caller's profile; a password change revokes the caller's other tokens.
        ---
        tags: [auth]
        requestBody:
          required: true
          content:
            application/json:
              schema: ProfileUpdateSchema
        responses:
          200: {description: The updated user, content: {application/json: {schema: UserSchema}}}
          400: {$ref: "#/components/responses/BadRequest"}
          401: {$ref: "#/components/responses/Unauthorized"}
          409: {$ref: "#/components/responses/Conflict"}
          413: {$ref: "#/components/responses/PayloadTooLarge"}
          415: {$ref: "#/components/responses/UnsupportedMediaType"}
          422: {$ref: "#/components/responses/ValidationError"}
          503: {$ref: "#/components/responses/ServiceUnavailable"}
        """
        data = load_body(profile_update_schema)
        user = services.update_profile(current_user, data, get_jwt()["sid"])
        return user_schema.dump(user), 200


class UserList(Resource):
    @admin_required
    def get(self):
        """Users, paginated (admin).
        ---
        tags: [users]
        parameters:
          - in: query
            schema: UserListArgsSchema
        responses:
          200: {description: A page of users, content: {application/json: {schema: UserPage}}}
          401: {$ref: "#/components/responses/Unauthorized"}
          403: {$ref: "#/components/responses/Forbidden"}
          422: {$ref: "#/components/responses/ValidationError"}
          503: {$ref: "#/components/responses/ServiceUnavailable"}
        """
        args = load_args(user_list_args_schema)
        query = services.users_query(args.get("q"), args.get("role"), args.get("active"))
        return paginate(query, args["page"], args["per_page"], users_schema.dump), 200


class UserDetail(Resource):
    @auth_required
    def get(self, user_id: int):
        """A user: full for admins and self, public (no email) for teammates.
        ---
        tags: [users]
        parameters:
          - {in: path, name: user_id, required: true, schema: {type: integer}}
        responses:
          200:
            description: The user
            content:
              application/json:
                schema:
                  oneOf: [{$ref: "#/components/schemas/User"}, {$ref: "#/components/schemas/PublicUser"}]
          401: {$ref: "#/components/responses/Unauthorized"}
          404: {$ref: "#/components/responses/NotFound"}
          503: {$ref: "#/components/responses/ServiceUnavailable"}
        """
        user, full = services.view_user(current_user, user_id)
        return (user_schema if full else public_user_schema).dump(user), 200

    @admin_required
    def patch(self, user_id: int):
        """Change a user's role or active flag (admin); deactivation revokes their tokens.
        ---
        tags: [users]
        description: >-
          The last active site admin can be neither demoted nor deactivated (409
          `last_admin`, nothing changes), also when admins demote or deactivate each
          other at the same moment: one of them is refused.
        parameters:
          - {in: path, name: user_id, required: true, schema: {type: integer}}
        requestBody:
          required: true
          content:
            application/json:
              schema: AdminUserUpdateSchema
        responses:
          200: {description: The user, content: {application/json: {schema: UserSchema}}}
          400: {$ref: "#/components/responses/BadRequest"}
          401: {$ref: "#/components/responses/Unauthorized"}
          403: {$ref: "#/components/responses/Forbidden"}
          404: {$ref: "#/components/responses/NotFound"}
          409: {$ref: "#/components/responses/Conflict"}
          413: {$ref: "#/components/responses/PayloadTooLarge"}
          415: {$ref: "#/components/responses/UnsupportedMediaType"}
          422: {$ref: "#/components/responses/ValidationError"}
          503: {$ref: "#/components/responses/ServiceUnavailable"}
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
