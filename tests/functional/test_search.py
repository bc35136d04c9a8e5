"""Search over real HTTP: relevance on the real test packages, every query form, bad input, and exactly
the channels each identity may read (results, totals, facets, suggestions)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conda_package_streaming import package_streaming

from tests.support.accounts import ok
from tests.support.packages import file_member, make_conda
from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

ALL = "sr-all"
SECRET = "sr-secret"
OTHER = "sr-other"
ZLIB = "linux-64/zlib-1.2.11-h7b6447c_3.conda"
CVE_FILE = ("vulns", "nvd", "fkie-cad", "CVE-2022", "CVE-2022-374xx", "CVE-2022-37434.json")


def _paths_json(archive: Path) -> dict[str, Any]:
    for tar, member in package_streaming.stream_conda_info(str(archive)):
        if member.name == "info/paths.json":
            fh = tar.extractfile(member)
            assert fh is not None
            return json.loads(fh.read())  # type: ignore[no-any-return]
    raise AssertionError("no paths.json")


@pytest.fixture(scope="module")
def world(
    shared_server: Server, packages_dir: Path, tmp_path_factory: pytest.TempPathFactory, testdata: Path
) -> Iterator[dict[str, Any]]:
    srv = shared_server
    tmp = tmp_path_factory.mktemp("search-pkgs")
    srv.channel(ALL)
    srv.channel(SECRET, privacy="private")
    srv.channel(OTHER)
    files = sorted(p for p in packages_dir.glob("*/*") if p.name.endswith((".conda", ".tar.bz2")))
    proc = srv.cli("upload", ALL, *map(str, files), timeout=900)
    assert "302 created" in proc.stdout, proc.stdout + proc.stderr
    secret = make_conda(
        tmp,
        "topsecret-widget",
        "3.1",
        "0",
        index_extra={"license": "Secret-License-1.0"},
        pkg_members=[
            file_member("lib/libtopsecret.so.7", b"classified"),
            file_member("bin/.topsecret-widget-post-link.sh", b"echo hi"),
        ],
        paths_json={
            "paths_version": 1,
            "paths": [
                {
                    "_path": "lib/libtopsecret.so.7",
                    "path_type": "hardlink",
                    "size_in_bytes": 10,
                    "sha256": hashlib.sha256(b"classified").hexdigest(),
                },
                {
                    "_path": "bin/.topsecret-widget-post-link.sh",
                    "path_type": "hardlink",
                    "size_in_bytes": 7,
                    "sha256": hashlib.sha256(b"echo hi").hexdigest(),
                },
            ],
        },
    )
    other = make_conda(tmp, "otherchan-tool", "1.0", "0")
    ok(srv.upload(SECRET, secret))
    ok(srv.upload(SECRET, packages_dir / ZLIB))  # the same bytes as in ALL: must not show through
    ok(srv.upload(OTHER, other))
    tokens: dict[str, str | None] = {"anonymous": None, "admin": srv.admin_token}
    with srv.client() as c:
        for user in ("sr-outsider", "sr-member"):
            ok(c.post("/api/users", json={"username": user, "password": "search-password"}))
            r = c.post("/api/tokens", json={"user": user, "scopes": [{"scope": "api"}]})
            ok(r)
            tokens[user] = r.json()["token"]
        ok(c.post("/api/groups", json={"name": "sr-team"}))
        ok(c.put("/api/groups/sr-team/members/sr-member"))
        ok(c.post(f"/api/channels/{SECRET}/grants", json={"role": "viewer", "group": "sr-team"}))
        r = c.post("/api/tokens", json={"user": "sr-member", "scopes": [{"scope": "read", "channels": [OTHER]}]})
        ok(r)
        tokens["scoped"] = r.json()["token"]
        r = c.post("/api/cves/sync", json={"sources": [str(testdata.joinpath(*CVE_FILE))]})
        ok(r)
    yield {"srv": srv, "tokens": tokens, "secret": secret, "packages": packages_dir}


def _client(world: dict[str, Any], who: str = "anonymous") -> httpx.Client:
    tok = world["tokens"][who]
    return httpx.Client(
        base_url=world["srv"].url, headers={"Authorization": f"Bearer {tok}"} if tok else {}, timeout=60
    )


def search(world: dict[str, Any], q: str, who: str = "anonymous", **params: Any) -> dict[str, Any]:
    with _client(world, who) as c:
        r = c.get("/api/search", params={"q": q, **params})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def names(res: dict[str, Any]) -> list[str]:
    return [r["name"] for r in res["results"]]


# -- relevance on the real packages --------------------------------------------------------------------


def test_exact_name_first_then_prefix_then_fuzzy(world: dict[str, Any]) -> None:
    got = names(search(world, "jupyter", channel=ALL))
    assert got[:2] == ["jupyter", "jupyter-core"]
    got = names(search(world, "package", channel=ALL, per_page=100))
    assert got[0] == "package"
    prefixed = [n for n in got if n.startswith("package")]
    assert got[: len(prefixed)] == prefixed  # every prefix match before any other kind of match
    assert {"package-a", "package2", "package3", "package4", "package-unix"} <= set(prefixed)
    got = names(search(world, "dummy-", channel=ALL, per_page=100))
    assert set(got[:11]) >= {"dummy-a", "dummy-b", "dummy-c", "dummy-d"}


def test_prefix_finds_the_longer_name(world: dict[str, Any]) -> None:
    res = search(world, "jupyter-cor")
    assert names(res)[0] == "jupyter-core"
    assert res["query_kind"] == "text"
    top = res["results"][0]
    assert top["version"] == "0.2.0"  # the newest of its builds is the one shown
    assert top["channel"] == ALL


def test_a_typo_still_finds_the_package_and_suggests_it(world: dict[str, Any]) -> None:
    res = search(world, "zlibb")
    assert "zlib" in names(res)
    assert res["suggestion"] == "zlib"
    res = search(world, "clobber-nestd-1")
    assert names(res)[0] == "clobber-nested-1"
    assert search(world, "zlib")["suggestion"] is None  # an exact name needs no suggestion


def test_text_matches_summary_and_description(world: dict[str, Any]) -> None:
    res = search(world, "lossless data-compression")  # zlib's description, not its name
    assert "zlib" in names(res)


def test_results_carry_the_contract_fields(world: dict[str, Any]) -> None:
    res = search(world, "zlib", channel=ALL, subdir="linux-64")
    assert res["total"] >= 1 and res["page"] == 1 and res["per_page"] == 20
    top = res["results"][0]
    for key in (
        "channel",
        "name",
        "version",
        "build",
        "subdir",
        "summary",
        "license",
        "max_score",
        "cves",
        "timestamp",
        "filename",
        "sha256",
        "matched",
    ):
        assert key in top, key
    assert (top["name"], top["subdir"], top["license"]) == ("zlib", "linux-64", "zlib")
    assert top["cves"] >= 1 and top["max_score"] >= 9.0  # CVE-2022-37434 (9.8)
    assert res["facets"]["score_band"].get("critical", 0) >= 1
    assert set(res["facets"]["subdir"]) >= {"linux-64", "osx-64", "win-32", "win-64"}  # ignores its own filter


def test_score_band_filter(world: dict[str, Any]) -> None:
    everything = search(world, "", channel=ALL, per_page=100)
    bands = everything["facets"]["score_band"]
    assert bands.get("critical", 0) >= 1 and bands.get("none", 0) >= 1
    critical = search(world, "", channel=ALL, score="critical", per_page=100)
    assert critical["total"] == bands["critical"]
    assert critical["results"] and all(r["max_score"] >= 9.0 for r in critical["results"])
    assert "zlib" in names(critical)
    assert critical["facets"]["score_band"] == bands  # the facet ignores its own filter
    assert sum(critical["facets"]["channel"].values()) == critical["total"]  # the others honour it
    unaffected = search(world, "", channel=ALL, score="none", per_page=100)
    assert "zlib" not in names(unaffected) and unaffected["total"] == bands["none"]
    assert all(r["max_score"] is None for r in unaffected["results"])
    with _client(world) as c:
        r = c.get("/api/search", params={"q": "zlib", "score": "severe"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
        # the UI: every facet value, the score band included, is a link that filters
        page = c.get("/search", params={"q": "zlib", "channel": ALL})
        assert page.status_code == 200
        assert f'href="/search?q=zlib&amp;channel={ALL}&amp;score=critical' in page.text
        filtered = c.get("/search", params={"q": "zlib", "channel": ALL, "score": "critical"})
        assert filtered.status_code == 200 and 'aria-label="Remove filter critical"' in filtered.text
        assert c.get("/search", params={"q": "zlib", "score": "severe"}).status_code in (400, 422)


def test_stable_paging(world: dict[str, Any]) -> None:
    full = names(search(world, "clobber", channel=ALL, per_page=100))
    assert len(full) > 10
    pages = []
    for page in range(1, 5):
        pages += names(search(world, "clobber", channel=ALL, per_page=5, page=page))
    assert pages == full[:20]
    assert names(search(world, "", channel=ALL, sort="name", per_page=5)) == sorted(
        names(search(world, "", channel=ALL, sort="name", per_page=5))
    )


# -- MatchSpecs and field queries ---------------------------------------------------------------------


def test_matchspec(world: dict[str, Any]) -> None:
    res = search(world, "jupyter-core >=0.2", channel=ALL)
    assert res["query_kind"] == "matchspec"
    assert names(res) == ["jupyter-core"] and res["results"][0]["version"] == "0.2.0"
    res = search(world, "jupyter-core <0.2", channel=ALL)
    assert res["results"][0]["version"] == "0.1.0"
    res = search(world, "zlib 1.2.11 h7b6447c*", channel=ALL)
    assert res["results"][0]["subdir"] == "linux-64" and res["facets"]["subdir"] == {"linux-64": 1}
    res = search(world, f"{ALL}::zlib[subdir=win-64]")
    assert [(r["channel"], r["subdir"]) for r in res["results"]] == [(ALL, "win-64")]
    assert search(world, "zlib >=2", channel=ALL)["total"] == 0


def test_path_sha256_purl_license_has_cve(world: dict[str, Any]) -> None:
    res = search(world, "path:lib/libz.so.1", channel=ALL)
    assert names(res) == ["zlib"] and res["facets"]["subdir"] == {"linux-64": 1}
    assert res["results"][0]["matched"] == "path:lib/libz.so.1"
    flask = search(world, "path:site-packages/flask/app.py", channel=ALL)  # info/files only (no paths.json)
    assert names(flask) == ["flask"]
    archive = world["packages"] / ZLIB
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    res = search(world, f"sha256:{sha}")
    assert [(r["channel"], r["filename"]) for r in res["results"]] == [(ALL, archive.name)]
    inner = next(e for e in _paths_json(archive)["paths"] if e["_path"] == "include/zlib.h")["sha256"]
    res = search(world, f"sha256:{inner}", channel=ALL)
    assert names(res) == ["zlib"] and res["results"][0]["matched"].endswith("include/zlib.h")
    res = search(world, f"pkg:conda/{ALL}/jupyter-core@0.1.0")
    assert names(res) == ["jupyter-core"] and res["results"][0]["version"] == "0.1.0"
    res = search(world, "pkg:conda/jupyter-core@0.1.0?subdir=osx-arm64")
    assert [r["subdir"] for r in res["results"]] == ["osx-arm64"]
    assert "flask" in names(search(world, "license:bsd", channel=ALL, per_page=100))
    got = names(search(world, "has:post-link", channel=ALL, per_page=100))
    assert "post-link-script-package" in got and "zlib" not in got
    res = search(world, "cve:CVE-2022-37434")
    assert names(res) == ["zlib"] and res["facets"]["subdir"]["linux-64"] == 1
    assert res["facets"]["score_band"] == {"critical": 1}
    res = search(world, "license:zlib has:cves")  # field terms combine
    assert names(res) == ["zlib"]


def test_provides_and_files(world: dict[str, Any]) -> None:
    with _client(world) as c:
        r = c.get("/api/search/provides", params={"path": "lib/libz.so.1"})
        ok(r, 200)
        body = r.json()
    assert body["total"] == 2  # .conda and .tar.bz2 in the public channel (the private copy stays hidden)
    assert {x["channel"] for x in body["results"]} == {ALL}
    assert all(x["size"] and len(x["sha256"]) == 64 for x in body["results"])
    srv: Server = world["srv"]
    dom = srv.ctx.domains.search
    with srv.ctx.db.session() as s:
        from sqlalchemy import select

        from condavault.channels.models import Channel, Record

        cid = s.scalar(select(Channel.id).where(Channel.name == ALL))
        rid = s.scalar(select(Record.id).where(Record.channel_id == cid, Record.filename == Path(ZLIB).name))
    assert cid is not None and rid is not None
    files = dom.files(cid, rid)
    assert [f["path"] for f in files][:3] == ["include/zconf.h", "include/zlib.h", "lib/libz.a"]
    assert len(files) == 7 and dom.files(cid, rid, offset=6, limit=5)[0]["path"] == "lib/pkgconfig/zlib.pc"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"q": "sha256:abc"}, "invalid_query"),
        ({"q": "has:nothing"}, "invalid_query"),
        ({"q": "path:"}, "invalid_query"),
        ({"q": "cve:'; drop"}, "invalid_query"),
        ({"q": "pkg:npm/left-pad"}, "invalid_query"),
        ({"q": "numpy >=1.2,,<<"}, "invalid_query"),
        ({"q": "x", "subdir": "linux-../x"}, "invalid_query"),
        ({"q": "x" * 501}, "validation_error"),
        ({"q": "x", "page": 0}, "validation_error"),
        ({"q": "x", "per_page": 1000}, "validation_error"),
        ({"q": "x", "sort": "random"}, "validation_error"),
    ],
)
def test_bad_queries_are_precise_4xx(world: dict[str, Any], params: dict[str, Any], code: str) -> None:
    with _client(world) as c:
        r = c.get("/api/search", params=params)
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"]["code"] == code
    if r.status_code == 400:
        assert r.json()["error"]["message"]


def test_odd_but_valid_text_is_not_an_error(world: dict[str, Any]) -> None:
    for q in ['"zlib"', "a", "ab", "%_%", "zlib OR 1=1", "NEAR(", "ü-ß", "*", "name : x", "\\"]:
        with _client(world) as c:
            r = c.get("/api/search", params={"q": q})
        assert r.status_code in (200, 400), (q, r.text)


# -- exactly the channels the caller may read ----------------------------------------------------------

SECRET_QUERIES = [
    "topsecret-widget",
    "topsecret",
    "topsecret-widgett",
    "path:lib/libtopsecret.so.7",
    "license:Secret-License-1.0",
    "has:post-link",
    "pkg:conda/sr-secret/topsecret-widget",
    "topsecret-widget >=1",
    "zlib",
]


@pytest.mark.parametrize(
    ("who", "sees_secret"),
    [
        ("anonymous", False),
        ("sr-outsider", False),
        ("sr-member", True),
        ("scoped", False),
        ("admin", True),
    ],
)
def test_private_channels_never_leak(world: dict[str, Any], who: str, sees_secret: bool) -> None:
    secret_sha = hashlib.sha256(world["secret"].read_bytes()).hexdigest()
    for q in [*SECRET_QUERIES, f"sha256:{secret_sha}", ""]:
        res = search(world, q, who, per_page=100)
        channels = {r["channel"] for r in res["results"]} | set(res["facets"]["channel"])
        assert (SECRET in channels) == sees_secret, (who, q, res)
        if not sees_secret:
            assert "topsecret-widget" not in names(res)
            assert res["suggestion"] != "topsecret-widget"
            assert "Secret-License-1.0" not in res["facets"]["license"]
        if who == "scoped":
            assert channels <= {OTHER}, (q, channels)
    if sees_secret:
        assert search(world, "topsecret-widgett", who)["suggestion"] == "topsecret-widget"
        assert names(search(world, "topsecret", who)) == ["topsecret-widget"]
    with _client(world, who) as c:
        body = c.get("/api/search/provides", params={"path": "lib/libtopsecret.so.7"}).json()
        assert (body["total"] == 1) == sees_secret
        r = c.get("/api/search", params={"q": "zlib", "channel": SECRET})
        assert r.status_code == (200 if sees_secret else 404 if who in ("anonymous", "scoped") else 403) or (
            not sees_secret and r.status_code in (401, 403, 404)
        ), r.text
        if not sees_secret:
            assert "topsecret" not in r.text


def test_reindex_is_admin_only_and_rebuilds(world: dict[str, Any]) -> None:
    with _client(world, "sr-outsider") as c:
        assert c.post("/api/search/reindex").status_code == 403
    with _client(world) as c:
        assert c.post("/api/search/reindex").status_code == 401
    srv: Server = world["srv"]
    before = search(world, "jupyter", channel=ALL)
    got = srv.ctx.domains.search.reindex()
    assert got["channels"] >= 3
    assert search(world, "jupyter", channel=ALL)["results"] == before["results"]
