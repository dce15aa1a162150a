"""Text the database cannot store is a 422, never a 500 (api-contract: no 500 for any input)."""

import pytest


@pytest.mark.parametrize("raw", ['"\\ud800"', '"a\\udfffb"', '"x\\u0000y"'])
def test_unstorable_strings_are_422_and_nothing_is_stored(client, auth, raw):
    alice = auth.user("alice")
    body = '{"name": ' + raw + "}"
    r = client.post("/api/teams", data=body, content_type="application/json", headers=alice.headers)
    assert r.status_code == 422
    assert "name" in r.json["error"]["details"]
    assert client.get("/api/teams", headers=alice.headers).json["total"] == 0


def test_unpaired_surrogate_in_registration_is_422(client):
    body = '{"username": "bob", "email": "b@example.com", "password": "long-enough-1", "full_name": "\\udc00"}'
    r = client.post("/api/auth/register", data=body, content_type="application/json")
    assert r.status_code == 422 and "full_name" in r.json["error"]["details"]
