"""Dependants from the dependency-name index (``record_depends``): filled by every writer of records
(upload, metadata import, copy, move, mirror-style refresh), emptied by removals, backfilled by the
migration, and listed (API and UI) only from the channels the caller may read."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from condavault.db import migrate
from condavault.db.session import make_engine
from tests.support.accounts import Accounts, grant_channel, make_accounts, ok
from tests.support.packages import make_conda
from tests.support.server import Server, database_url, drop_pg_database

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

WHO = ("anonymous", "outsider", "member", "admin")


def dependants(c: httpx.Client, channel: str, name: str, **params: Any) -> dict[str, Any]:
    r = c.get(f"/api/channels/{channel}/packages/{name}/dependants", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def pairs(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(d["channel"], d["name"]) for d in body["dependants"]}


@pytest.fixture(scope="module")
def world(shared_server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Server, Accounts, dict[str, str]]:
    srv = shared_server
    tag = uuid.uuid4().hex[:6]
    acc = make_accounts(srv, f"dp{tag}")
    ch = {p: srv.channel(f"dp{p[:4]}-{tag}", p) for p in ("public", "authenticated", "private")}
    grant_channel(srv, acc, ch["private"])
    work = tmp_path_factory.mktemp("dp")
    ok(srv.upload(ch["public"], make_conda(work, "dplib", "1.0", "0")))
    for v in ("1.0", "2.0"):  # the newest build's spec is the one listed
        ok(
            srv.upload(
                ch["public"], make_conda(work, "dptool", v, "0", index_extra={"depends": [f"dplib >={v}", "python"]})
            )
        )
    ok(srv.upload(ch["authenticated"], make_conda(work, "dpauth", "1.0", "0", index_extra={"depends": ["dplib"]})))
    ok(
        srv.upload(
            ch["private"], make_conda(work, f"dpsecret{tag}", "1.0", "0", index_extra={"depends": ["dplib 1.*"]})
        )
    )
    return srv, acc, ch


@pytest.mark.parametrize("who", WHO)
def test_only_readable_channels(world: tuple[Server, Accounts, dict[str, str]], who: str) -> None:
    srv, acc, ch = world
    secret = f"dpsecret{ch['public'][-6:]}"
    with httpx.Client(base_url=srv.url, headers=acc.headers(who), timeout=60) as c:
        body = dependants(c, ch["public"], "dplib")
        want = {(ch["public"], "dptool")}
        if who != "anonymous":
            want.add((ch["authenticated"], "dpauth"))
        if who in ("member", "admin"):
            want.add((ch["private"], secret))
        assert pairs(body) == want
        assert body["total"] == len(want) and body["total_capped"] is False
        assert ch["private"] not in json.dumps(body) or who in ("member", "admin")
        tool = next(d for d in body["dependants"] if d["name"] == "dptool")
        assert tool == {"channel": ch["public"], "name": "dptool", "version": "2.0", "spec": "dplib >=2.0"}
        # the private channel's own package: the same 404 as a missing channel for those who may not read it
        r = c.get(f"/api/channels/{ch['private']}/packages/{secret}/dependants")
        files = c.get(f"/api/channels/{ch['private']}/files")  # the same answer as every channel route
        assert (
            r.status_code
            == files.status_code
            == (200 if who in ("member", "admin") else 401 if who == "anonymous" else 403)
        ), r.text
        assert secret not in r.text or who in ("member", "admin")
        missing = c.get(f"/api/channels/{ch['public']}/packages/dp-nothing/dependants")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "package_not_found"
        # the web page: same list, no private name for those who may not read it
        page = c.get(f"/channels/{ch['public']}/packages/dplib")
        assert page.status_code == 200
        assert ("dpauth" in page.text) == (who != "anonymous")
        assert (secret in page.text) == (who in ("member", "admin"))
        assert ch["private"] not in page.text or who in ("member", "admin")


def test_paging_and_bounds(world: tuple[Server, Accounts, dict[str, str]]) -> None:
    srv, _acc, ch = world
    with srv.client() as c:
        first = dependants(c, ch["public"], "dplib", limit=1)
        second = dependants(c, ch["public"], "dplib", limit=1, offset=1)
        assert first["total"] == second["total"] == 3
        assert len(first["dependants"]) == len(second["dependants"]) == 1
        assert first["dependants"] != second["dependants"]
        names = [d["name"] for d in dependants(c, ch["public"], "dplib")["dependants"]]
        assert names == sorted(names)
        for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": 2**40}):
            r = c.get(f"/api/channels/{ch['public']}/packages/dplib/dependants", params=params)
            assert r.status_code == 422, (params, r.text)
        r = c.get(f"/api/channels/{ch['public']}/packages/{'x' * 101}/dependants")
        assert r.status_code == 422
        # python is depended on but is not a package of that channel: 404, as for any missing package
        assert c.get(f"/api/channels/{ch['public']}/packages/python/dependants").status_code == 404


def test_index_follows_every_writer(
    world: tuple[Server, Accounts, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    srv, _acc, _ch = world
    tag = uuid.uuid4().hex[:6]
    a, b = srv.channel(f"dpa-{tag}"), srv.channel(f"dpb-{tag}")
    work = tmp_path_factory.mktemp("dpw")
    ok(srv.upload(a, make_conda(work, "dpbase", "1.0", "0")))
    ok(srv.upload(b, make_conda(work, "dpbase", "1.0", "0")))
    ok(srv.upload(a, make_conda(work, "dpuser", "1.0", "0", index_extra={"depends": ["dpbase >=1"]})))
    with srv.client() as c:
        assert pairs(dependants(c, a, "dpbase")) == {(a, "dpuser")}
        # copy: the copy depends too
        ok(c.post(f"/api/channels/{a}/files/copy", json={"to": b, "files": ["noarch/dpuser-1.0-0.conda"]}))
        assert pairs(dependants(c, a, "dpbase")) == {(a, "dpuser"), (b, "dpuser")}
        # remove: gone with the record
        ok(c.post(f"/api/channels/{b}/files/remove", json={"files": ["noarch/dpuser-1.0-0.conda"]}))
        assert pairs(dependants(c, a, "dpbase")) == {(a, "dpuser")}
        # move: follows the record to its new channel
        ok(
            c.post(
                f"/api/channels/{a}/files/copy", json={"to": b, "files": ["noarch/dpuser-1.0-0.conda"], "move": True}
            )
        )
        assert pairs(dependants(c, a, "dpbase")) == {(b, "dpuser")}
        # metadata-only import (no archive): its depends count as well
        repodata = {
            "info": {"subdir": "linux-64"},
            "packages": {},
            "packages.conda": {
                "dpimported-3.0-h1_0.conda": {
                    "name": "dpimported",
                    "version": "3.0",
                    "build": "h1_0",
                    "build_number": 0,
                    "depends": ["dpbase 1.0.*", "libzz"],
                    "subdir": "linux-64",
                    "sha256": "ab" * 32,
                    "md5": "cd" * 16,
                    "size": 10,
                }
            },
        }
        ok(
            c.post(
                f"/api/channels/{a}/subdirs/linux-64/import",
                content=json.dumps(repodata),
                headers={"Content-Type": "application/json"},
            )
        )
        body = dependants(c, a, "dpbase")
        assert pairs(body) == {(b, "dpuser"), (a, "dpimported")}
        assert next(d for d in body["dependants"] if d["name"] == "dpimported")["spec"] == "dpbase 1.0.*"
        # a deleted channel takes its rows with it
        ok(c.delete(f"/api/channels/{b}"))
        assert pairs(dependants(c, a, "dpbase")) == {(a, "dpimported")}
    with srv.ctx.db.session() as s:  # nothing left behind for the deleted channel's records
        orphans = s.execute(
            sa.text(
                "SELECT count(*) FROM record_depends d LEFT JOIN records r ON r.id = d.record_id WHERE r.id IS NULL"
            )
        ).scalar()
    assert orphans == 0


def test_dependants_follow_the_patched_depends(
    world: tuple[Server, Accounts, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A repodata patch that changes a record's ``depends`` (how conda-forge fixes pins) or removes it
    changes its package page's dependants: they follow what clients install, not the archive's index.json."""
    srv, _acc, _ch = world
    tag = uuid.uuid4().hex[:6]
    a = srv.channel(f"dpp-{tag}")
    work = tmp_path_factory.mktemp("dpp")
    ok(srv.upload(a, make_conda(work, "dppold", "1.0", "0")))
    ok(srv.upload(a, make_conda(work, "dppnew", "2.0", "0")))
    ok(srv.upload(a, make_conda(work, "dppuser", "1.0", "0", index_extra={"depends": ["dppold >=1"]})))
    ok(srv.upload(a, make_conda(work, "dppkeep", "1.0", "0", index_extra={"depends": ["dppold"]})))
    fn = "dppuser-1.0-0.conda"
    with srv.client() as c:
        assert pairs(dependants(c, a, "dppold")) == {(a, "dppuser"), (a, "dppkeep")}
        patch = {"patch_instructions_version": 1, "packages.conda": {fn: {"depends": ["dppnew 2.*"]}}}
        ok(c.put(f"/api/channels/{a}/subdirs/noarch/patch-instructions", json=patch))
        assert pairs(dependants(c, a, "dppold")) == {(a, "dppkeep")}
        assert pairs(dependants(c, a, "dppnew")) == {(a, "dppuser")}
        # a record uploaded after the patch is indexed with it too (a rebuild of the same file name)
        ok(c.post(f"/api/channels/{a}/files/remove", json={"files": [f"noarch/{fn}"]}))
        ok(srv.upload(a, make_conda(work, "dppuser", "1.0", "0", index_extra={"depends": ["dppold >=1"]})))
        assert pairs(dependants(c, a, "dppnew")) == {(a, "dppuser")}
        assert pairs(dependants(c, a, "dppold")) == {(a, "dppkeep")}
        # a patch that removes the record: no longer anyone's dependant; dropping the patches restores it
        gone = {"patch_instructions_version": 1, "remove": [fn]}
        ok(c.put(f"/api/channels/{a}/subdirs/noarch/patch-instructions", json=gone))
        assert pairs(dependants(c, a, "dppnew")) == set()
        ok(c.put(f"/api/channels/{a}/subdirs/noarch/patch-instructions", json={}))
        assert pairs(dependants(c, a, "dppold")) == {(a, "dppuser"), (a, "dppkeep")}


