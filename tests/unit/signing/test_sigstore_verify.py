"""verify_sidecar against a private Sigstore instance: the real ``sigstore`` verifier, every outcome and the
hostile sidecars (another CA, a partial identity match, a malformed bundle, too many bundles, a bad root)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from tests.support.sigstore_instance import GITHUB_ISSUER, SigstoreInstance

from condavault.signing.sigstore import MAX_BUNDLES, IdentityRule, verify_sidecar

FN = "pkg-1.0-0.conda"
SHA = "ab" * 32
RULE = IdentityRule(GITHUB_ISSUER, r"https://github\.com/conda-forge/foo-feedstock/.+", "conda-forge/foo-feedstock")


@pytest.fixture(scope="module")
def inst() -> SigstoreInstance:
    return SigstoreInstance()


@pytest.fixture(scope="module")
def root(inst: SigstoreInstance, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return inst.write_trusted_root(tmp_path_factory.mktemp("root") / "trusted_root.json")


def check(data: bytes, root: Path | None, rules: list[IdentityRule]) -> tuple[str, str | None, str | None]:
    o = verify_sidecar(data, hashlib.sha256(data).hexdigest(), FN, SHA, root, rules)
    return o.status, o.identity, o.detail


def test_verified_and_the_identity_is_recorded(inst: SigstoreInstance, root: Path) -> None:
    status, identity, detail = check(inst.sidecar(inst.bundle(FN, SHA), inst.bundle(FN, SHA)), root, [RULE])
    assert status == "verified", detail
    assert identity and identity.endswith(f"(issuer {GITHUB_ISSUER})")
    assert detail and "2 Sigstore bundle(s) verified" in detail


def test_rules_decide_who_is_trusted(inst: SigstoreInstance, root: Path) -> None:
    data = inst.sidecar(inst.bundle(FN, SHA))
    # the SAN regex is matched in full: a prefix alone does not match
    assert check(data, root, [IdentityRule(GITHUB_ISSUER, r"https://github\.com/conda-forge")])[0] == "failed"
    assert check(data, root, [IdentityRule("https://accounts.example", ".*")])[0] == "failed"
    assert check(data, root, [IdentityRule(GITHUB_ISSUER, ".*", "conda-forge/bar-feedstock")])[0] == "failed"
    # any matching rule is enough
    assert check(data, root, [IdentityRule("https://accounts.example", ".*"), RULE])[0] == "verified"
    # sound signatures but nobody trusted: unverified, with the signer named
    status, identity, detail = check(data, root, [])
    assert status == "unverified" and identity and "no sigstore_identities rule" in (detail or "")
    # no trust root: unverified
    assert check(data, None, [RULE])[0] == "unverified"


def test_a_bundle_from_another_instance_fails(inst: SigstoreInstance, root: Path) -> None:
    other = SigstoreInstance()
    status, _, detail = check(other.sidecar(other.bundle(FN, SHA)), root, [RULE])
    assert status == "failed" and detail and detail.startswith("bundle 0:")
    # one bad bundle beside a good one fails the file
    status, _, detail = check(inst.sidecar(inst.bundle(FN, SHA), other.bundle(FN, SHA)), root, [RULE])
    assert status == "failed" and detail and detail.startswith("bundle 1:")


def test_hostile_shapes_fail_with_a_reason(inst: SigstoreInstance, root: Path) -> None:
    good = inst.bundle(FN, SHA)
    broken = json.loads(json.dumps(good))
    broken["verificationMaterial"]["tlogEntries"] = []
    assert (
        check(inst.sidecar(broken), root, [RULE])[2]
        == "bundle 0: malformed bundle: expected exactly one log entry in bundle"
    )
    bad_body = json.loads(json.dumps(good))
    bad_body["verificationMaterial"]["tlogEntries"][0]["canonicalizedBody"] = "e30="  # "{}"
    status, _, detail = check(inst.sidecar(bad_body), root, [RULE])
    assert status == "failed", detail
    too_many = inst.sidecar(*[good] * (MAX_BUNDLES + 1))
    assert check(too_many, root, [RULE])[0] == "failed"
    assert check(b"[{}]", root, [RULE])[0] == "failed"


def test_an_unusable_trust_root_leaves_it_unverified(inst: SigstoreInstance, tmp_path: Path) -> None:
    bad = tmp_path / "trusted_root.json"
    bad.write_text('{"mediaType": "nope"}')
    status, _, detail = check(inst.sidecar(inst.bundle(FN, SHA)), bad, [RULE])
    assert status == "unverified" and "not usable" in (detail or "")
    status, _, detail = check(inst.sidecar(inst.bundle(FN, SHA)), tmp_path / "missing.json", [RULE])
    assert status == "unverified" and "missing.json" in (detail or "")


def test_hostile_json_never_raises(inst: SigstoreInstance, root: Path) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    assert check(deep, root, [RULE])[0] == "failed"
    good = inst.bundle(FN, SHA)
    nested = json.loads(json.dumps(good))
    nested["dsseEnvelope"]["payload"] = base64.b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
    assert check(inst.sidecar(nested), root, [RULE])[0] == "failed"
    odd = json.loads(json.dumps(good))
    odd["verificationMaterial"]["tlogEntries"][0]["logIndex"] = {"x": [1] * 10}
    assert check(inst.sidecar(odd), root, [RULE])[0] == "failed"


def test_message_signature_bundles_sign_the_file_digest(inst: SigstoreInstance, root: Path) -> None:
    ok = inst.sidecar(inst.bundle(FN, SHA, message_signature=True))
    status, identity, detail = check(ok, root, [RULE])
    assert status == "verified" and identity, detail
    # the same signature presented for another file's digest fails
    other = verify_sidecar(ok, hashlib.sha256(ok).hexdigest(), FN, "cd" * 32, root, [RULE])
    assert other.status == "failed", other
