"""Admission statements: condavault's signed word that a file was accepted into a channel.

An in-toto statement v1 (``subject``: the file's name and sha256; ``predicateType``
:data:`PREDICATE_TYPE`; ``predicate``: channel, subdir, time of admission, policy and the server key id),
wrapped in a DSSE envelope signed with the server's ed25519 key (:mod:`condavault.signing.keys`).

Statements are made **lazily**, when asked for: everything in them is fixed once the record is committed
(its admission time is the record's ``created_at``) and ed25519 signatures are deterministic, so the same
request always gets the same bytes, and an ingest pays nothing. A record exists only after the ingest
path accepted its bytes (archive checks, scanning and channel policy: a quarantined file has no record),
so a record with bytes is an admitted file. Metadata-only records (a passive mirror's, before the first
download) have no statement yet.

Verifying needs the public key alone: the DSSE pre-authentication encoding
``"DSSEv1" SP len(type) SP type SP len(body) SP body`` signed with ed25519 (docs/signing.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from condavault.signing.keys import PublicKey, SigningKey

__all__ = ["PAYLOAD_TYPE", "PREDICATE_TYPE", "STATEMENT_TYPE", "Admission", "envelope", "pae", "verify_envelope"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://condavault.dev/admission/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
POLICY = "condavault/ingest-v1"  # archive checks + scanning + channel policy, as the ingest path applies them


@dataclass(frozen=True)
class Admission:
    channel: str
    subdir: str
    filename: str
    sha256: str
    admitted_at: float  # unix seconds (the record's created_at)
    policy: str = POLICY

    def statement(self, key_id: str) -> dict[str, Any]:
        when = datetime.fromtimestamp(self.admitted_at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.filename, "digest": {"sha256": self.sha256}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "channel": self.channel,
                "subdir": self.subdir,
                "time": when,
                "policy": self.policy,
                "serverKeyId": key_id,
            },
        }


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature covers."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def envelope(adm: Admission, key: SigningKey) -> bytes:
    """The DSSE envelope (JSON bytes) of ``adm``'s statement signed by ``key``; same input, same bytes."""
    body = json.dumps(adm.statement(key.public.id), sort_keys=True, separators=(",", ":")).encode()
    sig = key.sign(pae(PAYLOAD_TYPE, body))
    env = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode(),
        "signatures": [{"keyid": key.public.id, "sig": base64.b64encode(sig).decode()}],
    }
    return json.dumps(env, indent=2, sort_keys=True).encode() + b"\n"


class AdmissionError(ValueError):
    pass


def verify_envelope(
    data: bytes, key: PublicKey, file_bytes_sha256: str | None = None, filename: str | None = None
) -> dict[str, Any]:
    """The verified statement of an envelope, or :class:`AdmissionError` saying what is wrong: not an
    envelope, no signature by ``key``, a signature that does not verify, or a subject that is not the file."""
    try:
        env = json.loads(data)
        payload = base64.b64decode(env["payload"], validate=True)
        ptype = env["payloadType"]
        sigs = env["signatures"]
        if not isinstance(ptype, str) or not isinstance(sigs, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise AdmissionError("not a DSSE envelope") from None
    if ptype != PAYLOAD_TYPE:
        raise AdmissionError(f"payloadType is {ptype!r}, not {PAYLOAD_TYPE!r}")
    ok = False
    for s in sigs:
        if not isinstance(s, dict) or s.get("keyid") not in (None, "", key.id):
            continue
        try:
            raw = base64.b64decode(str(s.get("sig", "")), validate=True)
        except ValueError:
            continue
        if key.verify(raw, pae(ptype, payload)):
            ok = True
            break
    if not ok:
        raise AdmissionError(f"no valid signature by key {key.id}")
    try:
        statement = json.loads(payload)
    except ValueError:
        raise AdmissionError("the signed payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise AdmissionError("the payload is not an in-toto v1 statement")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise AdmissionError(f"predicateType is not {PREDICATE_TYPE}")
    subjects = statement.get("subject")
    if file_bytes_sha256 is not None:
        match = isinstance(subjects, list) and any(
            isinstance(x, dict)
            and (x.get("digest") or {}).get("sha256") == file_bytes_sha256
            and (filename is None or x.get("name") == filename)
            for x in subjects
        )
        if not match:
            raise AdmissionError("the statement's subject is not this file (name or sha256 differ)")
    return statement


def sha256_file(path: Any) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()
