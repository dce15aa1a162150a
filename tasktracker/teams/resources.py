"""REST resources of teams: ``/api/teams``, members, invitations (api-contract.md, "Teams")."""

from __future__ import annotations

from flask import Blueprint
from flask_jwt_extended import current_user
from flask_restful import Resource

from tasktracker.auth.access import auth_required
from tasktracker.core.api import Api, load_body, no_content, page_response
from tasktracker.teams import services
from tasktracker.teams.schemas import (
    InvitationCreateSchema, MemberRoleSchema, TeamCreateSchema, TeamUpdateSchema, invitation_schema,
    invitations_schema, team_detail_schema, team_member_schema, team_members_schema, team_schema,
    teams_schema,
)

bp = Blueprint("teams", __name__, url_prefix="/api")
api = Api(bp)
# schema instances, built once (loading or dumping does not change a schema)
invitation_create_schema = InvitationCreateSchema()
member_role_schema = MemberRoleSchema()
team_create_schema = TeamCreateSchema()
team_update_schema = TeamUpdateSchema()


class TeamList(Resource):
    method_decorators = [auth_required]

    def get(self):
        """Teams the caller belongs to (any role), oldest first, paginated.
        ---
        operationId: teams_list
        query: PageArgsSchema
        responses:
          200: {description: A page of teams, schema: TeamPageSchema}
        """
        return page_response(lambda rows: teams_schema.dump(services.with_member_counts(rows)),
                             services.my_teams_query, current_user)

    def post(self):
        """Create a team; the caller becomes its owner.
        ---
        operationId: teams_create
        body: TeamCreateSchema
        responses:
          201: {description: The new team, schema: TeamSchema, headers: [Location]}
        """
        data = load_body(team_create_schema)
        team = services.create_team(current_user, data["name"], data["description"])
        return team_schema.dump(team), 201, {"Location": api.url_for(TeamDetail, team_id=team.id)}


class TeamDetail(Resource):
    method_decorators = [auth_required]

    def get(self, team_id: int):
        """A team with its members (members and site admins; others 404).
        ---
        operationId: teams_get
        responses:
          200: {description: The team and its members, schema: TeamDetailSchema}
        """
        return team_detail_schema.dump(services.team_detail(current_user, team_id)), 200

    def patch(self, team_id: int):
        """Edit a team's name or description (owner, admin, site admin; a member gets 403).
        ---
        operationId: teams_update
        body: TeamUpdateSchema
        errors: [403]
        responses:
          200: {description: The team, schema: TeamSchema}
        """
        data = load_body(team_update_schema)
        return team_schema.dump(services.update_team(current_user, team_id, data)), 200

    def delete(self, team_id: int):
        """Delete a team (owner or site admin; team admins and members get 403).
        ---
        operationId: teams_delete
        description: >-
          The team's tasks (trashed ones too) become their owners' personal tasks
          (team_id null); their assignees stay. Memberships and invitations are removed.
          409 `concurrent_update` if one of its tasks changed at the same moment.
        errors: [403, 409]
        responses:
          204: {description: Deleted}
        """
        services.delete_team(current_user, team_id)
        return no_content()


class TeamMemberList(Resource):
    method_decorators = [auth_required]

    def get(self, team_id: int):
        """Members of a team (owner, admins, members; each by join time), paginated.
        ---
        operationId: teams_members_list
        query: PageArgsSchema
        responses:
          200: {description: A page of members, schema: TeamMemberPageSchema}
        """
        return page_response(team_members_schema.dump, services.list_members, current_user, team_id)


class TeamMemberDetail(Resource):
    method_decorators = [auth_required]

    def patch(self, team_id: int, user_id: int):
        """Change a member's role to admin or member.
        ---
        operationId: teams_members_update_role
        description: >-
          Owner and site admins only, except that a team admin may step down
          (their own admin -> member); other attempts by team admins and members
          are 403. The owner's role never changes (409 `owner_role_locked`);
          `owner` cannot be given (422). The same role again is a no-op.
        body: MemberRoleSchema
        errors: [403, 409]
        responses:
          200: {description: The membership, schema: TeamMemberSchema}
        """
        data = load_body(member_role_schema)
        member = services.change_role(current_user, team_id, user_id, data["role"])
        return team_member_schema.dump(member), 200

    def delete(self, team_id: int, user_id: int):
        """Remove a member (owner, site admin; a team admin removes plain members) or leave (self).
        ---
        operationId: teams_members_remove
        description: >-
          The owner can neither leave nor be removed (409 `owner_cannot_leave`).
          The member's tasks in the team are unassigned and their access ends at once.
        errors: [403, 409]
        responses:
          204: {description: Removed}
        """
        services.remove_member(current_user, team_id, user_id)
        return no_content()