def test_migration_backfills(tmp_path: Path, db_backend: str) -> None:
    url, pg_name = database_url(db_backend, tmp_path)
    try:
        migrate.upgrade(url, "0012_index_scale")
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO channels (id, name, privacy, description, created_at) "
                        "VALUES (1, 'old', 'public', '', CURRENT_TIMESTAMP)"
                    )
                )
                for i, deps in enumerate([["zlib >=1.2", "python 3.11.*", "zlib"], [], None, ["conda-forge::zlib"]]):
                    rec = {"name": f"p{i}", "version": "1", "build": "0"}
                    if deps is not None:
                        rec["depends"] = deps
                    conn.execute(
                        sa.text(
                            "INSERT INTO records (id, channel_id, subdir, filename, name, version, build, "
                            "build_number, "
                            "record, fragment, indexed_timestamp, has_blob, removed, created_at) VALUES (:id, 1, "
                            "'noarch', :fn, :name, '1', '0', 0, :rec, '', 0, false, false, CURRENT_TIMESTAMP)"
                        ),
                        {"id": i + 1, "fn": f"p{i}-1-0.conda", "name": f"p{i}", "rec": json.dumps(rec)},
                    )
                conn.execute(
                    sa.text(  # a record whose text is not JSON: skipped, not a failed upgrade
                        "INSERT INTO records (id, channel_id, subdir, filename, name, version, build, "
                        "build_number, "
                        "record, fragment, indexed_timestamp, has_blob, removed, created_at) VALUES (9, 1, 'noarch', "
                        "'bad-1-0.conda', 'bad', '1', '0', 0, 'not json', '', 0, false, false, CURRENT_TIMESTAMP)"
                    )
                )
            migrate.upgrade(url)
            with engine.connect() as conn:
                rows = set(
                    conn.execute(
                        sa.text("SELECT record_id, name, channel_id, dependant, spec FROM record_depends")
                    ).all()
                )
        finally:
            engine.dispose()
        assert rows == {
            (1, "zlib", 1, "p0", "zlib >=1.2"),
            (1, "python", 1, "p0", "python 3.11.*"),
            (4, "zlib", 1, "p3", "conda-forge::zlib"),
        }
    finally:
        if pg_name:
            drop_pg_database(pg_name)


