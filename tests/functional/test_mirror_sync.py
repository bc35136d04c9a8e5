"""Mirrors end to end over real HTTP: a static loopback upstream of the real test packages, a real
condavault (SQLite and PostgreSQL), the real CLI, and py-rattler solving against the result."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Server
from tests.support.static_channel import (
    StaticChannel,
    build_channel,
    check_served_files,
    create_mirror,
    repodata_files,
    run_mirror,
    solve_and_install,
    wait_run,
)

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

DEPS = {"another_dependent", "dependent", "dependency", "other_dependent"}


@pytest.fixture(scope="module")
def upstream(packages_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticChannel]:
    root = build_channel(packages_dir, tmp_path_factory.mktemp("upstream"))
    with StaticChannel(root) as chan:
        yield chan


def test_only_specs_with_dependencies_solves_and_second_run_is_a_noop(
    shared_server: Server, upstream: StaticChannel
) -> None:
    server = shared_server
    server.channel("deps")
    server.cli(
        "mirror",
        "create",
        "deps",
        "--upstream",
        upstream.url,
        "--channel",
        "deps",
        "--subdirs",
        "linux-64,noarch",
        "--only-spec",
        "another_dependent",
        "--include-dependencies",
    )
    before = upstream.package_hits()
    proc = server.cli("mirror", "run", "deps", "--wait")
    assert "completed" in proc.stdout, proc.stdout
    files = repodata_files(server, "deps")
    assert {r["name"] for r in files.values()} == {"another_dependent", "dependent", "dependency"}
    assert upstream.package_hits() - before == len(files) == 6
    # upstream's record is what we serve (fields the archive does not know about survive)
    assert all(r["sha256"] and r["size"] for r in files.values())
    assert check_served_files(server, "deps") == 6

    got = solve_and_install(server, "deps", ["another_dependent"])
    assert got["another_dependent"] == "2.0" and got["dependent"] == "2.0" and got["dependency"] == "2.0"

    # nothing changed: no download, no plan rewrite
    hits = upstream.package_hits()
    again = run_mirror(server, "deps")
    assert again["status"] == "completed" and again["counts"].get("downloaded", 0) == 0
    assert again["counts"]["unchanged"] is True
    forced = run_mirror(server, "deps", full=True)
    assert forced["counts"].get("downloaded", 0) == 0 and forced["counts"]["plan_items_written"] == 0
    assert upstream.package_hits() == hits

    # explain, from the stored decision, by CLI and API
    out = server.cli("mirror", "explain", "deps", "other_dependent").stdout
    assert "dropped" in out and "only_specs" in out
    with server.client() as c:
        body = c.get("/api/mirrors/deps/explain", params={"q": "dependency-1.0-0.conda"}).json()
        (d,) = body["decisions"]
        assert d["kept"] and d["filter"] == "include_dependencies" and d["state"] == "done"
        body = c.get("/api/mirrors/deps/explain", params={"q": "noarch/other_dependent-1.0-0.conda"}).json()
        assert body["decisions"][0]["filter"] == "only_specs" and not body["decisions"][0]["kept"]
        hist = c.get("/api/mirrors/deps/runs").json()
        assert [r["status"] for r in hist] == ["completed"] * 3
        assert hist[-1]["counts"]["downloaded"] == 6 and hist[-1]["counts"]["dropped_by_filter"]["only_specs"] > 100


def test_pruning_keeps_the_mirror_installable(shared_server: Server, upstream: StaticChannel) -> None:
    server = shared_server
    create_mirror(
        server,
        "pruned",
        upstream.url,
        subdirs=["noarch"],
        filters={"only_specs": sorted(DEPS), "exclude_specs": ["dependency >=2"], "prune_unsatisfiable": "drop"},
    )
    with server.client() as c:
        plan = c.post("/api/mirrors/pruned/plan").json()
    assert plan["status"] == "completed" and plan["dry_run"]
    assert plan["counts"]["dropped_by_filter"]["prune_unsatisfiable"] == 1
    assert "noarch/dependent-2.0-0.conda" not in plan["counts"]["plan"]["add"]
    out = server.cli("mirror", "plan", "pruned").stdout
    assert "prune_unsatisfiable" in out and "dependent-2.0-0.conda" in out

    run = run_mirror(server, "pruned")
    assert run["status"] == "completed", run
    names = {(r["name"], r["version"]) for r in repodata_files(server, "pruned").values()}
    assert ("dependent", "2.0") not in names and ("dependency", "2.0") not in names
    got = solve_and_install(server, "pruned", ["another_dependent"])
    assert got["dependent"] == "1.0" and got["dependency"] == "1.0"
    out = server.cli("mirror", "explain", "pruned", "dependent-2.0-0.conda").stdout
    assert "prune_unsatisfiable" in out and "dependency >=2.0,<3.0a0" in out

    # the policy changes: files it now drops are removed (on_remove: remove)
    with server.client() as c:
        cfg = c.get("/api/mirrors/pruned").json()["config"]
        cfg["filters"]["exclude_specs"] = ["dependency >=2", "other_dependent"]
        assert c.put("/api/mirrors/pruned", json=cfg).status_code == 200
    run = run_mirror(server, "pruned")
    assert run["counts"]["removed"] == 1
    assert "other_dependent-1.0-0.conda" not in repodata_files(server, "pruned")


def test_corrupted_upstream_file_is_rejected_and_reported(shared_server: Server, upstream: StaticChannel) -> None:
    server = shared_server
    bad = "dependency-1.0-0.conda"
    upstream.corrupt.add(bad)
    try:
        create_mirror(server, "corrupt", upstream.url, subdirs=["noarch"], filters={"only_specs": ["dependency"]})
        run = run_mirror(server, "corrupt")
    finally:
        upstream.corrupt.discard(bad)
    assert run["counts"]["failed"] == 1 and run["counts"]["rejected_checksum"] == 1
    assert run["failures"][0]["file"] == f"noarch/{bad}" and run["failures"][0]["code"] == "checksum_mismatch"
    assert bad not in repodata_files(server, "corrupt")
    with server.client(None) as c:
        assert c.get(f"/api/repo/corrupt/noarch/{bad}").status_code == 404
    with server.client() as c:
        (d,) = c.get("/api/mirrors/corrupt/explain", params={"q": bad}).json()["decisions"]
        assert d["state"] == "failed" and "sha256" in d["error"]
    # the next run retries the failed file and, upstream healed, completes
    run = run_mirror(server, "corrupt")
    assert run["counts"].get("failed", 0) == 0 and run["counts"]["downloaded"] == 1
    assert bad in repodata_files(server, "corrupt")


def test_5xx_and_timeouts_are_retried(shared_server: Server, upstream: StaticChannel) -> None:
    server = shared_server
    settings = server.ctx.settings
    old_timeout = settings.mirror_timeout
    settings.mirror_timeout = 0.5
    upstream.stall_seconds = 1.5
    upstream.fail_first.update({"dependent-1.0-0.conda": 2, "repodata.json": 1})
    upstream.stall_first.update({"dependent-2.0-0.conda": 1})
    try:
        create_mirror(server, "flaky", upstream.url, subdirs=["noarch"], filters={"only_specs": ["dependent"]})
        run = run_mirror(server, "flaky")
    finally:
        settings.mirror_timeout = old_timeout
        upstream.fail_first.clear()
        upstream.stall_first.clear()
    assert run["status"] == "completed", run
    assert run["counts"]["downloaded"] == 2 and run["counts"].get("failed", 0) == 0
    assert run["counts"]["retries"] >= 3
    assert check_served_files(server, "flaky", ("noarch",)) == 2


def test_two_concurrent_runs_conflict_and_cancel(shared_server: Server, upstream: StaticChannel) -> None:
    server = shared_server
    create_mirror(
        server,
        "slow",
        upstream.url,
        subdirs=["noarch"],
        filters={"only_specs": ["clobber-1", "clobber-2", "clobber-3"]},
    )
    upstream.gate = gate = threading.Event()  # downloads hang until the test lets them go
    server.ctx.settings.mirror_concurrency = 1
    try:
        with server.client() as c:
            first = c.post("/api/mirrors/slow/runs")
            assert first.status_code == 202, first.text
            second = c.post("/api/mirrors/slow/runs")
            assert second.status_code == 409 and second.json()["error"]["code"] == "mirror_running"
            assert "already running" in second.json()["error"]["message"]
            assert c.post("/api/mirrors/slow/cancel").status_code == 200
            time.sleep(1.2)  # the run polls its cancel flag twice a second
            gate.set()
            run = wait_run(c, "slow", first.json()["id"])
    finally:
        gate.set()
        upstream.gate = None
        server.ctx.settings.mirror_concurrency = 8
    assert run["status"] == "cancelled"
    assert run["counts"].get("downloaded", 0) < 6
    done = run_mirror(server, "slow")
    assert done["status"] == "completed" and done["counts"].get("failed", 0) == 0


def test_passive_mode_fetches_once_under_concurrent_first_requests(
    shared_server: Server, upstream: StaticChannel
) -> None:
    import asyncio

    import httpx

    server = shared_server
    create_mirror(
        server,
        "lazy",
        upstream.url,
        mode="passive",
        filters={"only_specs": ["another_dependent"], "include_dependencies": True},
    )
    before = upstream.package_hits()
    run = run_mirror(server, "lazy")
    assert run["status"] == "completed" and run["counts"]["indexed_passive"] == 6
    assert upstream.package_hits() == before  # nothing downloaded yet
    files = repodata_files(server, "lazy")
    assert len(files) == 6
    fn = "dependent-1.0-0.conda"
    upstream.delay[fn] = 0.5  # keep the first download in flight while the others arrive
    path_hits = upstream.hits[f"/noarch/{fn}"]

    async def hammer() -> list[tuple[int, bytes]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            rs = await asyncio.gather(*(c.get(f"/api/repo/lazy/noarch/{fn}") for _ in range(20)))
            return [(r.status_code, r.content) for r in rs]

    try:
        answers = asyncio.run(hammer())
    finally:
        upstream.delay.pop(fn, None)
    assert {status for status, _ in answers} == {200}
    import hashlib

    assert {hashlib.sha256(body).hexdigest() for _, body in answers} == {files[fn]["sha256"]}
    assert upstream.hits[f"/noarch/{fn}"] - path_hits == 1
    with server.client() as c:
        (d,) = c.get("/api/mirrors/lazy/explain", params={"q": fn}).json()["decisions"]
        assert d["state"] == "done"
    # now local: served without upstream
    with server.client(None) as c:
        assert c.get(f"/api/repo/lazy/noarch/{fn}").status_code == 200
    assert upstream.hits[f"/noarch/{fn}"] - path_hits == 1
    got = solve_and_install(server, "lazy", ["another_dependent"])
    assert got["another_dependent"] == "2.0"


def test_yaml_apply_export_and_unknown_key(shared_server: Server, upstream: StaticChannel, tmp_path: Path) -> None:
    server = shared_server
    server.channel("yamlchan")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"name: ym\nupstream: {upstream.url}\nchannel: yamlchan\nsubdirs: [noarch]\n"
        "filters:\n  only_spec: [dependency]\n"
    )
    proc = server.cli("mirror", "apply", str(bad), check=False)
    assert proc.returncode == 2
    assert "unknown key 'filters.only_spec'" in proc.stderr, proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text(
        f"name: ym\nupstream: {upstream.url}\nchannel: yamlchan\nsubdirs: [noarch]\ncron: '0 3 * * *'\n"
        "upstream_token: s3cret\nfilters:\n  only_specs: [dependency]\n  keep_latest: 1\n"
    )
    with server.client() as c:
        assert c.post("/api/mirrors/apply", json={"yaml": good.read_text()}).status_code == 200
    exported = server.cli("mirror", "export", "ym").stdout
    assert "s3cret" not in exported and "keep_latest" in exported and "0 3 * * *" in exported
    with server.client() as c:
        # applying the export again: its redacted secrets keep the stored ones
        assert c.post("/api/mirrors/apply", json={"yaml": exported}).status_code == 200
        assert "s3cret" in c.get("/api/mirrors/ym/export", params={"secrets": True}).text
        assert "ym" in [m["name"] for m in c.get("/api/mirrors").json()]
        shown = c.get("/api/mirrors/ym").json()
        assert shown["config"]["upstream_token"] == "***" and shown["cron"] == "0 3 * * *"
        # the cron schedule is saved with the mirror (every worker process sees it), and goes with it
        schedules = {x["name"]: x for x in c.get("/api/jobs/schedules").json()}
        assert schedules["mirror:ym"]["cron"] == "0 3 * * *" and schedules["mirror:ym"]["kind"] == "mirror.run"
        assert c.delete("/api/mirrors/ym").status_code == 204
        assert "mirror:ym" not in {x["name"] for x in c.get("/api/jobs/schedules").json()}
    with server.client() as c:
        assert c.get("/api/mirrors/ym").status_code == 404


def test_plan_on_real_repodata_and_missing_cve_provider(shared_server: Server, testdata: Path, tmp_path: Path) -> None:
    server = shared_server
    root = tmp_path / "defaults-r"
    (root / "linux-64").mkdir(parents=True)
    (root / "noarch").mkdir()
    (root / "linux-64" / "repodata.json").symlink_to(
        testdata / "repodata" / "defaults-r" / "linux-64" / "repodata.json"
    )
    (root / "noarch" / "repodata.json").write_text(json.dumps({"info": {"subdir": "noarch"}, "packages": {}}))
    create_mirror(
        server,
        "rplan",
        str(root),
        filters={
            "only_specs": ["r-base >=3.5"],
            "include_dependencies": True,
            "keep_latest": 2,
            "exclude_licenses": ["agpl"],
            "prune_unsatisfiable": "flag",
        },
    )
    t = time.monotonic()
    with server.client() as c:
        plan = c.post("/api/mirrors/rplan/plan").json()
    assert plan["status"] == "completed", plan
    assert time.monotonic() - t < 60
    c_ = plan["counts"]
    assert c_["files"] > 1000 and 0 < c_["kept"] < c_["files"]
    assert c_["dropped_by_filter"]["only_specs"] > 0
    with server.client() as c:
        d = c.get("/api/mirrors/rplan/explain", params={"q": "r-base"}).json()["decisions"]
        assert any(x["kept"] for x in d)
        # a filter whose provider does not exist (no signature data yet): a clear 400 when planning
        cfg = c.get("/api/mirrors/rplan").json()["config"]
        cfg["filters"]["only_signed"] = True
        assert c.put("/api/mirrors/rplan", json=cfg).status_code == 200
        r = c.post("/api/mirrors/rplan/plan")
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_mirror_config" and "is_signed" in err["message"]
        assert c.get("/api/mirrors/rplan/runs").json()[0]["status"] == "failed"
        # the CVE filters always have the vulnerability domain's links
        cfg["filters"]["only_signed"] = False
        cfg["filters"]["cve_score_threshold"] = 7.0
        assert c.put("/api/mirrors/rplan", json=cfg).status_code == 200
        assert c.post("/api/mirrors/rplan/plan").json()["status"] == "completed"


def test_managing_a_mirror_needs_mirror_manage(shared_server: Server, upstream: StaticChannel) -> None:
    server = shared_server
    server.channel("permchan")
    with server.client() as c:
        assert c.post("/api/users", json={"username": "mirrorbob", "password": "pw-123456789"}).status_code == 201
        r = c.post("/api/channels/permchan/grants", json={"role": "owner", "user": "mirrorbob"})
        assert r.status_code in (200, 201), r.text
        r = c.post("/api/tokens", json={"user": "mirrorbob", "scopes": [{"scope": "api"}]})
        assert r.status_code == 201, r.text
        bob = r.json()["token"]
    body = {"name": "bobs", "upstream": upstream.url, "channel": "permchan", "subdirs": ["noarch"]}
    with server.client(bob) as c:
        r = c.post("/api/mirrors", json=body)
        assert r.status_code == 403, r.text  # channel:write alone is not enough
    with server.client() as c:
        assert c.post("/api/mirrors", json=body).status_code == 201
    with server.client(None) as c:
        assert c.post("/api/mirrors/bobs/runs").status_code == 401
        assert c.get("/api/mirrors/bobs").status_code == 200  # public channel: the mirror is readable
    with server.client() as c:
        changes = c.get("/api/audit/changes").json()
    text = json.dumps(changes)
    assert "mirror:create" in text and "bobs" in text


def test_mirror_of_another_condavault_reads_its_shards(shared_server: Server, packages_dir: Path) -> None:
    """Another condavault publishes CEP-16 shards: the mirror reads those (not repodata.json), and a
    re-sync after one upstream upload fetches the changed shard only."""
    server = shared_server
    server.channel("shardsrc")
    server.channel("shardcopy")
    for name in ("dependency-1.0-0.conda", "dependent-1.0-0.conda", "another_dependent-1.0-0.conda"):
        assert server.upload("shardsrc", packages_dir / "noarch" / name).status_code in (200, 201)
    server.cli("mirror", "create", "shardm", "--upstream", f"{server.repo}/shardsrc", "--channel", "shardcopy",
               "--subdirs", "noarch")  # fmt: skip
    start = len(server.requests)
    first = run_mirror(server, "shardm")
    assert first["status"] == "completed" and first["counts"]["downloaded"] == 3
    paths = [p for _, p, _ in server.requests[start:] if p.startswith("/api/repo/shardsrc/")]
    assert "/api/repo/shardsrc/noarch/repodata_shards.msgpack.zst" in paths
    assert sum("/shards/" in p for p in paths) == 3  # one shard per package name
    assert not any(p.endswith(("repodata.json", "repodata.json.zst")) for p in paths)
    assert solve_and_install(server, "shardcopy", ["another_dependent"])["dependency"] == "1.0"

    assert server.upload("shardsrc", packages_dir / "noarch" / "dependency-2.0-0.conda").status_code in (200, 201)
    server.ctx.settle()
    start = len(server.requests)
    second = run_mirror(server, "shardm")
    assert second["status"] == "completed" and second["counts"]["downloaded"] == 1
    paths = [p for _, p, _ in server.requests[start:] if p.startswith("/api/repo/shardsrc/")]
    assert sum("/shards/" in p for p in paths) == 1  # only the dependency shard changed
    assert "dependency-2.0-0.conda" in json.dumps(repodata_files(server, "shardcopy"))
