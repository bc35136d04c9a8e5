"""Offline checks of carried signatures (conda-content-trust, CEP 50 sidecars) and of admission statements."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from condavault.signing.admission import Admission, AdmissionError, envelope, pae, verify_envelope
from condavault.signing.keys import SigningKey
from condavault.signing.trust import (
    Outcome,
    canonserialize,
    check_sidecar,
    combine,
    normalise_key,
    verify_content_trust,
)

RECORD = {
    "name": "pkg",
    "version": "1.0",
    "build": "0",
    "depends": ["python >=3.9"],
    "sha256": "ab" * 32,
    "size": 10,
    "subdir": "noarch",
    "timestamp": 1700000000000,
}


def _hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def test_content_trust_outcomes() -> None:
    k, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sig = {_hex(k): {"signature": k.sign(canonserialize(RECORD)).hex()}}
    assert canonserialize({"b": 1, "a": "é"}) == b'{\n  "a": "\\u00e9",\n  "b": 1\n}'
    ok = verify_content_trust(RECORD, sig, {_hex(k)})
    assert ok.status == "verified" and ok.identity == f"ed25519:{_hex(k)}"
    assert verify_content_trust(RECORD, sig, {_hex(other)}).status == "unverified"
    assert verify_content_trust(RECORD, sig, set()).status == "unverified"
    altered = dict(RECORD, depends=["evil"])
    assert verify_content_trust(altered, sig, {_hex(k)}).status == "failed"
    bad_hex = {_hex(k): {"signature": "zz"}}
    assert verify_content_trust(RECORD, bad_hex, {_hex(k)}).status == "failed"
    for malformed in ({}, {"k": "v"}, {"k": {"sig": "x"}}, [1], "x"):
        assert verify_content_trust(RECORD, malformed, {_hex(k)}).status == "failed"  # type: ignore[arg-type]
    # a signer among many: the trusted one decides
    both = {**sig, _hex(other): {"signature": other.sign(b"something else").hex()}}
    assert verify_content_trust(RECORD, both, {_hex(k)}).status == "verified"


def test_normalise_key() -> None:
    h = "AB" * 32
    assert normalise_key(f" ed25519:{h} ") == h.lower()
    for bad in ("", "ed25519:", "ab" * 31, "xy" * 32):
        with pytest.raises(ValueError):
            normalise_key(bad)


def _sidecar(name: str, sha: str) -> bytes:
    st = {"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": name, "digest": {"sha256": sha}}]}
    env = {"payload": base64.b64encode(json.dumps(st).encode()).decode(), "payloadType": "application/vnd.in-toto+json"}
    return json.dumps([{"dsseEnvelope": env}]).encode()


def test_sidecar_checks() -> None:
    data = _sidecar("pkg-1.0-0.conda", "ab" * 32)
    sha = hashlib.sha256(data).hexdigest()
    out = check_sidecar(data, sha, "pkg-1.0-0.conda", "ab" * 32)
    assert out.status == "unverified" and out.method == "sigstore"
    assert check_sidecar(data, "00" * 32, "pkg-1.0-0.conda", "ab" * 32).status == "failed"
    assert check_sidecar(data, sha, "other-1.0-0.conda", "ab" * 32).status == "failed"  # subject binding
    assert check_sidecar(data, sha, "pkg-1.0-0.conda", "cd" * 32).status == "failed"
    for junk in (b"{}", b"[]", b"not json", b"[1]"):
        assert check_sidecar(junk, hashlib.sha256(junk).hexdigest(), "x", None).status == "failed"
    big = b"[" + b" " * (5 * 1024 * 1024) + b"]"
    assert check_sidecar(big, hashlib.sha256(big).hexdigest(), "x", None).status == "failed"


def test_combine() -> None:
    v, u, f = Outcome("verified"), Outcome("unverified"), Outcome("failed")
    assert combine().status == "none"
    assert combine(u, v).status == "verified" and combine(v, f).status == "failed"
    assert combine(Outcome("none"), u).status == "unverified"


def test_admission_envelope_round_trip_and_tampering() -> None:
    key = SigningKey(Ed25519PrivateKey.generate())
    adm = Admission("main", "noarch", "pkg-1.0-0.conda", "ab" * 32, 1700000000.25)
    env = envelope(adm, key)
    assert env == envelope(adm, key)  # deterministic: the same request gets the same bytes
    st = verify_envelope(env, key.public, "ab" * 32, "pkg-1.0-0.conda")
    assert st["predicate"]["time"] == "2023-11-14T22:13:20.250000Z"
    assert st["predicate"]["serverKeyId"] == key.public.id
    doc = json.loads(env)
    body = base64.b64decode(doc["payload"])
    assert key.public.verify(base64.b64decode(doc["signatures"][0]["sig"]), pae(doc["payloadType"], body))
    with pytest.raises(AdmissionError, match="not this file"):
        verify_envelope(env, key.public, "cd" * 32)
    with pytest.raises(AdmissionError, match="not this file"):
        verify_envelope(env, key.public, "ab" * 32, "other-1.0-0.conda")
    with pytest.raises(AdmissionError, match="no valid signature"):
        verify_envelope(env, SigningKey(Ed25519PrivateKey.generate()).public)
    flipped = dict(doc, payload=base64.b64encode(body.replace(b"main", b"mainx")).decode())
    with pytest.raises(AdmissionError, match="no valid signature"):
        verify_envelope(json.dumps(flipped).encode(), key.public)
    for junk in (b"", b"[]", b'{"payload": "!!"}', json.dumps(dict(doc, payloadType="x")).encode()):
        with pytest.raises(AdmissionError):
            verify_envelope(junk, key.public)