def test_count_is_capped_and_paging_knows_about_more(
    world: tuple[Server, Accounts, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count stops at COUNT_CAP + 1 (``python`` has a dependant in nearly every package); without a
    count the caller learns only whether there is more than the page."""
    from condavault.auth.identity import Identity
    from condavault.channels import depends
    from condavault.channels.services import ChannelService

    srv, _acc, ch = world
    admin = Identity(user_id=1, username="admin", is_admin=True)
    svc = ChannelService(srv.ctx)
    found, total = svc.dependants(admin, ch["public"], "dplib", limit=10)
    assert total == 3 and len(found) == 3
    monkeypatch.setattr(depends, "COUNT_CAP", 1)
    found, total = svc.dependants(admin, ch["public"], "dplib", limit=10)
    assert total == 2 and len(found) == 3  # "more than 1"
    found, more = svc.dependants(admin, ch["public"], "dplib", limit=2, count=False)
    assert len(found) == 2 and more == 3  # there is more than this page
    found, more = svc.dependants(admin, ch["public"], "dplib", limit=2, offset=2, count=False)
    assert len(found) == 1 and more == 3  # the last page


def test_metadata_refresh_rewrites_the_rows(
    world: tuple[Server, Accounts, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Same bytes, new upstream metadata (a mirror's repodata patch, an air-gap sync): the record's
    dependency rows follow its new ``depends``."""
    from sqlalchemy import select

    from condavault.channels import depends, records
    from condavault.channels.models import Channel

    srv, _acc, _ch = world
    chan = srv.channel(f"dpr-{uuid.uuid4().hex[:6]}")
    work = tmp_path_factory.mktemp("dpr")
    ok(srv.upload(chan, make_conda(work, "dprefreshed", "1.0", "0", index_extra={"depends": ["dpold >=1"]})))
    with srv.ctx.db.write_session() as s:
        cid = s.scalar(select(Channel.id).where(Channel.name == chan))
        assert cid is not None
        n = records.refresh_records(s, cid, {("noarch", "dprefreshed-1.0-0.conda"): {"depends": ["dpnew 2.*"]}})
        assert n == 1
    with srv.ctx.db.session() as s:
        assert depends.dependants(s, [cid], "dpold")[1] == 0
        found, total = depends.dependants(s, [cid], "dpnew")
    assert total == 1 and found[0]["spec"] == "dpnew 2.*" and found[0]["name"] == "dprefreshed"
