def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json == {"status": "ok"}


def test_register_login_profile(client, auth):
    s = auth.user("alice")
    r = client.get("/api/auth/profile", headers=s.headers)
    assert r.status_code == 200
    assert r.json["username"] == "alice"
    assert r.json["created_at"].endswith("Z")
