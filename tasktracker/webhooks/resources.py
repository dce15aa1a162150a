"""REST resources of webhooks (api-contract.md v1.1, "Webhooks"): parse, check the
caller's team role, call a service, dump. A team's owner and admins (and site
admins) manage its webhooks; anyone else gets ``404`` on every path, so a webhook's
existence is never revealed."""

from __future__ import annotations

from flask import Blueprint, current_app
from flask_jwt_extended import current_user
from flask_restful import Resource

from tasktracker.auth.access import auth_required
from tasktracker.core.api import Api, load_args, load_body, no_content
from tasktracker.core.pagination import PageArgsSchema
from tasktracker.webhooks import services
from tasktracker.webhooks.schemas import (
    webhook_create_schema, webhook_schema, webhook_update_schema, webhook_with_secret_schema,
    webhooks_schema,
)

bp = Blueprint("webhooks", __name__, url_prefix="/api")
api = Api(bp)
page_args_schema = PageArgsSchema()


def _allow_private() -> bool:
    return bool(current_app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"])


class TeamWebhookList(Resource):
    method_decorators = [auth_required]

    def get(self, team_id: int):
        """The team's webhooks, oldest first (team owner, admin, site admin).
        ---
        operationId: webhooks_list
        description: Anyone else (members included) gets 404 `team_not_found`.
        responses:
          200: {description: The webhooks (without secrets), schema: {type: array, items: WebhookSchema}}
        """
        services.require_manager(current_user, team_id)
        return webhooks_schema.dump(services.list_webhooks(team_id)), 200

    def post(self, team_id: int):
        """Register a webhook for the team's events (team owner, admin, site admin).
        ---
        operationId: webhooks_create
        description: >-
          `events` defaults to ["*"]. The URL must be http(s) without credentials and
          resolve only to public addresses (422 on `url` otherwise, unless
          WEBHOOK_ALLOW_PRIVATE_TARGETS). The answer carries the signing `secret`, shown
          only here and by rotate-secret. Anyone else gets 404 `team_not_found`.
        body: WebhookCreateSchema
        responses:
          201: {description: The webhook with its secret, schema: WebhookWithSecretSchema, headers: [Location]}
        """
        services.require_manager(current_user, team_id)
        data = load_body(webhook_create_schema)
        webhook = services.create_webhook(team_id, url=data["url"], events=data["events"],
                                          active=data["active"], created_by_id=current_user.id,
                                          allow_private=_allow_private())
        return (webhook_with_secret_schema.dump(webhook), 201,
                {"Location": api.url_for(WebhookDetail, webhook_id=webhook.id)})


class WebhookDetail(Resource):
    method_decorators = [auth_required]

    def get(self, webhook_id: int):
        """One webhook (its team's owner, admins, site admins; else 404).
        ---
        operationId: webhooks_get
        responses:
          200: {description: The webhook, schema: WebhookSchema}
        """
        return webhook_schema.dump(services.get_webhook(webhook_id, services.managed_team_ids(current_user))), 200

    def patch(self, webhook_id: int):
        """Change a webhook's url, events or active flag.
        ---
        operationId: webhooks_update
        description: >-
          Same URL rules as create (422). `active: true` on a disabled webhook clears
          `disabled_reason` and its failure run; its waiting deliveries resume.
        body: WebhookUpdateSchema
        responses:
          200: {description: The webhook, schema: WebhookSchema}
        """
        data = load_body(webhook_update_schema)
        webhook = services.update_webhook(webhook_id, services.managed_team_ids(current_user),
                                          allow_private=_allow_private(), **data)
        return webhook_schema.dump(webhook), 200

    def delete(self, webhook_id: int):
        """Delete a webhook and its deliveries.
        ---
        operationId: webhooks_delete
        responses:
          204: {description: Deleted}
        """
        services.delete_webhook(webhook_id, services.managed_team_ids(current_user))
        return no_content()


class WebhookRotateSecret(Resource):
    method_decorators = [auth_required]

    def post(self, webhook_id: int):
        """Give the webhook a new signing secret (the old one signs nothing new).
        ---
        operationId: webhooks_rotate_secret
        responses:
          200: {description: The new secret, schema: WebhookSecretSchema}
        """
        return {"secret": services.rotate_secret(webhook_id, services.managed_team_ids(current_user))}, 200


class WebhookPing(Resource):
    method_decorators = [auth_required]

    def post(self, webhook_id: int):
        """Queue a `ping` delivery (data: the webhook), sent even to an inactive webhook.
        ---
        operationId: webhooks_ping
        responses:
          202: {description: Queued, schema: DeliveryQueuedSchema}
        """
        delivery = services.ping(webhook_id, services.managed_team_ids(current_user), actor_id=current_user.id)
        return {"delivery_id": delivery.id}, 202


class WebhookDeliveryList(Resource):
    method_decorators = [auth_required]

    def get(self, webhook_id: int):
        """The webhook's deliveries, newest first, paginated.
        ---
        operationId: webhooks_deliveries_list
        query: PageArgsSchema
        responses:
          200: {description: A page of deliveries, schema: DeliveryPageSchema}
        """
        args = load_args(page_args_schema)
        return services.list_deliveries(webhook_id, services.managed_team_ids(current_user),
                                        args["page"], args["per_page"]), 200


class DeliveryRedeliver(Resource):
    method_decorators = [auth_required]

    def post(self, delivery_id: int):
        """A new attempt of that delivery's payload now (same delivery id, same bytes).
        ---
        operationId: webhooks_deliveries_redeliver
        responses:
          202: {description: Queued, schema: DeliveryQueuedSchema}
        """
        delivery = services.redeliver(delivery_id, services.managed_team_ids(current_user))
        return {"delivery_id": delivery.id}, 202


api.add_resource(TeamWebhookList, "/teams/<int:team_id>/webhooks")
api.add_resource(WebhookDetail, "/webhooks/<int:webhook_id>")
api.add_resource(WebhookRotateSecret, "/webhooks/<int:webhook_id>/rotate-secret")
api.add_resource(WebhookPing, "/webhooks/<int:webhook_id>/ping")
api.add_resource(WebhookDeliveryList, "/webhooks/<int:webhook_id>/deliveries")
api.add_resource(DeliveryRedeliver, "/webhook-deliveries/<int:delivery_id>/redeliver")
