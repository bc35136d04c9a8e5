import pytest

from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


def test_empty_channel_serves_noarch(server: Server) -> None:
    server.channel("empty")
    with server.client(None) as c:
        r = c.get("/api/repo/empty/noarch/repodata.json")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["packages"] == {} and body["packages.conda"] == {} and body["info"]["subdir"] == "noarch"
        assert c.get("/api/repo/empty/linux-64/repodata.json").status_code == 404
