"""py-rattler solves and installs from a private channel: token in the URL, bearer credentials file;
no token: 401, another group's token: 403."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.accounts import ok
from tests.support.server import Server

REPO = Path(__file__).resolve().parents[2]
PACKAGES = [f"noarch/{n}-{v}-0.conda" for n in ("dependency", "dependent", "another_dependent") for v in ("1.0", "2.0")]


@pytest.fixture(scope="module")
def private(shared_server: Server, packages_dir: Path) -> dict[str, str]:
    srv = shared_server
    srv.channel("rat-priv", "private")
    srv.channel("rat-other", "private")
    for p in PACKAGES:
        ok(srv.upload("rat-priv", packages_dir / p))
    tokens = {}
    with srv.client() as c:
        for group, user, chan in (("rat-team", "rat-dev", "rat-priv"), ("rat-others", "rat-stranger", "rat-other")):
            ok(c.post("/api/users", json={"username": user}))
            ok(c.post("/api/groups", json={"name": group}))
            ok(c.put(f"/api/groups/{group}/members/{user}"))
            ok(c.post(f"/api/channels/{chan}/grants", json={"role": "viewer", "group": group}))
            r = c.post("/api/tokens", json={"user": user, "scopes": [{"scope": "read"}]})
            ok(r)
            tokens[user] = r.json()["token"]
    return tokens


def rattler(url: str, prefix: Path, *, bearer: str | None = None, host: str = "") -> dict[str, object]:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RATTLER_")}
    args = [sys.executable, "-m", "tests.support.rattler_client", url, str(prefix), "another_dependent"]
    if bearer is not None:
        auth = prefix / "credentials.json"
        prefix.mkdir(parents=True, exist_ok=True)
        auth.write_text(json.dumps({host: {"BearerToken": bearer}}))
        env["RATTLER_AUTH_FILE"] = str(auth)
        args.append("--bearer")
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_token_in_the_url(shared_server: Server, private: dict[str, str], tmp_path: Path) -> None:
    out = rattler(f"{shared_server.repo}/t/{private['rat-dev']}/rat-priv", tmp_path / "a")
    assert "error" not in out, out
    names = {n.rsplit("-", 2)[0] for n in out["installed"]}  # type: ignore[union-attr]
    assert names == {"another_dependent", "dependent", "dependency"}


def test_bearer_token_from_the_credentials_file(shared_server: Server, private: dict[str, str], tmp_path: Path) -> None:
    host = "127.0.0.1"  # rattler keys credentials by host name, without the port
    out = rattler(f"{shared_server.repo}/rat-priv", tmp_path / "b", bearer=private["rat-dev"], host=host)
    assert "error" not in out, out
    assert any(n.startswith("another_dependent-2.0") for n in out["installed"])  # type: ignore[union-attr]


def test_without_a_token_401_and_with_another_groups_token_403(
    shared_server: Server, private: dict[str, str], tmp_path: Path
) -> None:
    out = rattler(f"{shared_server.repo}/rat-priv", tmp_path / "c")
    assert "401" in str(out.get("error")), out
    out = rattler(f"{shared_server.repo}/t/{private['rat-stranger']}/rat-priv", tmp_path / "d")
    assert "403" in str(out.get("error")), out
    # what rattler asked for, as the server saw it
    with shared_server.client(None) as c:
        r = c.get("/api/repo/rat-priv/noarch/repodata.json")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
