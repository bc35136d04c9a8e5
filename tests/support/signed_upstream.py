"""A static upstream channel whose repodata carries conda-content-trust ``signatures`` and CEP 50 attestation
sidecars (tests of docs/signing.md), and checks that a condavault channel carries them unchanged."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zstandard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from condavault.signing.trust import canonserialize
from tests.support.server import Server
from tests.support.static_channel import StaticChannel, build_channel

NAMES = {"another_dependent", "dependent", "dependency", "other_dependent"}


def pub_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _sign(key: Ed25519PrivateKey, record: dict[str, Any]) -> dict[str, Any]:
    return {pub_hex(key): {"signature": key.sign(canonserialize(record)).hex()}}


def _sidecar(filename: str, sha256: str) -> bytes:
    """A CEP 50 sidecar: one Sigstore-bundle-shaped attestation naming the file (odd whitespace on purpose:
    the mirror must not re-serialise it)."""
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": filename, "digest": {"sha256": sha256}}],
        "predicateType": "https://schemas.conda.org/attestations-publish-1.schema.json",
        "predicate": {"targetChannel": "https://example.invalid/upstream"},
    }
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"certificate": {"rawBytes": base64.b64encode(b"not a real cert").decode()}},
        "dsseEnvelope": {
            "payload": base64.b64encode(json.dumps(statement).encode()).decode(),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": base64.b64encode(b"\x01" * 64).decode()}],
        },
    }
    return ("[\n   " + json.dumps(bundle, indent=3) + "\n]\n").encode()


@dataclass
class Upstream:
    chan: StaticChannel
    root: Path
    trusted: Ed25519PrivateKey
    repodata: dict[str, Any]
    signed_trusted: set[str] = field(default_factory=set)
    signed_other: set[str] = field(default_factory=set)
    tampered: set[str] = field(default_factory=set)
    sidecars: dict[str, bytes] = field(default_factory=dict)

    @property
    def key_hex(self) -> str:
        return pub_hex(self.trusted)


def signed_upstream(packages_dir: Path, root: Path) -> Iterator[Upstream]:
    """Build the signed channel in ``root`` and serve it (a generator: use from a fixture)."""
    root = build_channel(packages_dir, root, names=NAMES)
    rd = json.loads((root / "noarch" / "repodata.json").read_text())
    records = {**rd["packages"], **rd["packages.conda"]}
    files = sorted(records)
    assert len(files) >= 7
    trusted, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    up = Upstream(None, root, trusted, rd)  # type: ignore[arg-type]
    # sidecars first: attestations_sha256 is part of what the content-trust signature covers
    for fn in (files[0], files[5]):
        data = _sidecar(fn, records[fn]["sha256"])
        sha = hashlib.sha256(data).hexdigest()
        records[fn]["attestations_sha256"] = sha
        (root / "noarch" / f"{fn}.sigs").write_bytes(data)
        (root / "noarch" / f"{fn}.sigs.{sha}").write_bytes(data)
        up.sidecars[fn] = data
    sigs: dict[str, Any] = {}
    for fn in files[:3]:
        sigs[fn] = _sign(trusted, records[fn])
        up.signed_trusted.add(fn)
    sigs[files[3]] = _sign(other, records[files[3]])
    up.signed_other.add(files[3])
    forged = dict(records[files[4]], depends=["evil"])  # a trusted key's signature over other metadata
    sigs[files[4]] = _sign(trusted, forged)
    up.tampered.add(files[4])
    rd["signatures"] = sigs
    (root / "noarch" / "repodata.json").write_text(json.dumps(rd, indent=1, sort_keys=True))
    with StaticChannel(root) as chan:
        up.chan = chan
        yield up


def served(server: Server, channel: str) -> dict[str, Any]:
    with server.client(None) as c:
        r = c.get(f"/api/repo/{channel}/noarch/repodata.json")
        assert r.status_code == 200, r.text
        return dict(r.json())


def shard_records(server: Server, channel: str, name: str) -> dict[str, Any]:
    with server.client(None) as c:
        r = c.get(f"/api/repo/{channel}/noarch/repodata_shards.msgpack.zst")
        assert r.status_code == 200
        index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(r.content), raw=False)
        digest = index["shards"][name].hex()
        s = c.get(f"/api/repo/{channel}/noarch/shards/{digest}.msgpack.zst")
        assert s.status_code == 200
        shard = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(s.content), raw=False)
        return {**shard["packages"], **shard["packages.conda"]}


def check_carried(server: Server, channel: str, up: Upstream, kept: set[str]) -> None:
    doc = served(server, channel)
    upstream_sigs = up.repodata["signatures"]
    # the signatures section: the same entries, every key id and signature byte for byte
    want = {fn: upstream_sigs[fn] for fn in kept if fn in upstream_sigs}
    assert doc.get("signatures", {}) == want
    raw = json.dumps(doc["signatures"]) if want else ""
    for entry in want.values():
        for keyid, sig in entry.items():
            assert keyid in raw and sig["signature"] in raw
    records = {**doc["packages"], **doc["packages.conda"]}
    assert set(records) == kept
    upstream_records = {**up.repodata["packages"], **up.repodata["packages.conda"]}
    with server.client(None) as c:
        for fn in kept:
            att = upstream_records[fn].get("attestations_sha256")
            assert records[fn].get("attestations_sha256") == att
            if att is None:
                assert c.get(f"/api/repo/{channel}/noarch/{fn}.sigs").status_code == 404
                continue
            # both sidecar URLs: the upstream bytes, unchanged
            for url in (f"{fn}.sigs", f"{fn}.sigs.{att}"):
                r = c.get(f"/api/repo/{channel}/noarch/{url}")
                assert r.status_code == 200, (url, r.text)
                assert r.content == up.sidecars[fn]
            immutable = c.get(f"/api/repo/{channel}/noarch/{fn}.sigs.{att}").headers["cache-control"]
            assert "immutable" in immutable
            assert "no-cache" in c.get(f"/api/repo/{channel}/noarch/{fn}.sigs").headers["cache-control"]
            assert c.get(f"/api/repo/{channel}/noarch/{fn}.sigs.{'0' * 64}").status_code == 404
            name = upstream_records[fn]["name"]
            assert shard_records(server, channel, name)[fn]["attestations_sha256"] == att


def trust(server: Server, channel: str, fn: str) -> dict[str, Any]:
    with server.client() as c:
        r = c.get(f"/api/channels/{channel}/files/noarch/{fn}/signature")
        assert r.status_code == 200, r.text
        return dict(r.json())
