"""The last enabled administrator cannot be demoted, disabled or deleted (by flag, grant, group or role), and
``condavault admin recover`` brings one back offline, audited."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import delete, update

from condavault.auth.login import apply_admin_password
from condavault.auth.models import Grant, User
from tests.support.accounts import ok
from tests.support.server import Server

PASSWORD = "admins-test-pass"


def _last_admin(r: object) -> None:
    assert r.status_code == 409 and r.json()["error"]["code"] == "last_admin", r.text  # type: ignore[attr-defined]


def test_the_last_administrator_stays(server: Server) -> None:
    with server.client() as c:
        _last_admin(c.patch("/api/users/admin", json={"is_admin": False}))
        ok(c.post("/api/users", json={"username": "ad-two", "password": PASSWORD, "is_admin": True}))
        two = c.post("/api/tokens", json={"user": "ad-two", "scopes": [{"scope": "api"}]}).json()["token"]
    with server.client(two) as c2:
        ok(c2.patch("/api/users/admin", json={"is_admin": False}))  # another admin remains: fine
        _last_admin(c2.patch("/api/users/ad-two", json={"is_admin": False}))
        # an administrator through a global grant to a group counts, and removing it is guarded the same way
        ok(c2.post("/api/users", json={"username": "ad-three", "password": PASSWORD}))
        ok(c2.post("/api/groups", json={"name": "ad-admins"}))
        ok(c2.put("/api/groups/ad-admins/members/ad-three"))
        ok(c2.post("/api/grants", json={"role": "admin", "group": "ad-admins"}))
        ok(c2.post("/api/roles", json={"name": "ad-super", "permissions": ["system:admin"]}))
        ok(c2.post("/api/grants", json={"role": "ad-super", "user": "ad-three"}))
        ok(c2.patch("/api/users/ad-two", json={"is_admin": False}))  # ad-three remains
    with server.client() as c:  # the bootstrap token belongs to the demoted admin now: no longer allowed
        assert c.patch("/api/users/ad-three", json={"disabled": True}).status_code == 403
    with server.client(two) as c2:  # demoted too
        assert c2.get("/api/users").status_code == 403
    with server.client(None) as c:
        r = c.post("/api/auth/login", json={"username": "ad-three", "password": PASSWORD, "issue_token": True})
        ok(r)
        three = r.json()["token"]
    with server.client(three) as c3:
        ok(c3.delete("/api/grants", params={"role": "ad-super", "user": "ad-three"}))  # the group grant remains
        _last_admin(c3.delete("/api/grants", params={"role": "admin", "group": "ad-admins"}))
        _last_admin(c3.delete("/api/groups/ad-admins/members/ad-three"))
        _last_admin(c3.delete("/api/groups/ad-admins"))
        ok(c3.post("/api/grants", json={"role": "ad-super", "user": "ad-three"}))
        ok(c3.delete("/api/grants", params={"role": "admin", "group": "ad-admins"}))
        _last_admin(c3.patch("/api/roles/ad-super", json={"permissions": ["channel:read"]}))
        _last_admin(c3.delete("/api/roles/ad-super"))
        assert c3.patch("/api/users/ad-three", json={"disabled": True}).status_code == 400  # not yourself
        ok(c3.post("/api/users", json={"username": "ad-four", "password": PASSWORD, "is_admin": True}))
        ok(c3.delete("/api/roles/ad-super"))  # ad-four remains
        assert c3.get("/api/whoami").json()["is_admin"] is False


def test_admin_recover_brings_an_administrator_back_offline(server: Server, tmp_path: Path) -> None:
    with server.ctx.db.write_session() as s:  # every administrator lost behind the API's back (e.g. LDAP)
        s.execute(update(User).values(is_admin=False))
        s.execute(delete(Grant).where(Grant.channel_id.is_(None)))
        s.execute(update(User).where(User.username == "admin").values(disabled=True))
    server.ctx.auth.invalidate()
    with server.client() as c:
        assert c.get("/api/users").status_code == 401  # the admin account is disabled: its token is dead
    proc = server.cli(
        "--data-dir",
        str(server.settings.data_dir),
        "admin",
        "recover",
        token=None,
        env={"CONDAVAULT_DATABASE_URL": server.settings.db_url},
        input="recovered-pass-1\n",
    )
    token = proc.stdout.strip().splitlines()[-1]
    assert token.startswith("cv-") and "admin:recover" in proc.stderr
    token_file = server.settings.admin_token_path
    assert token_file.read_text().strip() == token and token_file.stat().st_mode & 0o777 == 0o600
    server.ctx.auth.invalidate()
    with server.client(token) as c:
        me = c.get("/api/whoami").json()
        assert me["username"] == "admin" and me["is_admin"] is True
        ok(c.get("/api/users"))
        changes = c.get("/api/audit/changes", params={"action": "admin:recover"}).json()
        assert any(ch["action"] == "admin:recover" and ch["target"] == "admin" for ch in changes), changes
    # another account by name, with a password from stdin
    proc = server.cli(
        "--data-dir",
        str(server.settings.data_dir),
        "admin",
        "recover",
        "--user",
        "ad-rescue",
        "--password-stdin",
        token=None,
        env={"CONDAVAULT_DATABASE_URL": server.settings.db_url},
        input="rescue-password-1\n",
    )
    with server.client(None) as c:
        r = c.post(
            "/api/auth/login", json={"username": "ad-rescue", "password": "rescue-password-1", "issue_token": True}
        )
        ok(r)
        who = c.get("/api/whoami", headers={"Authorization": f"Bearer {r.json()['token']}"}).json()
        assert who["is_admin"] is True


def test_admin_password_from_the_environment_restores_the_admin_flag(server: Server) -> None:
    with server.ctx.db.write_session() as s:
        s.execute(update(User).where(User.username == "admin").values(is_admin=False, disabled=True))
    assert apply_admin_password(server.ctx.db, "env-admin-pass-1")  # what start-up does with it
    server.ctx.auth.invalidate()
    with server.client(None) as c:
        r = c.post("/api/auth/login", json={"username": "admin", "password": "env-admin-pass-1", "issue_token": True})
        ok(r)
        me = c.get("/api/whoami", headers={"Authorization": f"Bearer {r.json()['token']}"}).json()
        assert me["is_admin"] is True, json.dumps(me)
