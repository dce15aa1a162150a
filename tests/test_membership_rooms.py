"""Team room membership follows REST changes live (REST -> event -> fan-out -> rooms)."""

from __future__ import annotations

from tests.test_realtime import rooms_of


def test_creating_a_team_joins_the_creators_open_connections(client, auth, sio):  # noqa: F811
    alice = auth.user("alice")
    conn = sio(alice.access_token)
    r = client.post("/api/teams", json={"name": "Core"}, headers=alice.headers)
    assert r.status_code == 201
    assert f"team:{r.json['id']}" in rooms_of(conn)


def test_deleting_a_team_removes_members_connections_from_its_room(client, auth, sio):  # noqa: F811
    alice, bob = auth.user("alice"), auth.user("bob")
    team_id = client.post("/api/teams", json={"name": "Core"}, headers=alice.headers).json["id"]
    inv = client.post(f"/api/teams/{team_id}/invitations", json={"email": bob.user["email"]},
                      headers=alice.headers).json
    assert client.post(f"/api/invitations/{inv['id']}/accept", headers=bob.headers).status_code == 200
    bob_conn = sio(bob.access_token)
    assert f"team:{team_id}" in rooms_of(bob_conn)

    assert client.delete(f"/api/teams/{team_id}", headers=alice.headers).status_code == 204
    assert f"team:{team_id}" not in rooms_of(bob_conn)
