"""REST resource of the real-time layer: ``GET /api/teams/<id>/presence``."""

from __future__ import annotations

from flask import Blueprint
from flask_jwt_extended import current_user
from flask_restful import Resource

from tasktracker.auth.access import auth_required
from tasktracker.core.api import Api, page_response
from tasktracker.core.errors import ServiceUnavailable
from tasktracker.realtime import services
from tasktracker.realtime.emitter import get_state
from tasktracker.realtime.schemas import presences_schema

bp = Blueprint("realtime", __name__, url_prefix="/api")
api = Api(bp)
# schema instances, built once (loading or dumping does not change a schema)


class TeamPresence(Resource):
    method_decorators = [auth_required]

    def get(self, team_id: int):
        """Presence of a team's members (team members and site admins).
        ---
        operationId: teams_presence
        tags: [teams]
        description: >
          Every member of the team with `online` (at least one Socket.IO
          connection open, in any server process) and `last_seen_at` (last
          Socket.IO connect or disconnect). Paginated like every list, ordered
          by `user_id`. A team you are not in answers 404; 503 when the presence
          store (Redis) is down.
        query: PageArgsSchema
        responses:
          200: {description: A page of presences, schema: PresencePageSchema}
        """
        presence = get_state().presence

        def dump(members):
            try:
                online = presence.online([m.user_id for m in members])
            except Exception as exc:  # noqa: BLE001 - Redis down
                raise ServiceUnavailable("Presence store unavailable.", code="presence_unavailable") from exc
            return presences_schema.dump(services.presence_items(members, online))

        return page_response(dump, services.team_presence_query, current_user, team_id)


api.add_resource(TeamPresence, "/teams/<int:team_id>/presence")
