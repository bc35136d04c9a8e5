"""Verifying carried signatures offline: conda-content-trust repodata signatures and CEP 50 sidecars.

**conda-content-trust** (what Anaconda's channels publish): a repodata ``signatures`` section maps each
filename to ``{"<keyid>": {"signature": "<hex>"}}``; the key id is the signer's raw ed25519 public key in
hex, the signature is over the record's *canonical serialisation* (``json.dumps(record, indent=2,
sort_keys=True)`` in UTF-8) exactly as the upstream lists the record. A signature is ``verified`` when a key
the mirror trusts (``signature_keys``) made it, ``failed`` when a trusted key's signature does not match,
else ``unverified``.

**CEP 50 sidecars**: a JSON array of Sigstore bundles whose sha256 is the record's ``attestations_sha256``.
The bytes are checked against that hash and kept unchanged; each bundle's in-toto statement must name
the file (CEP 27 subject binding: filename and sha256). :func:`check_sidecar` checks that shape only (its
best outcome is ``unverified``); the Sigstore verification itself, against a trust root and the mirror's
identity rules, is :func:`condavault.signing.sigstore.verify_sidecar`, which starts with this check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "MAX_SIDECAR",
    "Outcome",
    "canonserialize",
    "check_sidecar",
    "combine",
    "normalise_key",
    "verify_content_trust",
]

MAX_SIDECAR = 4 * 1024 * 1024  # bytes: a sidecar larger than this is refused (CEP 50 asks for a bound)
MAX_SIGNATURES = 32  # signers per file considered
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")


@dataclass(frozen=True)
class Outcome:
    status: str  # verified | unverified | failed | none
    method: str | None = None  # content-trust | sigstore
    identity: str | None = None
    detail: str | None = None


NONE = Outcome("none")


def canonserialize(obj: Any) -> bytes:
    """conda-content-trust's serialisation of what it signs."""
    return json.dumps(obj, indent=2, sort_keys=True).encode("utf-8")


def normalise_key(text: str) -> str:
    """A trusted conda-content-trust key as its key id: 64 lowercase hex digits (``ed25519:`` prefix allowed)."""
    value = text.strip().lower().removeprefix("ed25519:")
    if not _HEX64.match(value):
        raise ValueError(f"a signing key is 64 hex digits (a raw ed25519 public key), not {text[:40]!r}")
    return value


@lru_cache(maxsize=256)
def _public(kid: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(kid))


def is_signatures_entry(value: Any) -> bool:
    """Whether ``value`` has the shape of one file's ``signatures`` entry."""
    return (
        isinstance(value, dict)
        and 0 < len(value) <= MAX_SIGNATURES
        and all(
            isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("signature"), str) for k, v in value.items()
        )
    )


def verify_content_trust(record: Mapping[str, Any], signatures: Mapping[str, Any], trusted: Iterable[str]) -> Outcome:
    """The outcome of one file's conda-content-trust signatures over its upstream ``record``."""
    if not is_signatures_entry(signatures):
        return Outcome("failed", "content-trust", None, "malformed signatures entry")
    keys = set(trusted)
    data = canonserialize(dict(record))
    failed: list[str] = []
    for keyid, entry in sorted(signatures.items()):
        kid = keyid.lower()
        if kid not in keys:
            continue
        sig = str(entry["signature"]).lower()
        if not _HEX128.match(sig):
            failed.append(kid)
            continue
        try:
            _public(kid).verify(bytes.fromhex(sig), data)
        except (InvalidSignature, ValueError):
            failed.append(kid)
            continue
        return Outcome("verified", "content-trust", f"ed25519:{kid}", None)
    if failed:
        return Outcome("failed", "content-trust", f"ed25519:{failed[0]}", "signature does not match the record")
    return Outcome("unverified", "content-trust", None, "signed by no trusted key")


def check_sidecar(data: bytes, expected_sha256: str, filename: str, file_sha256: str | None) -> Outcome:
    """A CEP 50 sidecar checked offline: its hash, its shape (a JSON array of bundles) and that every in-toto
    statement inside names this file. ``failed`` on any mismatch; else ``unverified`` (no Sigstore check)."""
    if len(data) > MAX_SIDECAR:
        return Outcome("failed", "sigstore", None, f"sidecar larger than {MAX_SIDECAR} bytes")
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        return Outcome("failed", "sigstore", None, "sidecar bytes do not hash to attestations_sha256")
    try:
        bundles = json.loads(data)
    except (ValueError, RecursionError):
        return Outcome("failed", "sigstore", None, "sidecar is not JSON")
    if not isinstance(bundles, list) or not bundles or not all(isinstance(b, dict) for b in bundles):
        return Outcome("failed", "sigstore", None, "sidecar is not a JSON array of Sigstore bundles")
    for b in bundles:
        env = b.get("dsseEnvelope")
        if not isinstance(env, dict) or not isinstance(env.get("payload"), str):
            continue  # a message-signature bundle: nothing to bind here
        try:
            statement = json.loads(base64.b64decode(env["payload"], validate=True))
        except (ValueError, RecursionError):
            return Outcome("failed", "sigstore", None, "a bundle's DSSE payload is not base64 JSON")
        subjects = statement.get("subject") if isinstance(statement, dict) else None
        ok = isinstance(subjects, list) and any(
            isinstance(s, dict)
            and s.get("name") == filename
            and (file_sha256 is None or (s.get("digest") or {}).get("sha256") == file_sha256)
            for s in subjects
        )
        if not ok:
            return Outcome("failed", "sigstore", None, "an attestation's subject is not this file")
    return Outcome("unverified", "sigstore", None, "Sigstore bundles carried; not verified against a trust root")


def combine(*outcomes: Outcome) -> Outcome:
    """One record's outcome from its signature and sidecar outcomes: any ``failed`` wins, then ``verified``."""
    present = [o for o in outcomes if o.status != "none"]
    for status in ("failed", "verified", "unverified"):
        for o in present:
            if o.status == status:
                return o
    return NONE
