"""Records under pressure: same-filename races end in 200/409 (never 500, also on PostgreSQL), and malformed
index.json or imported records are refused with a 4xx naming the field, so no client ever sees them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.accounts import ok
from tests.support.packages import file_member, make_conda
from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

RACERS = 50


def _race(server: Server, paths: list[Path], **params: Any) -> list[int]:
    def one(path: Path) -> int:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=120
        ) as c:
            r = c.post(
                "/api/channels/rc-race/files", params={"filename": path.name, **params}, content=path.read_bytes()
            )
            assert r.status_code < 500, r.text
            return r.status_code

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(one, paths))


def test_fifty_uploads_of_one_filename_with_different_bytes(shared_server: Server, tmp_path: Path) -> None:
    srv = shared_server
    srv.channel("rc-race")
    variants = []
    for i in range(RACERS):
        d = tmp_path / str(i)
        d.mkdir()
        variants.append(make_conda(d, "racer", "1.0", "0", index_extra={"x_variant": i}))
    statuses = _race(srv, variants)
    assert statuses.count(200) == 1 and statuses.count(409) == RACERS - 1, statuses
    forced = _race(srv, variants, force=True)  # each replaces the last: 200, or a 409 to retry; never a 500
    assert set(forced) <= {200, 409} and forced.count(200) >= 1, forced
    srv.ctx.settle()
    with srv.client(None) as c:
        listed = c.get("/api/repo/rc-race/noarch/repodata.json").json()["packages.conda"]
        assert list(listed) == ["racer-1.0-0.conda"]
        body = c.get("/api/repo/rc-race/noarch/racer-1.0-0.conda").content
        assert hashlib.sha256(body).hexdigest() == listed["racer-1.0-0.conda"]["sha256"]
    with srv.client() as c:
        assert len(c.get("/api/channels/rc-race/files").json()) == 1


def _deep(levels: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(levels):
        value = {"x": value}
    return value  # type: ignore[no-any-return]


BAD_INDEX: list[tuple[str, dict[str, Any], str]] = [
    ("string-depends", {"depends": "python >=3.8"}, "depends"),
    ("string-timestamp", {"timestamp": "yesterday"}, "timestamp"),
    ("nul-in-dependency", {"depends": ["python\u0000evil"]}, "depends[0]"),
    ("negative-build-number", {"build_number": -1}, "build_number"),
    ("empty-subdir", {"subdir": ""}, "subdir"),
    ("huge-build-number", {"build_number": 10**30}, "build_number"),
    ("huge-timestamp", {"timestamp": 10**30}, "timestamp"),
    ("bad-matchspec", {"depends": ["numpy >=1,,"]}, "depends[0]"),
    ("string-constrains", {"constrains": "numpy <2"}, "constrains"),
    ("too-many-depends", {"depends": [f"pkg{i}" for i in range(5000)]}, "depends"),
    ("nested-too-deep", {"x_extra": _deep(40)}, "x_extra"),
    ("lone-surrogate", {"license": "\udc80"}, "license"),
    ("bool-build-number", {"build_number": True}, "build_number"),
    ("noarch-unknown", {"noarch": "ruby"}, "noarch"),
]


@pytest.fixture(scope="module")
def bad_channel(shared_server: Server) -> str:
    return shared_server.channel("rc-bad")


@pytest.mark.parametrize(("case", "extra", "field"), BAD_INDEX, ids=[c[0] for c in BAD_INDEX])
def test_malformed_index_json_is_refused_naming_the_field(
    shared_server: Server, bad_channel: str, tmp_path: Path, case: str, extra: dict[str, Any], field: str
) -> None:
    srv = shared_server
    extra = dict(extra)
    subdir = extra.pop("subdir", "linux-64" if "noarch" in extra else "noarch")
    path = make_conda(tmp_path, f"bad-{case}", "1.0", "0", subdir, index_extra=extra)
    r = srv.upload(bad_channel, path)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_index_json" and error["details"]["field"] == field, error


def test_hostile_index_json_documents(shared_server: Server, tmp_path: Path) -> None:
    """Nesting that blows the parser's stack and an index.json of 10 MB: 400s, not 500s."""
    srv = shared_server
    srv.channel("rc-doc")
    deep = b'{"name": "deepdoc", "version": "1.0", "build": "0", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = json.dumps(
        {
            "name": "hugedoc",
            "version": "1.0",
            "build": "0",
            "subdir": "noarch",
            "noarch": "generic",
            "depends": ["a" * 100] * 100_000,
        }
    ).encode()
    for name, raw in (("deepdoc", deep), ("hugedoc", huge)):
        path = make_conda(tmp_path, name, "1.0", "0", info_extra=[file_member("info/index.json", raw)])
        r = srv.upload("rc-doc", path)
        assert r.status_code == 400, r.text
    # the channel still solves with py-rattler
    ok(srv.upload("rc-doc", make_conda(tmp_path, "fine", "1.0", "0")))
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.rattler_client", f"{srv.repo}/rc-doc", str(tmp_path / "solve"), "fine"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]).get("installed") == ["fine-1.0-0"], out.stdout + out.stderr


