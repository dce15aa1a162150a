"""REST resources of email (api-contract v1.1 "Email"): password reset, address
verification and notification settings under ``/api/auth``, one-click unsubscribe
under ``/api/email``."""

from __future__ import annotations

from flask import Blueprint, Response, request
from flask_jwt_extended import current_user, get_current_user, verify_jwt_in_request
from flask_restful import Resource

from tasktracker.auth.access import auth_required, login_rate_limits
from tasktracker.core.api import Api, load_args, load_body, no_content, storable_text
from tasktracker.mail import services
from tasktracker.mail.schemas import (
    NotificationSettingsPatchSchema, NotificationSettingsSchema, PasswordResetConfirmSchema,
    PasswordResetRequestSchema, UnsubscribeArgsSchema, VerifyEmailSchema,
)

bp = Blueprint("mail", __name__, url_prefix="/api")
api = Api(bp)
reset_request_schema = PasswordResetRequestSchema()
reset_confirm_schema = PasswordResetConfirmSchema()
verify_schema = VerifyEmailSchema()
unsubscribe_args_schema = UnsubscribeArgsSchema()
settings_schema = NotificationSettingsSchema()
settings_patch_schema = NotificationSettingsPatchSchema()


def _reset_account_key() -> str:
    """Rate-limit bucket of the address named in a reset body: its normalised text (no
    database lookup, so the request's timing says nothing about the address).
    Anything that is not a storable string shares the ``?`` bucket."""
    try:
        body = request.get_json(silent=True) if request.is_json else None
    except RecursionError:
        body = None
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or not email.strip() or len(email) > 254 or not storable_text(email):
        return "password-reset-account:?"
    return "password-reset-account:" + email.strip().lower()


class PasswordReset(Resource):
    """Rate limited like login: ``LOGIN_RATE_LIMIT_ACCOUNT`` per address and
    ``LOGIN_RATE_LIMIT_IP`` per client address."""

    method_decorators: list = []
    decorators = login_rate_limits("password-reset", _reset_account_key)

    def post(self):
        """Ask for a password reset message.
        ---
        operationId: auth_password_reset_request
        tags: [auth]
        description: >-
          Always `202`, whether or not an account has that address (the lookup and the
          message happen in the background): the answer tells nothing. The message
          links to `MAIL_RESET_URL` with a single-use token valid for 1 hour.
        body: PasswordResetRequestSchema
        responses:
          202: {description: Accepted (a message is sent if an active account has that address)}
        """
        data = load_body(reset_request_schema)
        services.request_password_reset(data["email"])
        return Response(status=202)


class PasswordResetConfirm(Resource):
    method_decorators: list = []

    def post(self):
        """Set a new password with a reset token; every session of the user is revoked.
        ---
        operationId: auth_password_reset_confirm
        tags: [auth]
        description: >-
          A used, expired (1 h) or unknown token -> 422 `invalid_reset_token`. Every
          access and refresh token of the user stops working and their Socket.IO
          connections are closed.
        body: PasswordResetConfirmSchema
        responses:
          204: {description: Password changed}
        """
        data = load_body(reset_confirm_schema)
        services.confirm_password_reset(data["token"], data["password"])
        return no_content()


class VerifyEmailRequest(Resource):
    method_decorators = [auth_required]

    def post(self):
        """Send a verification message to the caller's address.
        ---
        operationId: auth_verify_email_request
        tags: [auth]
        responses:
          202: {description: Accepted; the message is sent in the background}
        """
        services.request_verification(current_user)
        return Response(status=202)


class VerifyEmail(Resource):
    method_decorators: list = []

    def post(self):
        """Confirm the address with the token of a verification message.
        ---
        operationId: auth_verify_email
        tags: [auth]
        description: >-
          No login needed (the link may be opened anywhere). With a bearer token the
          token must be the caller's own. A used, expired, unknown or foreign token,
          or one issued for an address the user no longer has -> 422
          `invalid_verification_token`.
        body: VerifyEmailSchema
        errors: [401]
        responses:
          204: {description: The address is verified (`email_verified` is true)}
        """
        verify_jwt_in_request(optional=True)
        data = load_body(verify_schema)
        services.verify_email(data["token"], get_current_user())
        return no_content()


class NotificationSettings(Resource):
    method_decorators = [auth_required]

    def get(self):
        """The caller's email settings.
        ---
        operationId: auth_notification_settings_get
        tags: [auth]
        responses:
          200: {description: The settings, schema: NotificationSettingsSchema}
        """
        return settings_schema.dump(services.get_notification_settings(current_user)), 200

    def patch(self):
        """Change the caller's email settings (the fields given only).
        ---
        operationId: auth_notification_settings_update
        tags: [auth]
        body: NotificationSettingsPatchSchema
        responses:
          200: {description: The new settings, schema: NotificationSettingsSchema}
        """
        data = load_body(settings_patch_schema)
        return settings_schema.dump(services.update_notification_settings(current_user, data)), 200


class Unsubscribe(Resource):
    method_decorators: list = []

    def post(self):
        """One-click unsubscribe (RFC 8058): turn off the message's type, without login.
        ---
        operationId: email_unsubscribe
        tags: [email]
        description: >-
          The `token` comes from the message's `List-Unsubscribe` link; mail clients
          POST `List-Unsubscribe=One-Click` as a form body, which is ignored. A
          tampered or foreign token -> 422 `invalid_unsubscribe_token`. Idempotent.
        query: UnsubscribeArgsSchema
        responses:
          204: {description: Unsubscribed}
        """
        args = load_args(unsubscribe_args_schema)
        services.unsubscribe_one_click(args["token"])
        return no_content()


api.add_resource(PasswordReset, "/auth/password-reset")
api.add_resource(PasswordResetConfirm, "/auth/password-reset/confirm")
api.add_resource(VerifyEmailRequest, "/auth/verify-email/request")
api.add_resource(VerifyEmail, "/auth/verify-email")
api.add_resource(NotificationSettings, "/auth/profile/notification-settings")
api.add_resource(Unsubscribe, "/email/unsubscribe")
