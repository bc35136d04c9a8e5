"""Signatures and attestations end to end (docs/signing.md): a static loopback upstream whose repodata
carries a conda-content-trust ``signatures`` section and CEP 50 sidecars, mirrored (active and passive) by a
real condavault (SQLite and PostgreSQL); the signatures, ``attestations_sha256`` and sidecar bytes come out
unchanged; ``only_signed`` keeps exactly the files a trusted key signed; admission statements verify with
the real ``condavault verify`` and stop verifying when a byte changes."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from condavault.signing.trust import verify_content_trust
from tests.support.server import Server
from tests.support.signed_upstream import Upstream, check_carried, pub_hex, served, signed_upstream, trust
from tests.support.static_channel import create_mirror, repodata_files, run_mirror


@pytest.fixture(scope="module")
def upstream(packages_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    yield from signed_upstream(packages_dir, tmp_path_factory.mktemp("signed-upstream"))


def test_active_mirror_carries_signatures_and_sidecars_unchanged(shared_server: Server, upstream: Upstream) -> None:
    server = shared_server
    create_mirror(server, "sig-active", upstream.chan.url, filters={"signature_keys": [upstream.key_hex]})
    run = run_mirror(server, "sig-active")
    assert run["status"] == "completed", run
    files = set(repodata_files(server, "sig-active"))
    check_carried(server, "sig-active", upstream, files)
    # the outcome per record: verified by the trusted key, unverified (other key), failed (forged)
    for fn in upstream.signed_trusted:
        t = trust(server, "sig-active", fn)
        assert t["status"] == "verified" and t["identity"] == f"ed25519:{upstream.key_hex}", t
        assert t["method"] == "content-trust" and t["checked_at"]
    (other,) = upstream.signed_other
    assert trust(server, "sig-active", other)["status"] == "unverified"
    (forged,) = upstream.tampered
    assert trust(server, "sig-active", forged)["status"] == "failed"
    only_sidecar = next(fn for fn in upstream.sidecars if fn not in upstream.repodata["signatures"])
    t = trust(server, "sig-active", only_sidecar)
    assert t["method"] == "sigstore" and t["status"] == "unverified" and t["attestations_sha256"]
    unsigned = next(fn for fn in files if fn not in upstream.repodata["signatures"] and fn not in upstream.sidecars)
    assert trust(server, "sig-active", unsigned)["status"] == "none"
    # a client checking conda-content-trust signatures against *this* index verifies them: the signed
    # upstream record is what is published (no indexed_timestamp added, nothing re-derived)
    doc = served(server, "sig-active")
    published = {**doc["packages"], **doc["packages.conda"]}
    for fn in upstream.signed_trusted:
        got = verify_content_trust(published[fn], doc["signatures"][fn], {upstream.key_hex})
        assert got.status == "verified", fn
    # a mirror of this condavault, checking signatures, verifies them too (it reads repodata.json, as
    # shards carry no signatures) and carries the sidecars again, byte for byte
    create_mirror(
        server,
        "sig-chain",
        f"{server.repo}/sig-active",
        subdirs=["noarch"],
        filters={"signature_keys": [upstream.key_hex]},
    )
    assert run_mirror(server, "sig-chain")["status"] == "completed"
    check_carried(server, "sig-chain", upstream, files)
    assert all(trust(server, "sig-chain", fn)["status"] == "verified" for fn in upstream.signed_trusted)
    # a repodata patch of a signed file is published (the admin's word wins; its signature no longer holds)
    patched_fn = sorted(upstream.signed_trusted)[0]
    with server.client() as c:
        r = c.put(
            "/api/channels/sig-chain/subdirs/noarch/patch-instructions",
            json={"packages.conda": {patched_fn: {"depends": ["patched-dep"]}}}
            if patched_fn.endswith(".conda")
            else {"packages": {patched_fn: {"depends": ["patched-dep"]}}},
        )
        assert r.status_code == 200, r.text
    server.ctx.settle()
    doc = served(server, "sig-chain")
    rec = {**doc["packages"], **doc["packages.conda"]}[patched_fn]
    assert rec["depends"] == ["patched-dep"]
    assert verify_content_trust(rec, doc["signatures"][patched_fn], {upstream.key_hex}).status == "failed"
    # the file listing (full=true) carries it too
    with server.client() as c:
        listed = {f["filename"]: f for f in c.get("/api/channels/sig-active/files", params={"full": True}).json()}
    assert {fn for fn, f in listed.items() if f["signature"]["status"] == "verified"} == upstream.signed_trusted
    # the SBOM carries the outcome
    fn = sorted(upstream.signed_trusted)[0]
    with server.client() as c:
        bom = c.get(f"/api/channels/sig-active/files/noarch/{fn}/sbom").json()
    props = {p["name"]: p["value"] for p in bom["metadata"]["component"]["properties"]}
    assert props["condavault:signature:status"] == "verified"
    # a second run changes nothing
    again = run_mirror(server, "sig-active", full=True)
    assert again["status"] == "completed" and not again["counts"].get("trust_changed")
    assert served(server, "sig-active").get("signatures") == served(server, "sig-active").get("signatures")


def test_passive_mirror_carries_them_before_any_download(shared_server: Server, upstream: Upstream) -> None:
    server = shared_server
    create_mirror(server, "sig-passive", upstream.chan.url, mode="passive")
    assert run_mirror(server, "sig-passive")["status"] == "completed"
    files = set(repodata_files(server, "sig-passive"))
    check_carried(server, "sig-passive", upstream, files)
    # without trusted keys nothing is verified, but everything is carried
    assert all(trust(server, "sig-passive", fn)["status"] == "unverified" for fn in upstream.signed_trusted)
    # metadata-only: no admission statement until the bytes came in through the ingest
    fn = sorted(upstream.signed_trusted)[0]
    with server.client(None) as c:
        r = c.get(f"/api/repo/sig-passive/noarch/{fn}.admission.json")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_admitted"
        assert c.get(f"/api/repo/sig-passive/noarch/{fn}").status_code == 200  # the passive fetch
        assert c.get(f"/api/repo/sig-passive/noarch/{fn}.admission.json").status_code == 200


def test_only_signed_keeps_exactly_the_files_a_trusted_key_signed(shared_server: Server, upstream: Upstream) -> None:
    server = shared_server
    create_mirror(
        server, "sig-only", upstream.chan.url, filters={"only_signed": True, "signature_keys": [upstream.key_hex]}
    )
    run = run_mirror(server, "sig-only")
    assert run["status"] == "completed", run
    assert set(repodata_files(server, "sig-only")) == upstream.signed_trusted
    check_carried(server, "sig-only", upstream, upstream.signed_trusted)
    with server.client() as c:
        d = c.get("/api/mirrors/sig-only/explain", params={"q": sorted(upstream.tampered)[0]}).json()["decisions"]
        assert d[-1]["kept"] is False and d[-1]["filter"] == "only_signed"
        # a key that is not 64 hex digits is refused at once
        cfg = c.get("/api/mirrors/sig-only").json()["config"]
        cfg["filters"]["signature_keys"] = ["ed25519:xyz"]
        r = c.put("/api/mirrors/sig-only", json=cfg)
        assert r.status_code in (400, 422), r.text


def test_admission_statement_verifies_offline_and_fails_after_a_flipped_byte(
    shared_server: Server, upstream: Upstream, packages_dir: Path, tmp_path: Path
) -> None:
    server = shared_server
    server.channel("admitted")
    pkg = packages_dir / "noarch" / "dependency-1.0-0.conda"
    assert server.upload("admitted", pkg).status_code in (200, 201)
    with server.client(None) as c:
        st = c.get("/api/repo/admitted/noarch/dependency-1.0-0.conda.admission.json")
        assert st.status_code == 200, st.text
        key = c.get("/api/signing/key").json()
        data = c.get("/api/repo/admitted/noarch/dependency-1.0-0.conda").content
    with server.client() as c:
        api = c.get("/api/channels/admitted/files/noarch/dependency-1.0-0.conda/admission")
        assert api.content == st.content  # the same bytes by API and beside the file
        assert c.get("/api/channels/admitted/files/noarch/nope-1.0-0.conda/admission").status_code == 404
        assert c.get("/api/channels/admitted/files/noarch/..%2F..%2Fetc/admission").status_code in (400, 404)
    env = json.loads(st.content)
    statement = json.loads(base64.b64decode(env["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [{"name": pkg.name, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}]
    assert statement["predicateType"] == "https://condavault.dev/admission/v1"
    assert statement["predicate"]["channel"] == "admitted" and statement["predicate"]["serverKeyId"] == key["id"]
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / pkg.name).write_bytes(data)
    (folder / f"{pkg.name}.admission.json").write_bytes(st.content)
    ok = server.cli("verify", str(folder / pkg.name), "--key", key["public_key"])
    assert "OK" in ok.stdout and "admitted" in ok.stdout
    # a flipped byte in the signed payload, in the signature, or in the file: refused, exit 1
    body = bytearray(base64.b64decode(env["payload"]))
    body[body.index(b"admitted")] ^= 0x01
    bad_payload = dict(env, payload=base64.b64encode(bytes(body)).decode())
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[0] ^= 0x01
    bad_sig = dict(env, signatures=[dict(env["signatures"][0], sig=base64.b64encode(bytes(sig)).decode())])
    for i, bad in enumerate((bad_payload, bad_sig)):
        p = tmp_path / f"bad{i}.json"
        p.write_text(json.dumps(bad))
        r = server.cli("verify", str(folder / pkg.name), "--statement", str(p), "--key", key["public_key"], check=False)
        assert r.returncode == 1 and "FAILED" in r.stderr, (r.stdout, r.stderr)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    (tmp_path / pkg.name).write_bytes(bytes(flipped))
    r = server.cli(
        "verify",
        str(tmp_path / pkg.name),
        "--statement",
        str(folder / f"{pkg.name}.admission.json"),
        "--key",
        key["public_key"],
        check=False,
    )
    assert r.returncode == 1 and "not this file" in r.stderr
    # another key: refused; a malformed key: a usage error, not a traceback
    other = "ed25519:" + pub_hex(Ed25519PrivateKey.generate())
    assert server.cli("verify", str(folder / pkg.name), "--key", other, check=False).returncode == 1
    r = server.cli("verify", str(folder / pkg.name), "--key", "ed25519:zz", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_private_channel_never_leaks_and_a_corrupted_sidecar_is_not_kept(
    shared_server: Server, upstream: Upstream
) -> None:
    server = shared_server
    server.channel("sig-private", privacy="private")
    side_fn = next(fn for fn in upstream.sidecars if fn not in upstream.repodata["signatures"])
    records = {**upstream.repodata["packages"], **upstream.repodata["packages.conda"]}
    att = records[side_fn]["attestations_sha256"]
    names = {f"{side_fn}.sigs", f"{side_fn}.sigs.{att}"}
    upstream.chan.corrupt.update(names)  # the upstream serves altered sidecar bytes
    try:
        create_mirror(server, "sig-private", upstream.chan.url, channel="sig-private")
        assert run_mirror(server, "sig-private")["status"] == "completed"
    finally:
        upstream.chan.corrupt.difference_update(names)
    t = trust(server, "sig-private", side_fn)
    assert t["status"] == "failed" and t["attestations_sha256"] is None, t
    signed_fn = sorted(upstream.signed_trusted)[0]
    with server.client() as c:
        # altered bytes are never stored nor served; the signatures still are
        assert c.get(f"/api/repo/sig-private/noarch/{side_fn}.sigs").status_code == 404
        assert c.get(f"/api/repo/sig-private/noarch/{signed_fn}.admission.json").status_code == 200
        assert served_with(c, "sig-private")["signatures"][signed_fn] == upstream.repodata["signatures"][signed_fn]
    # anonymous callers learn nothing about a private channel: not its sidecars, statements or outcomes
    other_fn = sorted(upstream.sidecars)[0]
    with server.client(None) as c:
        for url in (
            f"/api/repo/sig-private/noarch/{other_fn}.sigs",
            f"/api/repo/sig-private/noarch/{signed_fn}.admission.json",
            f"/api/channels/sig-private/files/noarch/{signed_fn}/signature",
            f"/api/channels/sig-private/files/noarch/{signed_fn}/admission",
        ):
            r = c.get(url)
            assert r.status_code in (401, 403, 404), (url, r.status_code)
            assert "signature" not in r.text.lower() or r.status_code != 200
    # names beside a file that are not ours: plain 404s, never a 500
    with server.client() as c:
        for name in (
            f"{signed_fn}.sigs.XYZ",
            f"{signed_fn}.sigs.{'A' * 64}",
            "x.sigs",
            "../x.conda.sigs",
            f"{signed_fn}.admission.json.bak",
            ".admission.json",
        ):
            assert c.get(f"/api/repo/sig-private/noarch/{name}").status_code == 404, name
        assert c.get("/api/channels/sig-private/files/noarch/not-a-package/signature").status_code in (400, 404)
        assert c.get(f"/api/channels/sig-private/files/bogus-subdir/{signed_fn}/signature").status_code in (400, 404)


def served_with(c: object, channel: str) -> dict[str, object]:
    import httpx

    assert isinstance(c, httpx.Client)
    r = c.get(f"/api/repo/{channel}/noarch/repodata.json")
    assert r.status_code == 200
    return dict(r.json())