class TeamInvitationList(Resource):
    method_decorators = [auth_required]

    def get(self, team_id: int):
        """Pending (unexpired) invitations of a team, oldest first (owner, admin, site admin).
        ---
        operationId: teams_invitations_list
        tags: [invitations]
        query: PageArgsSchema
        errors: [403]
        responses:
          200: {description: A page of invitations, schema: InvitationPageSchema}
        """
        return page_response(invitations_schema.dump, services.team_invitations_query, current_user, team_id)

    def post(self, team_id: int):
        """Invite an email address into the team (owner, admin, site admin).
        ---
        operationId: teams_invitations_create
        tags: [invitations]
        description: >-
          Inviting with role `admin` needs the owner or a site admin (403 otherwise).
          409 `already_member` if the address belongs to a member, 409 `already_invited`
          if a pending invitation for it (any case) exists: one pending invitation per
          team and address, also under concurrent requests (the database's unique index
          refuses the others, answered with the same 409; the existing invitation is
          not returned). Expires after INVITATION_TTL (7 days). A registered invitee
          gets a `team_invitation` notification.
        body: InvitationCreateSchema
        errors: [403, 409]
        responses:
          201: {description: The invitation, schema: InvitationSchema}
        """
        data = load_body(invitation_create_schema)
        invitation = services.create_invitation(current_user, team_id, data["email"], data["role"])
        return invitation_schema.dump(invitation), 201


class TeamInvitationDetail(Resource):
    method_decorators = [auth_required]

    def delete(self, team_id: int, invitation_id: int):
        """Revoke a pending invitation of the team (owner, admin, site admin).
        ---
        operationId: teams_invitations_revoke
        tags: [invitations]
        description: >-
          The invitation's status becomes `revoked`: it leaves the team's and the
          invitee's lists, the invitee can no longer accept or decline it (409
          `invitation_not_pending`) and the address may be invited again. A pending
          invitation past its expires_at may still be revoked. A team member who is
          not owner or admin gets 403; someone who may not see the team 404
          `team_not_found`; an invitation that is not the team's, or already revoked,
          404 `invitation_not_found`; one already accepted, declined or expired
          409 `invitation_not_pending`.
        errors: [403, 409]
        responses:
          204: {description: Revoked}
        """
        services.revoke_invitation(current_user, team_id, invitation_id)
        return no_content()


class MyInvitationList(Resource):
    method_decorators = [auth_required]

    def get(self):
        """Pending (unexpired) invitations addressed to the caller's email, newest first.
        ---
        operationId: invitations_list_mine
        tags: [invitations]
        query: PageArgsSchema
        responses:
          200: {description: A page of invitations, schema: InvitationPageSchema}
        """
        return page_response(invitations_schema.dump, services.my_invitations_query, current_user)


class InvitationAccept(Resource):
    method_decorators = [auth_required]

    def post(self, invitation_id: int):
        """Accept an invitation: the caller becomes a member with the invited role.
        ---
        operationId: invitations_accept
        tags: [invitations]
        description: >-
          Only the user the invitation is addressed to (by email, case-insensitive);
          anyone else gets 404, and so does everyone once the team is deleted (also
          when the deletion races the accept: an accept that committed first still
          answers 200, and the deletion then removes the new membership with the team).
          Answers the invitation (status `accepted`); the new membership shows in
          `GET /api/teams/{id}/members`. 409 `invitation_not_pending` if already
          accepted, declined or revoked, `invitation_expired` after expires_at,
          `already_member` if the caller is already a member.
        errors: [409]
        responses:
          200: {description: The accepted invitation, schema: InvitationSchema}
        """
        return invitation_schema.dump(services.accept_invitation(current_user, invitation_id)), 200


class InvitationDecline(Resource):
    method_decorators = [auth_required]

    def post(self, invitation_id: int):
        """Decline an invitation.
        ---
        operationId: invitations_decline
        tags: [invitations]
        description: >-
          Only the user the invitation is addressed to (by email, case-insensitive);
          anyone else gets 404, and so does everyone once the team is deleted. 409
          `invitation_not_pending` if already accepted, declined or revoked,
          `invitation_expired` after expires_at.
        errors: [409]
        responses:
          200: {description: The declined invitation, schema: InvitationSchema}
        """
        return invitation_schema.dump(services.decline_invitation(current_user, invitation_id)), 200


api.add_resource(TeamList, "/teams")
api.add_resource(TeamDetail, "/teams/<int:team_id>")
api.add_resource(TeamMemberList, "/teams/<int:team_id>/members")
api.add_resource(TeamMemberDetail, "/teams/<int:team_id>/members/<int:user_id>")
api.add_resource(TeamInvitationList, "/teams/<int:team_id>/invitations")
api.add_resource(TeamInvitationDetail, "/teams/<int:team_id>/invitations/<int:invitation_id>")
api.add_resource(MyInvitationList, "/invitations")
api.add_resource(InvitationAccept, "/invitations/<int:invitation_id>/accept")
api.add_resource(InvitationDecline, "/invitations/<int:invitation_id>/decline")
