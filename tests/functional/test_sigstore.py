"""Sigstore attestations (CEP 27 in CEP 50 sidecars) verified offline against a configured trust root
(docs/signing.md): a private Sigstore instance (tests/support/sigstore_instance.py: a Fulcio-like CA, a CT
log key, a Rekor-like log key) signs bundles that the real ``sigstore`` verifier checks in full; a loopback
static upstream serves them beside real testdata packages; a real condavault (SQLite and PostgreSQL) with
``sigstore_trusted_root`` mirrors it. ``only_signed`` keeps exactly the file whose attestation verifies
under the mirror's identity rules; every hostile sidecar comes out ``failed`` with its reason."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import Server, start_server, stop_server
from tests.support.signed_upstream import NAMES, trust
from tests.support.sigstore_instance import GITHUB_ISSUER, SigstoreInstance, statement
from tests.support.static_channel import StaticChannel, build_channel, create_mirror, repodata_files, run_mirror

GOOD_IDENTITY = "https://github.com/conda-forge/foo-feedstock/.github/workflows/build.yml@refs/heads/main"
RULES = [
    {
        "issuer": GITHUB_ISSUER,
        "identity": r"https://github\.com/conda-forge/[\w.-]+-feedstock/\.github/workflows/.+",
        "repository": "conda-forge/foo-feedstock",
    }
]


@dataclass
class Upstream:
    chan: StaticChannel
    records: dict[str, Any]
    cases: dict[str, str] = field(default_factory=dict)  # case -> filename
    sidecars: dict[str, bytes] = field(default_factory=dict)


@pytest.fixture(scope="module")
def sigstore_instance() -> SigstoreInstance:
    return SigstoreInstance()


@pytest.fixture(scope="module")
def upstream(
    packages_dir: Path, tmp_path_factory: pytest.TempPathFactory, sigstore_instance: SigstoreInstance
) -> Iterator[Upstream]:
    inst = sigstore_instance
    root = build_channel(packages_dir, tmp_path_factory.mktemp("sigstore-upstream"), names=NAMES)
    rd = json.loads((root / "noarch" / "repodata.json").read_text())
    records = {**rd["packages"], **rd["packages.conda"]}
    files = sorted(records)
    assert len(files) >= 7
    up = Upstream(None, records)  # type: ignore[arg-type]
    good, wrong_id, wrong_repo, tampered, other_digest, expired = files[:6]
    up.cases = {
        "good": good,
        "wrong_identity": wrong_id,
        "wrong_repository": wrong_repo,
        "tampered": tampered,
        "other_digest": other_digest,
        "expired": expired,
    }

    def sha(fn: str) -> str:
        return str(records[fn]["sha256"])

    bundles: dict[str, dict[str, Any]] = {
        good: inst.bundle(good, sha(good)),
        wrong_id: inst.bundle(
            wrong_id,
            sha(wrong_id),
            identity="https://github.com/attacker/foo-feedstock/.github/workflows/x.yml@refs/heads/main",
        ),
        wrong_repo: inst.bundle(wrong_repo, sha(wrong_repo), repository="conda-forge/other-feedstock"),
        expired: inst.bundle(expired, sha(expired), expired=True),
        # a valid attestation, but of another file's bytes (renamed to this file): the digest differs
        other_digest: inst.bundle(other_digest, sha(good), payload=statement(other_digest, sha(good))),
    }
    # the artifact changed after signing: the signed statement is edited to name the new digest
    t = inst.bundle(tampered, "0" * 64)
    t["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement(tampered, sha(tampered))).encode()).decode()
    bundles[tampered] = t
    for fn, b in bundles.items():
        data = inst.sidecar(b)
        att = hashlib.sha256(data).hexdigest()
        records[fn]["attestations_sha256"] = att
        (root / "noarch" / f"{fn}.sigs").write_bytes(data)
        (root / "noarch" / f"{fn}.sigs.{att}").write_bytes(data)
        up.sidecars[fn] = data
    (root / "noarch" / "repodata.json").write_text(json.dumps(rd, indent=1, sort_keys=True))
    with StaticChannel(root) as chan:
        up.chan = chan
        yield up


@pytest.fixture(scope="module")
def sig_server(
    tmp_path_factory: pytest.TempPathFactory, db_backend: str, sigstore_instance: SigstoreInstance
) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("sigstore-data")
    root = sigstore_instance.write_trusted_root(d.parent / f"{d.name}-trusted_root.json")
    handle, pg = start_server(d, db_backend, sigstore_trusted_root=root)
    try:
        yield handle
    finally:
        stop_server(handle, pg)


def test_attestations_verified_offline_with_reasons(sig_server: Server, upstream: Upstream) -> None:
    server = sig_server
    create_mirror(server, "ss-all", upstream.chan.url, subdirs=["noarch"], filters={"sigstore_identities": RULES})
    run = run_mirror(server, "ss-all")
    assert run["status"] == "completed", run
    files = set(repodata_files(server, "ss-all"))
    assert set(upstream.records) == files  # without only_signed every file is kept
    c = upstream.cases
    t = trust(server, "ss-all", c["good"])
    assert t["status"] == "verified" and t["method"] == "sigstore", t
    assert t["identity"] == f"{GOOD_IDENTITY} (issuer {GITHUB_ISSUER})"
    assert "logged" in t["detail"] and "attestations-publish" in t["detail"] and t["checked_at"]
    reasons = {
        "wrong_identity": "matches no sigstore_identities rule",
        "wrong_repository": "matches no sigstore_identities rule",
        "expired": "not valid at validation time",
        "tampered": "signature",
        "other_digest": "not this file",
    }
    for case, reason in reasons.items():
        t = trust(server, "ss-all", c[case])
        assert t["status"] == "failed" and t["method"] == "sigstore", (case, t)
        assert reason in t["detail"].lower(), (case, t["detail"])
    # the sidecar bytes are carried unchanged, failed or not
    with server.client(None) as cl:
        for fn, data in upstream.sidecars.items():
            assert cl.get(f"/api/repo/ss-all/noarch/{fn}.sigs").content == data
    # the SBOM and the file listing carry the outcome and the identity
    with server.client() as cl:
        bom = cl.get(f"/api/channels/ss-all/files/noarch/{c['good']}/sbom").json()
        listed = {f["filename"]: f for f in cl.get("/api/channels/ss-all/files", params={"full": True}).json()}
    props = {p["name"]: p["value"] for p in bom["metadata"]["component"]["properties"]}
    assert props["condavault:signature:status"] == "verified"
    assert props["condavault:signature:method"] == "sigstore"
    assert props["condavault:signature:identity"].startswith(GOOD_IDENTITY)
    assert {fn for fn, f in listed.items() if f["signature"]["status"] == "verified"} == {c["good"]}
    # a second run verifies again from the stored sidecars and changes nothing
    again = run_mirror(server, "ss-all", full=True)
    assert again["status"] == "completed" and not again["counts"].get("trust_changed"), again
    assert not again["counts"].get("sidecars_fetched")


def test_only_signed_keeps_exactly_the_verified_attestation(sig_server: Server, upstream: Upstream) -> None:
    server = sig_server
    create_mirror(
        server,
        "ss-only",
        upstream.chan.url,
        subdirs=["noarch"],
        filters={"only_signed": True, "sigstore_identities": RULES},
    )
    run = run_mirror(server, "ss-only")
    assert run["status"] == "completed", run
    assert set(repodata_files(server, "ss-only")) == {upstream.cases["good"]}
    assert trust(server, "ss-only", upstream.cases["good"])["status"] == "verified"
    with server.client() as c:
        for case in ("wrong_identity", "expired", "tampered", "other_digest"):
            d = c.get("/api/mirrors/ss-only/explain", params={"q": upstream.cases[case]}).json()["decisions"]
            assert d[-1]["kept"] is False and d[-1]["filter"] == "only_signed", (case, d)
        # a rule whose identity is not a regular expression is refused when saved
        cfg = c.get("/api/mirrors/ss-only").json()["config"]
        cfg["filters"]["sigstore_identities"] = [{"issuer": GITHUB_ISSUER, "identity": "(unclosed"}]
        r = c.put("/api/mirrors/ss-only", json=cfg)
        assert r.status_code in (400, 422), r.text
        cfg["filters"]["sigstore_identities"] = [{"issuer": GITHUB_ISSUER, "identity": ".*", "repository": "no repo"}]
        assert c.put("/api/mirrors/ss-only", json=cfg).status_code in (400, 422)
    # a rule for another identity: the same file is dropped on the next run
    with server.client() as c:
        cfg = c.get("/api/mirrors/ss-only").json()["config"]
        cfg["filters"]["sigstore_identities"] = [
            {"issuer": GITHUB_ISSUER, "identity": r"https://github\.com/someone/.*"}
        ]
        assert c.put("/api/mirrors/ss-only", json=cfg).status_code == 200
    run = run_mirror(server, "ss-only", full=True)
    assert run["status"] == "completed", run
    assert repodata_files(server, "ss-only") == {}


def test_without_a_trust_root_attestations_stay_unverified(shared_server: Server, upstream: Upstream) -> None:
    server = shared_server
    create_mirror(
        server,
        "ss-noroot",
        upstream.chan.url,
        subdirs=["noarch"],
        filters={"only_signed": True, "sigstore_identities": RULES},
    )
    run = run_mirror(server, "ss-noroot")
    assert run["status"] == "completed", run
    assert repodata_files(server, "ss-noroot") == {}
    create_mirror(server, "ss-noroot2", upstream.chan.url, subdirs=["noarch"], filters={"sigstore_identities": RULES})
    assert run_mirror(server, "ss-noroot2")["status"] == "completed"
    t = trust(server, "ss-noroot2", upstream.cases["good"])
    assert t["status"] == "unverified" and "trust root" in t["detail"], t
    # the structural checks still hold without a root: a statement naming another digest fails
    assert trust(server, "ss-noroot2", upstream.cases["other_digest"])["status"] == "failed"


def test_passive_mirror_verifies_before_any_download(sig_server: Server, upstream: Upstream) -> None:
    server = sig_server
    create_mirror(
        server,
        "ss-passive",
        upstream.chan.url,
        mode="passive",
        subdirs=["noarch"],
        filters={"only_signed": True, "sigstore_identities": RULES},
    )
    assert run_mirror(server, "ss-passive")["status"] == "completed"
    good = upstream.cases["good"]
    assert set(repodata_files(server, "ss-passive")) == {good}
    assert trust(server, "ss-passive", good)["status"] == "verified"
    with server.client(None) as c:
        assert c.get(f"/api/repo/ss-passive/noarch/{good}").status_code == 200  # the passive fetch
        assert c.get(f"/api/repo/ss-passive/noarch/{good}.sigs").content == upstream.sidecars[good]
    assert trust(server, "ss-passive", good)["status"] == "verified"
