"""The scanning stage over real HTTP: hostile packages built by the tests are quarantined on upload, on an
active mirror run and on a passive fetch, naming the rule that fired; quarantined files are never indexed
nor served; release publishes, delete removes; the block list (CLI, plain lines and OSSF JSON); the
version diff and the channel policy; the bounded, resumable rescan; and every real testdata package comes
out clean (0 false positives)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import update

from condavault.channels.ingest import IngestItem
from condavault.scanning.models import ScanVerdict
from tests.support.accounts import make_accounts
from tests.support.packages import HOSTILE_KINDS, scan_sample
from tests.support.server import Server
from tests.support.static_channel import StaticChannel, build_channel, create_mirror, repodata_files, run_mirror

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

BAD_BYTES = b"condavault test: bytes on the block list\n"
RULES = {
    "post-link": "yara:download_and_execute",
    "eicar": "yara:eicar_test_file",
    "reverse-shell": "yara:reverse_shell",
    "blocked": "blocklist",
}
WHERE = {
    "post-link": "bin/.",
    "eicar": "share/doc/readme.txt",
    "reverse-shell": "etc/conda/activate.d/",
    "blocked": "lib/payload.bin",
}


def _name(prefix: str, kind: str) -> str:
    return f"{prefix}-{kind.replace('-', '')}"


def _block_bad_bytes(server: Server, tmp_path: Path) -> None:
    """The CLI imports a plain sha256 list (with a comment and a note)."""
    f = tmp_path / "bad.txt"
    f.write_text(f"# known bad\n{hashlib.sha256(BAD_BYTES).hexdigest()} test payload\n")
    out = server.cli("blocklist", "import", str(f))
    assert "1 entries read" in out.stdout


def _hostile(tmp_path: Path, prefix: str) -> dict[str, Path]:
    d = tmp_path / prefix
    d.mkdir()
    return {k: scan_sample(d, _name(prefix, k), kind=k, blob=BAD_BYTES) for k in HOSTILE_KINDS}


def _quarantine(server: Server, channel: str) -> dict[str, dict]:
    with server.client() as c:
        r = c.get("/api/quarantine", params={"channel": channel})
        assert r.status_code == 200, r.text
        return {q["filename"]: q for q in r.json()["items"]}


def test_hostile_uploads_are_quarantined_with_the_rule_and_never_served(shared_server: Server, tmp_path: Path) -> None:
    server = shared_server
    _block_bad_bytes(server, tmp_path)
    ch = server.channel("scan-up")
    files = _hostile(tmp_path, "up")
    clean = scan_sample(tmp_path, "up-clean")
    assert server.upload(ch, clean).status_code == 200
    for kind, path in files.items():
        r = server.upload(ch, path)
        assert r.status_code == 422, (kind, r.text)
        err = r.json()["error"]
        assert err["code"] == "quarantined" and err["details"]["rule"] == RULES[kind], (kind, err)
        assert err["details"]["verdict"] == "malicious"
        assert RULES[kind] in err["message"]
        assert (err["details"].get("path") or "").startswith(WHERE[kind]) or kind == "blocked"
    # never indexed, never served
    served = repodata_files(server, ch)
    assert set(served) == {clean.name}
    with server.client(None) as c:
        for path in files.values():
            assert c.get(f"/api/repo/{ch}/noarch/{path.name}").status_code == 404
    with server.client() as c:
        for path in files.values():
            assert c.get(f"/api/repo/{ch}/noarch/{path.name}").status_code == 404
    q = _quarantine(server, ch)
    assert {fn: row["rule"] for fn, row in q.items()} == {p.name: RULES[k] for k, p in files.items()}
    blocked = q[files["blocked"].name]
    assert blocked["path"] == "lib/payload.bin" and blocked["verdict"] == "malicious"
    with server.client() as c:
        shown = c.get(f"/api/quarantine/{blocked['id']}").json()
        assert shown["findings"][0]["rule"] == "blocklist" and shown["record"]["name"] == "up-blocked"
        changes = c.get("/api/audit/changes", params={"action": "quarantine:hold"}).json()
    assert {p.name for p in files.values()} <= {row["target"].rsplit("/", 1)[-1] for row in changes}
    # a second upload of the same bytes is quarantined again (one row, not two)
    r = server.upload(ch, files["eicar"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "quarantined"
    assert len(_quarantine(server, ch)) == len(files)
    # the CLI lists them with the rule
    out = server.cli("quarantine", "list", "--channel", ch, "--json")
    assert {i["rule"] for i in json.loads(out.stdout)["items"]} == set(RULES.values())


def test_release_serves_and_delete_removes(shared_server: Server, tmp_path: Path) -> None:
    server = shared_server
    ch = server.channel("scan-review")
    a = scan_sample(tmp_path, "rev-a", kind="eicar")
    b = scan_sample(tmp_path, "rev-b", kind="post-link")
    for p in (a, b):
        assert server.upload(ch, p).status_code == 422
    q = _quarantine(server, ch)
    out = server.cli("quarantine", "release", str(q[a.name]["id"]))
    assert "released" in out.stdout
    assert a.name in repodata_files(server, ch)
    with server.client(None) as c:
        r = c.get(f"/api/repo/{ch}/noarch/{a.name}")
        assert r.status_code == 200 and r.content == a.read_bytes()
    sha_b = q[b.name]["sha256"]
    assert server.ctx.blobs.exists(sha_b)
    server.cli("quarantine", "delete", str(q[b.name]["id"]))
    assert _quarantine(server, ch) == {}
    assert not server.ctx.blobs.exists(sha_b)
    assert b.name not in repodata_files(server, ch)
    with server.client() as c:
        assert c.get(f"/api/quarantine/{q[b.name]['id']}").status_code == 404
        assert c.post(f"/api/quarantine/{q[b.name]['id']}/release").status_code == 404
        actions = {row["action"] for row in c.get("/api/audit/changes", params={"action": "quarantine:"}).json()}
    assert {"quarantine:hold", "quarantine:release", "quarantine:delete"} <= actions


def test_quarantine_needs_the_review_permission(shared_server: Server, tmp_path: Path) -> None:
    server = shared_server
    acc = make_accounts(server, "scanperm")
    ch = server.channel("scan-perm")
    p = scan_sample(tmp_path, "perm-a", kind="eicar")
    assert server.upload(ch, p).status_code == 422
    qid = _quarantine(server, ch)[p.name]["id"]
    with server.client(None) as c:
        assert c.get("/api/quarantine").status_code == 401
        assert c.post(f"/api/quarantine/{qid}/release").status_code == 401
    with server.client(acc.tokens["member"]) as c:
        assert c.get("/api/quarantine").status_code == 403
        assert c.get(f"/api/quarantine/{qid}").status_code == 403
        assert c.post(f"/api/quarantine/{qid}/release").status_code == 403
        assert c.delete(f"/api/quarantine/{qid}").status_code == 403
        assert c.post("/api/scanning/blocklist", content=b"0" * 64).status_code == 403
    with server.client() as c:
        assert c.get("/api/quarantine", params={"limit": 0}).status_code == 422
        assert c.get("/api/quarantine/99999999999").status_code in (404, 422)
        r = c.post("/api/scanning/blocklist", content=b"not a hash\n")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_blocklist"
    assert p.name not in repodata_files(server, ch)
    # a private channel's verdicts and properties never leak
    priv = server.channel("scan-private", privacy="private")
    clean = scan_sample(tmp_path, "perm-private")
    assert server.upload(priv, clean).status_code == 200
    for token, status in ((None, 401), (acc.tokens["outsider"], 403)):
        with server.client(token) as c:
            assert c.get(f"/api/channels/{priv}/scanning/packages").status_code == status
            assert c.get(f"/api/channels/{priv}/scanning/files/noarch/{clean.name}").status_code == status
            assert c.get(f"/api/channels/{priv}/scanning/policy").status_code == status
    with server.client() as c:
        assert c.get(f"/api/channels/{priv}/scanning/files/noarch/{clean.name}").json()["scan"]["verdict"] == "clean"


@pytest.fixture(scope="module")
def hostile_upstream(tmp_path_factory: pytest.TempPathFactory) -> StaticChannel:
    src = tmp_path_factory.mktemp("hostile-src")
    (src / "noarch").mkdir()
    for kind in HOSTILE_KINDS:
        scan_sample(src / "noarch", _name("mir", kind), kind=kind, blob=BAD_BYTES)
    scan_sample(src / "noarch", "mir-clean")
    root = build_channel(src, tmp_path_factory.mktemp("hostile-up"), subdirs=("noarch",))
    with StaticChannel(root) as chan:
        yield chan


def test_active_mirror_run_quarantines_hostile_files(
    shared_server: Server, hostile_upstream: StaticChannel, tmp_path: Path
) -> None:
    server = shared_server
    _block_bad_bytes(server, tmp_path)
    create_mirror(server, "scanmir", hostile_upstream.url, subdirs=["noarch"])
    run = run_mirror(server, "scanmir")
    codes = {f["file"]: f["code"] for f in run["failures"]}
    hostile = {f"{_name('mir', k)}-1.0-0.conda": k for k in HOSTILE_KINDS}
    assert codes == {f"noarch/{fn}": "quarantined" for fn in hostile}, run
    assert set(repodata_files(server, "scanmir")) == {"mir-clean-1.0-0.conda"}
    q = _quarantine(server, "scanmir")
    assert {fn: row["rule"] for fn, row in q.items()} == {fn: RULES[k] for fn, k in hostile.items()}
    assert all(row["uploaded_by"] == "mirror:scanmir" for row in q.values())
    with server.client(None) as c:
        for fn in hostile:
            assert c.get(f"/api/repo/scanmir/noarch/{fn}").status_code == 404


def test_passive_fetch_of_a_hostile_file_is_refused_and_quarantined(
    shared_server: Server, hostile_upstream: StaticChannel, tmp_path: Path
) -> None:
    server = shared_server
    _block_bad_bytes(server, tmp_path)
    create_mirror(server, "scanlazy", hostile_upstream.url, subdirs=["noarch"], mode="passive")
    run = run_mirror(server, "scanlazy")
    assert run["status"] == "completed"
    with server.client(None) as c:
        for kind in HOSTILE_KINDS:
            fn = f"{_name('mir', kind)}-1.0-0.conda"
            r = c.get(f"/api/repo/scanlazy/noarch/{fn}")
            assert r.status_code == 422, (fn, r.status_code, r.text[:300])
            assert r.json()["error"]["code"] == "quarantined" and r.json()["error"]["details"]["rule"] == RULES[kind]
            assert c.get(f"/api/repo/scanlazy/noarch/{fn}").status_code in (404, 422)  # again: not served
        r = c.get("/api/repo/scanlazy/noarch/mir-clean-1.0-0.conda")
        assert r.status_code == 200
    # the metadata-only records of the quarantined files left the index
    assert set(repodata_files(server, "scanlazy")) == {"mir-clean-1.0-0.conda"}
    q = _quarantine(server, "scanlazy")
    assert {row["rule"] for row in q.values()} == set(RULES.values()) and len(q) == len(HOSTILE_KINDS)


def test_version_diff_and_the_channel_policy(shared_server: Server, tmp_path: Path) -> None:
    server = shared_server
    ch = server.channel("scan-diff")
    v1 = scan_sample(tmp_path, "vd", "1.0")
    v2 = scan_sample(tmp_path, "vd", "2.0", kind="benign-post-link")
    v3 = scan_sample(tmp_path, "vd", "3.0", kind="benign-post-link")
    assert server.upload(ch, v1).status_code == 200
    # a build gaining a post-link script that reaches the network: suspicious, stored (policy off)
    assert server.upload(ch, v2).status_code == 200
    with server.client() as c:
        r = c.get(f"/api/channels/{ch}/scanning/files/noarch/{v2.name}")
        scan = r.json()["scan"]
        assert scan["verdict"] == "suspicious" and scan["rule"] == "version-diff", scan
        assert scan["properties"]["link_scripts"] == [{"path": "bin/.vd-post-link.sh", "kind": "post-link"}]
        assert "network" in scan["properties"]["capabilities"]
        v1_scan = c.get(f"/api/channels/{ch}/scanning/files/noarch/{v1.name}").json()["scan"]
        assert v1_scan["verdict"] == "clean" and v1_scan["properties"]["link_scripts"] == []
    # v3 against v2 (which had the post-link already): nothing new, clean
    assert server.upload(ch, v3).status_code == 200
    with server.client() as c:
        assert c.get(f"/api/channels/{ch}/scanning/files/noarch/{v3.name}").json()["scan"]["verdict"] == "clean"
    # findings are searchable: has:post-link, has:network, by verdict
    with server.client(None) as c:
        r = c.get(f"/api/channels/{ch}/scanning/packages", params={"has": "post-link"})
        assert r.status_code == 200, r.text
        assert [i["filename"] for i in r.json()["items"]] == [v2.name, v3.name]
        assert {
            i["filename"]
            for i in c.get(f"/api/channels/{ch}/scanning/packages", params={"has": "network"}).json()["items"]
        } == {v2.name, v3.name}
        r = c.get(f"/api/channels/{ch}/scanning/packages", params={"verdict": "suspicious"})
        assert [i["filename"] for i in r.json()["items"]] == [v2.name]
        assert c.get(f"/api/channels/{ch}/scanning/packages", params={"has": "x" * 41}).status_code == 422
        assert c.get(f"/api/channels/{ch}/scanning/packages", params={"has": "Post_Link"}).status_code == 422
    # the policy on: a suspicious build is quarantined
    out = server.cli("scanning", "policy", ch, "--quarantine-suspicious")
    assert json.loads(out.stdout)["quarantine_suspicious"] is True
    ch2 = server.channel("scan-diff2")
    with server.client() as c:
        assert c.put(f"/api/channels/{ch2}/scanning/policy", json={"quarantine_suspicious": True}).status_code == 200
    assert server.upload(ch2, v1).status_code == 200
    r = server.upload(ch2, v2)
    assert r.status_code == 422 and r.json()["error"]["details"]["rule"] == "version-diff"
    assert set(repodata_files(server, ch2)) == {v1.name}


def test_ossf_json_block_list_and_rescan_bounded_and_resumable(shared_server: Server, tmp_path: Path) -> None:
    server = shared_server
    ch = server.channel("scan-rescan")
    pkgs = [scan_sample(tmp_path, f"rs{i}") for i in range(3)]
    for p in pkgs:
        assert server.upload(ch, p).status_code == 200
    victim = pkgs[1]
    sha = hashlib.sha256(victim.read_bytes()).hexdigest()
    ossf = {
        "id": "MAL-2099-1",
        "summary": "Malicious code in rs1",
        "affected": [
            {
                "package": {"ecosystem": "conda", "name": "rs1"},
                "database_specific": {"malicious-packages-origins": [{"source": "test", "sha256": sha.upper()}]},
            }
        ],
    }
    with server.client() as c:
        r = c.post("/api/scanning/blocklist", params={"source": "ossf"}, content=json.dumps(ossf).encode())
        assert r.status_code == 200 and r.json() == {"entries": 1, "added": 1, "source": "ossf"}
    # the rules changed since these verdicts (simulated: an older rule-set version on every verdict)
    with server.ctx.db.write_session() as s:
        s.execute(update(ScanVerdict).values(ruleset="0ld"))
    stage = server.ctx.domains.scanning
    from condavault.scanning.plugin import rescan

    first = rescan(server.ctx, stage, limit=1)  # bounded: one record, cursor kept
    assert first["looked_at"] == 1 and first["complete"] is False
    rest = rescan(server.ctx, stage)  # resumes after the cursor
    assert rest["complete"] is True
    assert first["looked_at"] + rest["looked_at"] >= 3
    with server.client() as c:
        r = c.post("/api/scanning/rescan", json={"limit": 10})
        assert r.status_code == 202
    q = _quarantine(server, ch)
    assert q[victim.name]["rule"] == "blocklist"
    served = repodata_files(server, ch)
    assert victim.name not in served and {pkgs[0].name, pkgs[2].name} <= set(served)


def test_real_testdata_packages_are_all_clean(shared_server: Server, packages_dir: Path) -> None:
    """Every real package through the ingest's own check phase (the one-pass scan): 0 false positives."""
    ing = shared_server.ctx.ingestor
    files = sorted(p for p in packages_dir.rglob("*") if p.name.endswith((".conda", ".tar.bz2")))
    assert len(files) >= 300
    flagged = {}
    for path in files:
        item = IngestItem(ing.spool_file(path), path.name, expected_subdir=path.parent.name)
        b = ing.check(item)
        item.received.discard()
        if b.error is not None:
            continue  # packages the archive checks refuse (testdata has a few broken on purpose)
        res = b.notes["scan"]
        if res.verdict != "clean" or b.held is not None:
            flagged[path.name] = res.to_dict()
    assert flagged == {}