def test_imported_records_are_validated_too(shared_server: Server) -> None:
    srv = shared_server
    srv.channel("rc-import")
    good = {
        "name": "ok",
        "version": "1.0",
        "build": "0",
        "build_number": 0,
        "depends": ["python"],
        "sha256": "0" * 64,
        "md5": "0" * 32,
        "size": 10,
        "subdir": "noarch",
    }
    with srv.client() as c:
        for bad, field in (
            ({"depends": "python"}, "depends"),
            ({"build_number": 10**30}, "build_number"),
            ({"timestamp": "x"}, "timestamp"),
            ({"depends": ["a\u0000b"]}, "depends[0]"),
            ({"sha256": 2**70}, "sha256"),  # was a 500: the database refused the integer
            ({"sha256": "z" * 64}, "sha256"),
            ({"md5": ["0" * 32]}, "md5"),
            ({"x_extra": {"n": 2**70}}, "x_extra"),  # passed, then every index run failed on the shard's msgpack
        ):
            body = {"packages.conda": {"ok-1.0-0.conda": {**good, **bad}}}
            r = c.post("/api/channels/rc-import/subdirs/noarch/import", json=body)
            assert r.status_code == 400 and r.json()["error"]["details"]["field"] == field, r.text
        legacy = {**good, "depends": None, "constrains": None, "license": None}  # real old repodata has nulls
        ok(c.post("/api/channels/rc-import/subdirs/noarch/import", json={"packages.conda": {"ok-1.0-0.conda": legacy}}))


def test_patch_instructions_cannot_break_the_subdir(shared_server: Server) -> None:
    """A patch is applied to served records: one that would serve a record no client can read (a string
    ``depends``, a checksum that is no hex, an integer msgpack cannot encode) is refused whole, 400."""
    srv = shared_server
    srv.channel("rc-patch")
    good = {"name": "ok", "version": "1.0", "build": "0", "build_number": 0, "depends": [], "subdir": "noarch"}
    good.update(sha256="0" * 64, md5="0" * 32, size=10)
    with srv.client() as c:
        ok(c.post("/api/channels/rc-patch/subdirs/noarch/import", json={"packages.conda": {"ok-1.0-0.conda": good}}))
        url = "/api/channels/rc-patch/subdirs/noarch/patch-instructions"
        for bad, field in (
            ({"packages.conda": {"ok-1.0-0.conda": {"depends": "python"}}}, "depends"),
            ({"packages.conda": {"ok-1.0-0.conda": {"x": 2**70}}}, "x"),
            ({"packages.conda": {"ok-1.0-0.conda": {"sha256": 12}}}, "sha256"),
            ({"packages": {"ok-1.0-0.tar.bz2": {"timestamp": -5}}}, "timestamp"),
            ({"packages.conda": {"ok-1.0-0.conda": "not an object"}}, None),
            ({"remove": "ok-1.0-0.conda"}, None),  # a string, not a list: would remove by its characters
        ):
            r = c.put(url, json=bad)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["code"] == "invalid_patch_instructions" and error["details"].get("field") == field, error
        assert c.get(url).json() == {}  # nothing stored
        ok(c.put(url, json={"packages.conda": {"ok-1.0-0.conda": {"depends": ["python >=3.8"]}}}))
        srv.ctx.settle()
        served = c.get("/api/repo/rc-patch/noarch/repodata.json").json()["packages.conda"]["ok-1.0-0.conda"]
        assert served["depends"] == ["python >=3.8"]
