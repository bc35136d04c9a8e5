"""The signing domain's answers for the web layer: admission statements and a record's trust summary."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condavault.signing.admission import Admission, envelope
from condavault.signing.keys import SigningKey, key_path, load_or_create

if TYPE_CHECKING:
    from condavault.config import Settings
    from condavault.context import Context
    from condavault.signing.models import RecordTrust

__all__ = ["admission_bytes", "server_key", "trust_summary"]

_keys: dict[Path, SigningKey] = {}
_lock = threading.Lock()


def server_key(settings: Settings) -> SigningKey:
    """The server's signing key, read once per process."""
    path = key_path(settings)
    key = _keys.get(path)
    if key is None:
        with _lock:
            key = _keys.get(path)
            if key is None:
                key = _keys[path] = load_or_create(settings)
    return key


def admission_bytes(ctx: Context, channel: str, subdir: str, filename: str, sha256: str, admitted_at: float) -> bytes:
    """The DSSE envelope of the admission statement of one file (deterministic: see admission.py)."""
    return envelope(Admission(channel, subdir, filename, sha256, admitted_at), server_key(ctx.settings))


def trust_summary(row: RecordTrust | None) -> dict[str, Any]:
    """What the API and the SBOM show of a record's signatures."""
    if row is None:
        return {"status": "none", "signed": False, "attestations_sha256": None}
    return {
        "status": row.status,
        "method": row.method,
        "identity": row.identity,
        "detail": row.detail,
        "checked_at": row.checked_at.isoformat() if row.checked_at else None,
        "signed": row.signatures is not None,
        "signers": sorted(json.loads(row.signatures)) if row.signatures else [],
        "attestations_sha256": row.sidecar_sha256,
    }


def sbom_properties(session: Any, record_id: int) -> list[dict[str, str]]:
    """CycloneDX properties of a record's signature outcome (``condavault:signature:*``)."""
    from condavault.signing.models import RecordTrust

    t = trust_summary(session.get(RecordTrust, record_id))
    props = [{"name": "condavault:signature:status", "value": t["status"]}]
    for key in ("method", "identity", "checked_at", "attestations_sha256"):
        if t.get(key):
            props.append({"name": f"condavault:signature:{key}", "value": str(t[key])})
    return props


def trust_summaries(ctx: Context, record_ids: list[int]) -> dict[int, dict[str, Any]]:
    """:func:`trust_summary` of each record (``none`` for records without a trust row)."""
    from condavault.signing.carry import trust_of

    with ctx.db.session() as s:
        rows = trust_of(s, record_ids)
        return {rid: trust_summary(rows.get(rid)) for rid in record_ids}
